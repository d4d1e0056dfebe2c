"""Group commit: every job's state events (and its images, when they fit in memory) go to one
writer, which handles all the work waiting at that moment in one hop to the store's thread:
the images verified and put; one ``make_durable`` of the output (for the images the group's
records list), one state transaction, one manifest append. Each caller resumes only once its
own work is durable, so the write-ahead order holds per job (dispatched before the request is
sent, the answer before any fetch, the record before the manifest line) while a thousand jobs
share a handful of syncs.

With a state shared by several workers (:class:`~batchgen.store.state.SharedState`), the
manifest is a projection of the state's records instead: after each group (and every second
when idle), the holder of the manifest lock appends every record committed past the manifest's
end, whoever committed it, in commit order; at the end each worker waits its turn to append
what is left.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from batchgen.api.answers import Answer
from batchgen.errors import StorageError
from batchgen.store.events import Answered, Event, Finished, Imported
from batchgen.store.manifest import ImageRecord, ManifestRecord
from batchgen.store.output import OutputBackend, Spill
from batchgen.store.state import SharedState, StateBackend

__all__ = ["GroupWriter", "ImageWrite", "SaveImages", "StagedImage"]

log = logging.getLogger(__name__)
T = TypeVar("T")

PROJECT_EVERY = 1.0  # seconds: an idle holder of the manifest lock appends others' records this often
LAST_TURN = 60.0  # seconds a worker at its end waits for the manifest lock


@dataclass(frozen=True, slots=True)
class StagedImage:
    """An image's bytes before they are judged: in memory (``parts``), and past the store's
    memory bound in a scratch file (``spilled``) too."""

    parts: list[bytes]
    spilled: Spill | None = None


@dataclass(frozen=True, slots=True)
class ImageWrite:
    """One of a job's images, to be verified and put as ``images/<stem>.<ext>``."""

    stem: str
    image: StagedImage


@dataclass(frozen=True, slots=True)
class SaveImages:
    """A job's images and the record that lists them (built from the saved images, in order),
    and its answer when that is not recorded yet."""

    job_id: str
    images: list[ImageWrite]
    record: Callable[[list[ImageRecord]], ManifestRecord]
    answer: Answer | None


_Work = Event | SaveImages


@dataclass(slots=True)
class _Waiting:
    work: _Work
    done: asyncio.Future[object]


