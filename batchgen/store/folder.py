"""The output folder: where every result lands, durably, and where a resume starts from.

Layout of ``DIR``::

    manifest.jsonl            one record per finished job attempt (store.manifest)
    images/<name>.<ext>       the images, named from the job id (store.files.safe_name)
    .batchgen/state.sqlite3   write-ahead job state (store.database)
    .batchgen/lock            held by the live run (flock)

Group commit: every job's state transitions (and its images, when they fit in memory) go to one
writer, which handles all the work waiting at that moment in one hop to the store's thread:
the images written, fsync'd, verified and renamed; one sync of the images folder (for the
images the group's records list), one SQLite transaction, one manifest write and fsync. Each
caller resumes only once its own work is durable, so the write-ahead order holds per job
(dispatched before the request is sent, the answer before any fetch, the record before the
manifest line) while a thousand jobs share a handful of syncs.

Example::

    async with OutputFolder.open(Path("out")) as folder:
        rows = await folder.rows(["trex"])
        await folder.dispatched("trex", "reve/create-image", "bg.trex.1a2b.a1", utc_now())
        ...                                         # the request
        await folder.answered("trex", answer)
        staged = await folder.stage(chunks)         # a download, held or spilled
        await folder.finish_with_images("trex", [staged], build_record)
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TypeVar

from batchgen.errors import StorageError
from batchgen.images import DEFAULT_MAX_PIXELS, inspect_image
from batchgen.money import Spend
from batchgen.responses import Answer
from batchgen.store.database import Change, JobRow, StateCounts, StateDatabase
from batchgen.store.files import (
    SYNCFS,
    DirectoryLock,
    TempFile,
    WrittenFile,
    ensure_real_dir,
    fsync_dir,
    make_output_dir,
    remove_temporaries,
    replace,
    safe_name,
    sync_filesystem,
)
from batchgen.store.manifest import ImageRecord, ManifestFile, ManifestRecord, utc_now

__all__ = ["SPILL_BYTES", "OutputFolder", "StagedImage"]

log = logging.getLogger(__name__)
T = TypeVar("T")

SPILL_BYTES = 1024 * 1024
"""A download is held in memory up to this many bytes, then streamed to its temporary file."""


@dataclass(frozen=True, slots=True)
class StagedImage:
    """An image's bytes before they are judged: in memory (``parts``), and past
    :data:`SPILL_BYTES` in a temporary file (``spilled``) too."""

    parts: list[bytes]
    spilled: TempFile | None = None


@dataclass(frozen=True, slots=True)
class _ImageWrite:
    """One of a job's images, to be verified, written and renamed by the group writer."""

    stem: str
    image: StagedImage


@dataclass(frozen=True, slots=True)
class _Finish:
    """A job's images and its succeeded record, and its answer when that is not recorded yet."""

    job_id: str
    images: list[_ImageWrite]
    record: Callable[[list[ImageRecord]], ManifestRecord]
    answer: Answer | None


_Work = Change | _Finish


@dataclass(slots=True)
class _Waiting:
    work: _Work
    done: asyncio.Future[object]


