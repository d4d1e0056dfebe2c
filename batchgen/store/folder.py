"""The output folder of a run, behind one facade: its state backend (where job states live)
and its output backend (where images and the manifest land), written through one group-commit
writer (:mod:`batchgen.store.writer`).

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
import contextlib
import json
import math
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar, cast

from batchgen.api.answers import Answer
from batchgen.images import DEFAULT_MAX_PIXELS
from batchgen.money import Spend
from batchgen.store.events import (
    Answered,
    Asked,
    Dispatched,
    Event,
    FingerprintsAdopted,
    Finished,
    Listed,
    MetaSet,
    Unanswered,
)
from batchgen.store.files import safe_name
from batchgen.store.layout import STATE, Meta
from batchgen.store.local import LocalFolder
from batchgen.store.manifest import ImageRecord, ManifestRecord, utc_now
from batchgen.store.output import OutputBackend, Spill
from batchgen.store.sqlite import SqliteState
from batchgen.store.state import JobRow, SharedState, StateBackend, StateCounts
from batchgen.store.writer import GroupWriter, ImageWrite, SaveImages, StagedImage

__all__ = ["SPILL_BYTES", "Backends", "OutputFolder", "StagedImage"]

T = TypeVar("T")

SPILL_BYTES = 1024 * 1024
"""A download is held in memory up to this many bytes, then streamed to a scratch file."""


@dataclass(frozen=True, slots=True)
class Backends:
    """Where a run's state and output live, when not in a local folder: ``state`` is made on
    the store's thread (SQLite objects stay on the thread that made them)."""

    state: Callable[[], StateBackend]
    output: OutputBackend
    name: str = ""  # where the output is, for people (an object store's URL); "" for the folder
    database: str | None = None  # a PostgreSQL state's URL: the run's workers share it
    worker_id: str = ""  # ... and this worker's id there