class GroupWriter:
    """Commits the work of many jobs in groups, on ``thread`` (the state's one thread).

    :meth:`start` it, :meth:`submit` from any job task, :meth:`drain` at the end.
    """

    def __init__(
        self,
        state: StateBackend,
        output: OutputBackend,
        thread: ThreadPoolExecutor,
        *,
        max_pixels: int,
        shared: SharedState | None = None,
    ) -> None:
        self._state = state
        self._shared = shared  # (the same state, when workers share it)
        self._projected = 0  # the last record appended to the manifest (shared: while holding its lock)
        self._last_projection = 0.0  # (monotonic seconds)
        self._output = output
        self._thread = thread
        self._max_pixels = max_pixels
        # Puts of one group go out together where the output gains by it (an object store
        # answers each in tens of ms; a local folder's rename is quicker than a thread hop)
        self._puts = ThreadPoolExecutor(
            max_workers=max(1, output.puts_at_once), thread_name_prefix="batchgen-put"
        )
        self._waiting: list[_Waiting] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start committing. A plain task, not a TaskGroup: an error of the caller's must reach
        the caller as itself, not wrapped in an ExceptionGroup."""
        self._task = asyncio.create_task(self._write_groups())

    async def drain(self) -> None:
        """Commit what is waiting, then stop (survives the caller's cancellation); with a
        shared state, append the manifest's last records in turn."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await asyncio.shield(self._task)
        self._puts.shutdown(wait=True)
        if self._shared is not None:
            await asyncio.shield(self.on_thread(self._last_turn))

    async def on_thread(self, work: Callable[[], T]) -> T:
        """Run ``work`` on the store's thread (reads of the state)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, work)

    async def submit(self, work: _Work) -> object:
        """Wait until ``work`` is durable; raise what failed it alone (a
        :class:`~batchgen.store.events.TransitionError`, an invalid image, a
        :class:`StorageError`)."""
        waiting = _Waiting(work, asyncio.get_running_loop().create_future())
        self._waiting.append(waiting)
        self._wake.set()
        return await waiting.done

    async def _woken(self) -> bool:
        """Wait for work; False when a shared state's idle second passed first (the manifest
        was brought up to date meanwhile)."""
        if self._shared is None:
            await self._wake.wait()
            return True
        try:
            await asyncio.wait_for(self._wake.wait(), PROJECT_EVERY)
        except TimeoutError:
            await self._project_safely()
            return False
        return True

    async def _write_groups(self) -> None:
        while True:
            if not await self._woken():
                continue
            self._wake.clear()
            group, self._waiting = self._waiting, []
            if not group:
                if self._closing:
                    return
                continue
            try:
                outcomes = await self.on_thread(functools.partial(self._apply, [w.work for w in group]))
            except Exception as exc:
                outcomes = [exc] * len(group)
            for waiting, outcome in zip(group, outcomes, strict=True):
                if waiting.done.done():
                    continue  # its job was cancelled; the change stands all the same
                if isinstance(outcome, BaseException):
                    waiting.done.set_exception(outcome)
                else:
                    waiting.done.set_result(outcome)
            if self._waiting:
                self._wake.set()
            elif self._shared is not None and time.monotonic() - self._last_projection >= PROJECT_EVERY:
                await self._project_safely()

    def _apply(self, group: list[_Work]) -> list[object]:
        """One group, on the store's thread: images; output durable; one commit; one append.
        Returns, per item, None or the exception that failed that item alone."""
        outcomes: list[object] = [None] * len(group)
        events: list[tuple[int, Event]] = []
        saves = [work for work in group if isinstance(work, SaveImages)]
        together = len(saves) > 1 and self._output.puts_at_once > 1
        puts = iter(self._puts.map(self._put_all, saves) if together else map(self._put_all, saves))
        for i, work in enumerate(group):
            if isinstance(work, SaveImages):
                event = self._saved(work, next(puts), outcomes, i)
                if event is not None:
                    events.append((i, event))
            else:
                events.append((i, work))
        if events:
            self._commit(events, outcomes)
        return outcomes

    def _put_all(self, work: SaveImages) -> list[ImageRecord] | Exception:
        """Put a job's images (on a put thread): their records, or what failed them."""
        try:
            return [
                self._output.put_image(w.stem, w.image.parts, w.image.spilled, max_pixels=self._max_pixels)
                for w in work.images
            ]
        except Exception as exc:  # InvalidImage or StorageError: that job's alone
            for w in work.images:
                if w.image.spilled is not None:
                    w.image.spilled.discard()
            return exc

    def _saved(
        self, work: SaveImages, saved: list[ImageRecord] | Exception, outcomes: list[object], i: int
    ) -> Event | None:
        """The event that records a job's success (and its answer, if new). A bad image is
        that job's outcome; a new answer is recorded all the same."""
        if isinstance(saved, Exception):
            outcomes[i] = saved
            return Answered(work.job_id, work.answer) if work.answer else None
        record = work.record(saved)
        return Finished(record, record.model_dump_json() + "\n", answer=work.answer)

    def _commit(self, events: list[tuple[int, Event]], outcomes: list[object]) -> None:
        """The group's events: images durable, one transaction, one manifest append."""
        if any(isinstance(e, Finished) and e.record.images for _, e in events):
            self._output.make_durable()  # the records' images are durable before the records
        results = self._state.apply([e for _, e in events])
        appended: list[tuple[int, str]] = []
        for (i, event), result in zip(events, results, strict=True):
            if outcomes[i] is None or result is not None:
                outcomes[i] = result
            if isinstance(event, Finished) and result is None:
                appended.append((i, event.record_json))
        if appended and self._shared is None:
            try:
                self._output.manifest_append([line for _, line in appended])
            except StorageError as exc:
                for i, _ in appended:
                    outcomes[i] = exc

    # -- the manifest of a shared state ------------------------------------------------------------

    async def _project_safely(self) -> None:
        """Append what others committed, if this worker holds the manifest lock; a failure is
        the next turn's (the records are in the state)."""
        try:
            await self.on_thread(self._project)
        except StorageError as exc:
            log.warning("the manifest is not brought up to date now (the next turn does): %s", exc.message)

    def _project(self, *, wait: float = 0.0) -> None:
        """On the store's thread: as the holder of the manifest lock, append every record past
        the manifest's end; a worker that just took the lock repairs the manifest first."""
        assert self._shared is not None
        self._last_projection = time.monotonic()
        taken = self._shared.take_manifest(wait=wait)
        if taken is None:
            return
        if taken:
            self._projected = self._shared.record_seq_at(self.sync_manifest() - 1)
        while True:
            lines, projected = self._shared.records_after(self._projected)
            if not lines or not self._shared.holds_manifest():  # (a reconnect lost the lock meanwhile)
                return
            self._output.manifest_append(lines)
            # An object store's part is put while the lock is held: lines held back past it
            # would reach the next holder's parts too.
            self._output.flush_manifest()
            self._projected = projected

    def _last_turn(self) -> None:
        """At the end: wait for the manifest lock, append what is left, put it, let go."""
        assert self._shared is not None
        try:
            self._project(wait=LAST_TURN)
            self._output.flush_manifest()
        except StorageError as exc:
            log.warning("the manifest's last records are left for the next worker or run: %s", exc.message)
        finally:
            self._shared.release_manifest()

    def catch_up(self) -> None:
        """On the store's thread, before the run: bring the manifest in line with the state
        (:meth:`sync_manifest`); with a shared state, only when no other worker appends it."""
        if self._shared is None:
            self.sync_manifest()
        else:
            self._project()

    def sync_manifest(self) -> int:
        """On the store's thread, before the run: cut a torn tail off the manifest, re-append
        what the state holds past it; rebuild a lost state from the manifest. Returns how many
        lines the manifest holds then."""
        known = self._state.count_records()
        lines, extra = self._output.manifest_repair(known)
        if extra:  # the state was lost or replaced: rebuild it from the manifest
            self._state.apply(
                [
                    Imported(
                        record,
                        record.model_dump_json() + "\n",
                        final=record.error is not None and not record.error.retryable,
                    )
                    for record in extra
                ]
            )
        if (
            0 < lines < known
            and not extra
            and self._output.manifest_last_line() != next(self._state.record_lines(lines - 1)).encode()
        ):
            # Not a tail lost by a crash: a line is missing from the middle (edited by hand).
            self._output.manifest_rewrite(self._state.record_lines(0))
            log.warning("manifest.jsonl rebuilt from the state database: lines were missing from it")
            return self._state.count_records()
        missing: list[str] = []
        appended = 0
        for line in self._state.record_lines(lines):
            missing.append(line)
            appended += 1
            if len(missing) >= 1000:  # noqa: PLR2004 - bounded memory on a large repair
                self._output.manifest_append(missing)
                missing = []
        if missing:
            self._output.manifest_append(missing)
        if extra or appended:
            log.info("manifest repaired: %d record(s) re-appended, %d imported", appended, len(extra))
        return lines + appended