class OutputFolder:
    """The open output folder of one run: state database, manifest and images, behind one API.

    Open it with :meth:`open`, which takes the folder's lock and repairs what a crash left.
    Every method raises :class:`~batchgen.errors.StorageError` when the folder cannot be
    written or read.
    """

    def __init__(
        self,
        root: Path,
        db: StateDatabase,
        manifest: ManifestFile,
        thread: ThreadPoolExecutor,
        max_pixels: int,
        *,
        source: str = "",
    ) -> None:
        self.root = root
        self.source = source  # the job file being run (its resolved path), "" when none
        self.images = root / "images"
        self._db = db
        self._manifest = manifest
        self._thread = thread  # the database's one thread: sqlite3 objects stay on it
        self._max_pixels = max_pixels
        self._waiting: list[_Waiting] = []
        self._wake = asyncio.Event()
        self._closing = False

    @classmethod
    @asynccontextmanager
    async def open(
        cls, root: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS, source: str = "", parents: bool = False
    ) -> AsyncIterator[OutputFolder]:
        """Open ``root`` for a run of the job file ``source`` (its resolved path).

        Creates the folder (``parents``: and its missing parents) and its layout, takes the lock
        (raises :class:`~batchgen.errors.OutputLockedError` when a live run holds it), removes
        temporary files a crash left, brings ``manifest.jsonl`` back in line with the database,
        and numbers the run. Raises :class:`~batchgen.errors.OutputFolderError` for a folder
        that can never be written as named.
        """
        loop = asyncio.get_running_loop()
        make_output_dir(root, parents=parents)
        private = ensure_real_dir(root / ".batchgen", root)
        folder_lock = DirectoryLock(private / "lock")
        folder_lock.acquire()
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batchgen-store")
        try:
            db = await loop.run_in_executor(thread, StateDatabase.open, private / "state.sqlite3")
            try:
                folder = cls(
                    root, db, ManifestFile(root / "manifest.jsonl"), thread, max_pixels, source=source
                )
                ensure_real_dir(folder.images, root)
                await asyncio.to_thread(remove_temporaries, folder.images)
                await folder._on_thread(folder._sync_manifest)
                # A plain task, not a TaskGroup: an error of the caller's must reach the caller
                # as itself, not wrapped in an ExceptionGroup.
                writer = asyncio.create_task(folder._write_groups())
                try:
                    yield folder
                finally:
                    folder._closing = True
                    folder._wake.set()
                    await asyncio.shield(writer)  # drains what is waiting, then returns
            finally:
                await loop.run_in_executor(thread, db.close)
        finally:
            thread.shutdown(wait=True)  # never leave the database thread running
            folder_lock.release()

    # -- reads ---------------------------------------------------------------------------------

    async def rows(self, job_ids: Iterable[str]) -> dict[str, JobRow]:
        """The durable state of those of ``job_ids`` the folder has seen, by id (one thread hop)."""
        ids = list(job_ids)
        return await self._on_thread(lambda: self._db.rows(ids, source=self.source))

    async def missing_images(self, rows: list[JobRow]) -> dict[str, tuple[ManifestRecord, list[int]]]:
        """Among succeeded ``rows``, those whose recorded images are gone or of another size:
        job id -> (its record, the indexes of those images). A stat per image, no reading."""
        return await asyncio.to_thread(_missing_images, self.root, rows)

    async def in_flight(self) -> list[tuple[str, list[str]]]:
        """Jobs an earlier run left sent with no recorded answer: (job id, X-Client-Request-Ids)."""
        return await self._on_thread(self._db.in_flight)

    async def counts(self) -> StateCounts:
        """Jobs per outcome over the folder, and tokens used."""
        return await self._on_thread(self._db.counts)

    async def spent(self, *, day: str | None = None) -> Spend:
        """What answers were charged: in all, or on ``day`` (UTC, ``YYYY-MM-DD``); exact (see
        :mod:`batchgen.money`)."""
        by_model = await self._on_thread(lambda: self._db.spent_by_model(day=day))
        return sum(by_model.values(), Spend())

    async def request_costs(self) -> dict[str, list[Spend]]:
        """What one request of each model cost, job by job (see :meth:`StateDatabase.request_costs`)."""
        return await self._on_thread(self._db.request_costs)

    async def get_meta(self, key: str) -> str | None:
        """A run-level value stored with :meth:`set_meta`, or None."""
        return await self._on_thread(lambda: self._db.get_meta(key))

    # -- writes (group-committed) --------------------------------------------------------------

    async def set_meta(self, key: str, value: str) -> None:
        """Store a run-level value (``total_jobs``, ``job_file``, ``not_before``...)."""
        await self._commit(Change("meta", key=key, value=value))

    async def dispatched(
        self, job_id: str, model: str, client_request_id: str, now: str, *, fingerprint: str = ""
    ) -> None:
        """Record, before sending, that attempt ``client_request_id`` of the job goes out, with
        the ``fingerprint`` of the request (:attr:`batchgen.jobfile.Job.fingerprint`)."""
        await self._commit(
            Change(
                "dispatch", job_id, model, client_request_id, now, fingerprint=fingerprint, source=self.source
            )
        )

    async def asked(self, fingerprints: list[tuple[str, str]]) -> None:
        """Record (job id, fingerprint) as what the job file being run asks of those jobs, for
        jobs judged unchanged (a dispatch records its own)."""
        await self._commit(Change("asked", pairs=tuple(fingerprints), source=self.source))

    async def adopt_fingerprints(self, fingerprints: list[tuple[str, str]]) -> None:
        """Give (job id, fingerprint) to finished jobs of a folder older than schema 2, which
        did not keep what request they answered (their jobs were judged unchanged)."""
        await self._commit(Change("adopt", pairs=tuple(fingerprints)))

    async def listing(self, step: str, job_ids: list[str] | None = None) -> None:
        """A pass over the job file, for telling which jobs it no longer holds: ``begin``, then
        ``ids`` with ``job_ids`` as they are judged, then ``done`` once every job was (the
        folder's counts are then that file's)."""
        await self._commit(Change("listing", key=step, ids=tuple(job_ids or ()), source=self.source))

    async def unanswered(self, job_id: str, *, charged: Spend | None = None) -> None:
        """The request failed without a usable generation (error status, no connection, a body
        that cannot be read): back to pending. ``charged``: what its cost headers said it cost
        all the same (recorded as a charge of this run)."""
        await self._commit(Change("unanswered", job_id, cost=charged))

    async def answered(self, job_id: str, answer: Answer) -> None:
        """Make the API's answer durable before anything is done with it."""
        await self._commit(Change("answered", job_id, answer=answer))

    async def finish_with_images(
        self,
        job_id: str,
        images: list[bytes | StagedImage],
        record: Callable[[list[ImageRecord]], ManifestRecord],
        *,
        answer: Answer | None = None,
        generation: int = 0,
    ) -> None:
        """Save a job's images and commit its succeeded record, in one group.

        The images are verified, written, renamed and made durable, then the record is
        committed and appended to the manifest. ``record`` builds the record from the saved
        images, in their order (it runs on the store's thread). ``answer``: an answer whose
        images came inline and that is not recorded yet (there was no fetch to record it ahead
        of): it is committed in the same transaction.

        ``generation``: how many times the job was generated anew after succeeding (its request
        changed, or ``--redo``); the images of each generation have names of their own, so the
        earlier ones stay.

        Raises :class:`~batchgen.images.InvalidImage` when an image is not acceptable: no image
        and no record are kept, but an ``answer`` is recorded all the same (it was paid for).
        """
        stem = safe_name(job_id) + (f"-v{generation + 1}" if generation else "")
        writes = [
            _ImageWrite(
                f"{stem}{f'-{i}' if i else ''}",
                image if isinstance(image, StagedImage) else StagedImage([image]),
            )
            for i, image in enumerate(images)
        ]
        await self._submit(_Finish(job_id, writes, record, answer))

    async def restore_images(self, record: ManifestRecord, images: dict[int, StagedImage]) -> None:
        """Put images of a succeeded ``record`` back under their recorded names (``images``: by
        index into ``record.images``) and commit the record with them measured anew.

        Raises :class:`~batchgen.images.InvalidImage` when one is not an acceptable image.
        """
        writes = [
            _ImageWrite(PurePosixPath(record.images[i].path).stem, image) for i, image in images.items()
        ]

        def restored(saved: list[ImageRecord]) -> ManifestRecord:
            fresh = dict(zip(images, saved, strict=True))
            return record.model_copy(
                update={
                    "images": [
                        fresh[i].model_copy(update={"url": old.url}) if i in fresh else old
                        for i, old in enumerate(record.images)
                    ],
                    "finished_at": utc_now(),
                }
            )

        await self._submit(_Finish(record.job_id, writes, restored, None))

    async def finish(self, record: ManifestRecord, *, final: bool) -> None:
        """Commit the job's record and outcome, then append it to ``manifest.jsonl``.

        ``final``: a failure that a plain resume must not re-send. The images the record lists
        are made durable (folder sync) before the commit; a crash between commit and append
        leaves the record in the database only, and the next :meth:`open` appends it.
        """
        await self._commit(
            Change("finish", record=record, record_json=record.model_dump_json() + "\n", final=final)
        )

    async def stage(self, chunks: AsyncIterator[bytes]) -> StagedImage:
        """Receive an image as it downloads: held in memory up to :data:`SPILL_BYTES`, then
        streamed to a temporary file (bounded memory). Raises :class:`StorageError`."""
        parts: list[bytes] = []
        held = 0
        spilled: TempFile | None = None
        try:
            async for chunk in chunks:
                parts.append(chunk)
                held += len(chunk)
                if held >= SPILL_BYTES:
                    spilled = await asyncio.to_thread(self._spill, spilled, parts)
                    parts, held = [], 0
        except BaseException:
            if spilled is not None:
                await asyncio.to_thread(spilled.discard)
            raise
        return StagedImage(parts, spilled)

    # -- internals -----------------------------------------------------------------------------

    def _spill(self, spilled: TempFile | None, parts: list[bytes]) -> TempFile:
        target = spilled or TempFile(self.images)
        for part in parts:
            target.write(part)
        return target

    def _store_image(self, stem: str, parts: list[bytes], spilled: TempFile | None) -> ImageRecord:
        """Verify, write and rename one image. One held in memory is verified before anything is
        written, and (where ``syncfs`` exists) made durable by the group that commits its
        record rather than by an fsync of its own; a spilled one is fsync'd, then verified."""
        whole = None
        if spilled is None:
            whole = parts[0] if len(parts) == 1 else b"".join(parts)
            info = inspect_image(whole, max_pixels=self._max_pixels)
        temp = self._spill(spilled, [whole] if whole is not None else parts)
        try:
            written: WrittenFile = temp.commit(sync=whole is None or not SYNCFS)
            if whole is None:
                info = inspect_image(written.path, max_pixels=self._max_pixels)
            final = self.images / f"{stem}.{info.extension}"
            replace(written.path, final)
        except BaseException:
            temp.discard()
            raise
        return ImageRecord(
            path=final.relative_to(self.root).as_posix(),
            sha256=written.sha256,
            bytes=written.size,
            content_type=info.content_type,
            width=info.width,
            height=info.height,
        )

    async def _on_thread(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, work)

    async def _commit(self, change: Change) -> None:
        await self._submit(change)

    async def _submit(self, work: _Work) -> object:
        waiting = _Waiting(work, asyncio.get_running_loop().create_future())
        self._waiting.append(waiting)
        self._wake.set()
        return await waiting.done

    async def _write_groups(self) -> None:
        """The writer: commit whatever is waiting as one group, until the folder closes."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            group, self._waiting = self._waiting, []
            if not group:
                if self._closing:
                    return
                continue
            try:
                outcomes = await self._on_thread(functools.partial(self._apply, [w.work for w in group]))
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

    def _apply(self, group: list[_Work]) -> list[object]:
        """One group, on the store's thread: images; folder sync; one commit; one manifest append.

        Returns, per item, None or the exception that failed that item alone.
        """
        outcomes: list[object] = [None] * len(group)
        changes: list[tuple[int, Change]] = []
        for i, work in enumerate(group):
            if isinstance(work, _Finish):
                change = self._finish_change(work, outcomes, i)
                if change is not None:
                    changes.append((i, change))
            else:
                changes.append((i, work))
        if changes:
            self._commit_changes(changes, outcomes)
        return outcomes

    def _finish_change(self, work: _Finish, outcomes: list[object], i: int) -> Change | None:
        """Save a job's images; the change that records its success (and its answer, if new).
        A bad image is that job's outcome; a new answer is recorded all the same."""
        try:
            saved = [self._store_image(w.stem, w.image.parts, w.image.spilled) for w in work.images]
        except Exception as exc:  # InvalidImage or StorageError: that job's alone
            for w in work.images:
                if w.image.spilled is not None:
                    w.image.spilled.discard()
            outcomes[i] = exc
            return Change("answered", work.job_id, answer=work.answer) if work.answer else None
        record = work.record(saved)
        return Change(
            "answered+finish" if work.answer else "finish",
            work.job_id,
            answer=work.answer,
            record=record,
            record_json=record.model_dump_json() + "\n",
        )

    def _commit_changes(self, changes: list[tuple[int, Change]], outcomes: list[object]) -> None:
        """The group's changes: images durable, one transaction, one manifest append."""
        if any(c.record is not None and c.record.images for _, c in changes):
            # The records' images, and their renames, are durable before the records are.
            if SYNCFS:
                sync_filesystem(self.images)
            else:
                fsync_dir(self.images)
        results = self._db.group([c for _, c in changes])
        appended: list[tuple[int, str]] = []
        for (i, change), result in zip(changes, results, strict=True):
            if outcomes[i] is None or result is not None:
                outcomes[i] = result
            if change.kind in ("finish", "answered+finish") and result is None:
                appended.append((i, change.record_json))
        if appended:
            try:
                self._manifest.append_lines([line for _, line in appended])
            except StorageError as exc:
                for i, _ in appended:
                    outcomes[i] = exc

    def _sync_manifest(self) -> None:
        """On the database thread: cut a torn tail, re-append what the database has past it."""
        known = self._db.count_records()
        lines, extra = self._manifest.repair(known)
        if extra:  # the database was lost or replaced: rebuild it from the manifest
            self._db.group(
                [
                    Change(
                        "import",
                        record=record,
                        record_json=record.model_dump_json() + "\n",
                        final=record.error is not None and not record.error.retryable,
                    )
                    for record in extra
                ]
            )
        if (
            0 < lines < known
            and not extra
            and self._manifest.last_line() != next(self._db.record_lines(lines - 1)).encode()
        ):
            # Not a tail lost by a crash: a line is missing from the middle (edited by hand).
            self._manifest.rewrite(self._db.record_lines(0))
            log.warning("manifest.jsonl rebuilt from the state database: lines were missing from it")
            return
        missing: list[str] = []
        for line in self._db.record_lines(lines):
            missing.append(line)
            if len(missing) >= 1000:  # noqa: PLR2004 - bounded memory on a large repair
                self._manifest.append_lines(missing)
                missing = []
        if missing:
            self._manifest.append_lines(missing)
        appended = max(0, known - lines)
        if extra or appended:
            log.info("manifest repaired: %d record(s) re-appended, %d imported", appended, len(extra))


def _missing_images(root: Path, rows: list[JobRow]) -> dict[str, tuple[ManifestRecord, list[int]]]:
    """The succeeded jobs among ``rows`` whose recorded images are gone or of another size:
    job id -> (its record, the indexes of those images). A stat per image, no reading."""
    lost: dict[str, tuple[ManifestRecord, list[int]]] = {}
    base = str(root)
    for row in rows:
        if not row.record or not row.images:
            continue
        images = json.loads(row.images)  # a whole ManifestRecord only for the few that lost one
        missing = [i for i, image in enumerate(images) if _size(f"{base}/{image['path']}") != image["bytes"]]
        if missing:
            lost[row.job_id] = (ManifestRecord.model_validate_json(row.record), missing)
    return lost


def _size(path: str) -> int | None:
    try:
        return os.lstat(path).st_size
    except OSError:
        return None