class OutputFolder:
    """The open output folder of one run: state, manifest and images, behind one API.

    Open it with :meth:`open`, which takes the folder's lock and repairs what a crash left.
    Every method raises :class:`~batchgen.errors.StorageError` when the folder cannot be
    written or read.
    """

    def __init__(self, state: StateBackend, output: OutputBackend, writer: GroupWriter, source: str) -> None:
        self.source = source  # the job file being run (its resolved path), "" when none
        self._state = state
        self._output = output
        self._writer = writer

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        root: Path,
        *,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        source: str = "",
        parents: bool = False,
        backends: Backends | None = None,
    ) -> AsyncIterator[OutputFolder]:
        """Open ``root`` for a run of the job file ``source`` (its resolved path).

        Creates the folder (``parents``: and its missing parents) and its layout, takes the lock
        (raises :class:`~batchgen.errors.OutputLockedError` when a live run holds it), removes
        temporary files a crash left, brings the manifest back in line with the state. Raises
        :class:`~batchgen.errors.OutputFolderError` for a folder that can never be written as
        named. ``backends``: other state and output backends than SQLite in a local folder.
        """
        loop = asyncio.get_running_loop()
        output = backends.output if backends else LocalFolder(root, parents=parents)
        make_state = backends.state if backends else lambda: SqliteState.open(root / STATE)
        opening = asyncio.ensure_future(asyncio.to_thread(output.open))
        try:
            await asyncio.shield(opening)
        except asyncio.CancelledError:  # the open goes on in its thread: release what it takes
            with contextlib.suppress(Exception):
                await opening
                output.close()
            raise
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batchgen-store")
        try:
            state = await loop.run_in_executor(thread, make_state)
            try:
                shared = cast("SharedState", state) if backends and backends.database else None
                writer = GroupWriter(state, output, thread, max_pixels=max_pixels, shared=shared)
                await writer.on_thread(writer.catch_up)
                writer.start()
                try:
                    yield cls(state, output, writer, source)
                finally:
                    await writer.drain()
            finally:
                await loop.run_in_executor(thread, state.close)
        finally:
            thread.shutdown(wait=True)  # never leave the state's thread running
            output.close()

    # -- reads ---------------------------------------------------------------------------------

    async def rows(self, job_ids: Iterable[str]) -> dict[str, JobRow]:
        """The durable state of those of ``job_ids`` the folder has seen, by id (one thread hop)."""
        ids = list(job_ids)
        return await self._read(lambda: self._state.rows(ids, source=self.source))

    async def missing_images(self, rows: list[JobRow]) -> dict[str, tuple[ManifestRecord, list[int]]]:
        """Among succeeded ``rows``, those whose recorded images are gone or of another size:
        job id -> (its record, the indexes of those images). A stat per image, no reading."""
        return await asyncio.to_thread(self._missing_images, rows)

    async def in_flight(self) -> list[tuple[str, list[str]]]:
        """Jobs an earlier run left sent with no recorded answer: (job id, X-Client-Request-Ids)."""
        return await self._read(self._state.in_flight)

    async def counts(self) -> StateCounts:
        """Jobs per outcome over the folder, and tokens used."""
        return await self._read(self._state.counts)

    async def spent(self, *, day: str | None = None) -> Spend:
        """What answers were charged: in all, or on ``day`` (UTC, ``YYYY-MM-DD``); exact."""
        by_model = await self._read(lambda: self._state.spent_by_model(day=day))
        return sum(by_model.values(), Spend())

    async def request_costs(self) -> dict[str, list[Spend]]:
        """What one request of each model cost, job by job."""
        return await self._read(self._state.request_costs)

    async def daily_cap(self, new: Decimal | str | None = None) -> Decimal | None:
        """The folder's daily spend cap in USD (``--max-usd-per-day``), kept for every later
        run: ``new`` replaces it first (``"off"`` drops it)."""
        if new is not None:
            await self._commit(MetaSet(Meta.DAILY_CAP, str(new)))
        stored = await self._read(lambda: self._state.get_meta(Meta.DAILY_CAP))
        return Decimal(stored) if stored and stored != "off" else None

    async def not_before(self) -> float:
        """When a Retry-After an earlier run was given ends (Unix time; 0: none)."""
        stored = await self._read(lambda: self._state.get_meta(Meta.NOT_BEFORE))
        try:
            value = float(stored or 0)
        except ValueError:
            return 0.0
        return value if math.isfinite(value) else 0.0

    # -- writes (group-committed) --------------------------------------------------------------

    async def run_started(self, total_jobs: int) -> None:
        """Note the job file being run and how many jobs it holds (``status`` shows them)."""
        await self._commit(MetaSet(Meta.JOB_FILE, self.source))
        await self._commit(MetaSet(Meta.TOTAL_JOBS, str(total_jobs)))

    async def run_ended(self, ending: dict[str, Any]) -> None:
        """Note how the run ended (``status``'s ``last_run``)."""
        await self._commit(MetaSet(Meta.LAST_RUN, json.dumps(ending)))

    async def set_not_before(self, when: float) -> None:
        """Keep a Retry-After's end (Unix time; 0 clears it) for the next run."""
        await self._commit(MetaSet(Meta.NOT_BEFORE, repr(when) if when else "0"))

    async def dispatched(
        self, job_id: str, model: str, client_request_id: str, now: str, *, fingerprint: str = ""
    ) -> None:
        """Record, before sending, that attempt ``client_request_id`` of the job goes out, with
        the ``fingerprint`` of the request (:attr:`batchgen.jobs.load.Job.fingerprint`)."""
        await self._commit(Dispatched(job_id, model, client_request_id, now, fingerprint, self.source))

    async def asked(self, fingerprints: list[tuple[str, str]]) -> None:
        """Record (job id, fingerprint) as what the job file being run asks of those jobs, for
        jobs judged unchanged (a dispatch records its own)."""
        await self._commit(Asked(self.source, tuple(fingerprints)))

    async def adopt_fingerprints(self, fingerprints: list[tuple[str, str]]) -> None:
        """Give (job id, fingerprint) to finished jobs of a folder older than schema 2, which
        did not keep what request they answered (their jobs were judged unchanged)."""
        await self._commit(FingerprintsAdopted(tuple(fingerprints)))

    async def listing(self, step: str, job_ids: list[str] | None = None) -> None:
        """A pass over the job file, for telling which jobs it no longer holds: ``begin``, then
        ``ids`` with ``job_ids`` as they are judged, then ``done`` once every job was (the
        folder's counts are then that file's)."""
        await self._commit(Listed(step, self.source, tuple(job_ids or ())))

    async def unanswered(self, job_id: str, *, charged: Spend | None = None) -> None:
        """The request failed without a usable generation (error status, no connection, a body
        that cannot be read): back to pending. ``charged``: what its cost headers said it cost
        all the same (recorded as a charge of this run)."""
        await self._commit(Unanswered(job_id, charged))

    async def answered(self, job_id: str, answer: Answer) -> None:
        """Make the API's answer durable before anything is done with it."""
        await self._commit(Answered(job_id, answer))

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

        The images are verified, put and made durable, then the record is committed and
        appended to the manifest. ``record`` builds the record from the saved images, in their
        order (it runs on the store's thread). ``answer``: an answer whose images came inline
        and that is not recorded yet (there was no fetch to record it ahead of): it is
        committed in the same transaction.

        ``generation``: how many times the job was generated anew after succeeding (its request
        changed, or ``--redo``); the images of each generation have names of their own, so the
        earlier ones stay.

        Raises :class:`~batchgen.images.InvalidImage` when an image is not acceptable: no image
        and no record are kept, but an ``answer`` is recorded all the same (it was paid for).
        """
        stem = safe_name(job_id) + (f"-v{generation + 1}" if generation else "")
        writes = [
            ImageWrite(
                f"{stem}{f'-{i}' if i else ''}",
                image if isinstance(image, StagedImage) else StagedImage([image]),
            )
            for i, image in enumerate(images)
        ]
        await self._writer.submit(SaveImages(job_id, writes, record, answer))

    async def restore_images(self, record: ManifestRecord, images: dict[int, StagedImage]) -> None:
        """Put images of a succeeded ``record`` back under their recorded names (``images``: by
        index into ``record.images``) and commit the record with them measured anew.

        Raises :class:`~batchgen.images.InvalidImage` when one is not an acceptable image.
        """
        writes = [ImageWrite(PurePosixPath(record.images[i].path).stem, image) for i, image in images.items()]

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

        await self._writer.submit(SaveImages(record.job_id, writes, restored, None))

    async def finish(self, record: ManifestRecord, *, final: bool) -> None:
        """Commit the job's record and outcome, then append it to the manifest.

        ``final``: a failure that a plain resume must not re-send. A crash between commit and
        append leaves the record in the state only, and the next :meth:`open` appends it.
        """
        await self._commit(Finished(record, record.model_dump_json() + "\n", final=final))

    async def stage(self, chunks: AsyncIterator[bytes]) -> StagedImage:
        """Receive an image as it downloads: held in memory up to :data:`SPILL_BYTES`, then
        streamed to a scratch file (bounded memory). Raises
        :class:`~batchgen.errors.StorageError`."""
        parts: list[bytes] = []
        held = 0
        spilled: Spill | None = None
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

    def _spill(self, spilled: Spill | None, parts: list[bytes]) -> Spill:
        target = spilled or self._output.spill()
        for part in parts:
            target.write(part)
        return target

    def _missing_images(self, rows: list[JobRow]) -> dict[str, tuple[ManifestRecord, list[int]]]:
        checks = [
            (row, i, image["path"], image["bytes"])
            for row in rows
            if row.record and row.images
            for i, image in enumerate(json.loads(row.images))  # (a whole record only for those that lost one)
        ]
        # An object store answers each look in milliseconds: many at once (a local stat needs no thread)
        at_once = 2 * self._output.puts_at_once
        with ThreadPoolExecutor(max_workers=at_once) if at_once > 2 else contextlib.nullcontext() as pool:  # noqa: PLR2004
            sizes = (pool.map if pool else map)(self._output.image_size, [path for _, _, path, _ in checks])
            missing: dict[str, list[int]] = {}
            records: dict[str, str] = {}
            for (row, i, _, recorded), size in zip(checks, sizes, strict=True):
                if size != recorded:
                    missing.setdefault(row.job_id, []).append(i)
                    records[row.job_id] = str(row.record)
        return {
            job: (ManifestRecord.model_validate_json(records[job]), indexes)
            for job, indexes in missing.items()
        }

    async def _read(self, read: Callable[[], T]) -> T:
        return await self._writer.on_thread(read)

    async def _commit(self, event: Event) -> None:
        await self._writer.submit(event)
