"""The output folder: where every result lands, durably, and where a resume starts from.

Layout of ``DIR``::

    manifest.jsonl            one record per finished job attempt (batchgen.manifest)
    images/<name>.<ext>       the images, named from the job id (batchgen.files.safe_name)
    .batchgen/state.sqlite3   write-ahead job state (batchgen.state)
    .batchgen/lock            held by the live run (flock)

Example::

    async with ResultStore.open(Path("out")) as store:
        row = await store.db.get("trex")
        image = await store.save_image("trex", 0, chunks)   # chunks: AsyncIterator[bytes]
        await store.finish(record, final=False)
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from batchgen.errors import StorageError
from batchgen.files import (
    DirectoryLock,
    ensure_real_dir,
    fsync_dir,
    make_output_dir,
    remove_temporaries,
    safe_name,
    write_stream,
)
from batchgen.images import DEFAULT_MAX_PIXELS, InvalidImage, inspect_image
from batchgen.manifest import ImageRecord, ManifestFile, ManifestRecord
from batchgen.state import StateDB

__all__ = ["ResultStore", "decode_b64_image"]

log = logging.getLogger(__name__)


class ResultStore:
    """The open output folder of one run: the state database, the manifest and the images.

    Open it with :meth:`open`, which takes the folder's lock and repairs what a crash left.
    """

    def __init__(self, root: Path, db: StateDB, manifest: ManifestFile, max_pixels: int) -> None:
        self.root = root
        self.db = db
        self.images = root / "images"
        self._manifest = manifest
        self._max_pixels = max_pixels

    @classmethod
    @asynccontextmanager
    async def open(cls, root: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> AsyncIterator[ResultStore]:
        """Open ``root`` for a run.

        Creates the folder layout, takes the lock (raises
        :class:`~batchgen.errors.OutputLockedError` when a live run holds it), removes temporary
        files a crash left, and brings ``manifest.jsonl`` back in line with the database.
        Raises :class:`~batchgen.errors.StorageError` for an unusable folder.
        """
        make_output_dir(root)
        private = ensure_real_dir(root / ".batchgen", root)
        folder_lock = DirectoryLock(private / "lock")
        folder_lock.acquire()
        try:
            db = await StateDB.open(private / "state.sqlite3")
            try:
                store = cls(root, db, ManifestFile(root / "manifest.jsonl"), max_pixels)
                ensure_real_dir(store.images, root)
                remove_temporaries(store.images)
                await store._sync_manifest()
                yield store
            finally:
                await db.close()
        finally:
            folder_lock.release()

    async def save_image(self, job_id: str, index: int, chunks: AsyncIterator[bytes]) -> ImageRecord:
        """Stream one image to ``images/``, verify it with Pillow, and rename it into place.

        The name is ``safe_name(job_id)`` (plus ``-<index>`` for the 2nd image on) and the
        extension of the format Pillow identified. Raises :class:`InvalidImage` (the bytes are
        not an acceptable image; nothing is kept) or :class:`StorageError`.
        """
        written = await write_stream(self.images, chunks)
        try:
            info = await asyncio.to_thread(inspect_image, written.path, max_pixels=self._max_pixels)
            suffix = f"-{index}" if index else ""
            final = self.images / f"{safe_name(job_id)}{suffix}.{info.extension}"
            await asyncio.to_thread(_replace_durably, written.path, final)
        except BaseException:
            with contextlib.suppress(OSError):
                written.path.unlink()
            raise
        return ImageRecord(
            path=final.relative_to(self.root).as_posix(),
            sha256=written.sha256,
            bytes=written.size,
            content_type=info.content_type,
            width=info.width,
            height=info.height,
        )

    async def finish(self, record: ManifestRecord, *, final: bool) -> None:
        """Commit the job's record to the database, then append it to ``manifest.jsonl``.

        In this order, a crash in between leaves the record in the database only, and the next
        :meth:`open` appends it; the manifest never holds a record the database lacks.
        """
        await self.db.finish(record, final=final)
        await self._manifest.append(record)

    async def _sync_manifest(self) -> None:
        known = await self.db.count_records()
        lines, extra = await asyncio.to_thread(self._manifest.repair, known)
        for record in extra:  # the database was lost or replaced: rebuild it from the manifest
            await self.db.finish(record, final=record.error is not None and not record.error.retryable)
        appended = 0
        async for record in self.db.records_from(lines):
            await self._manifest.append(record)
            appended += 1
        if extra or appended:
            log.info("manifest repaired: %d record(s) re-appended, %d imported", appended, len(extra))


def _replace_durably(source: Path, target: Path) -> None:
    try:
        source.replace(target)  # replaces a planted symlink itself, never its target
        fsync_dir(target.parent)
    except OSError as exc:
        raise StorageError(f"cannot write {target}: {exc.strerror or exc}") from exc


async def decode_b64_image(data: str) -> AsyncIterator[bytes]:
    """Yield the bytes of a ``b64_json`` image (an async iterator, like a download).

    A ``data:<mime>;base64,`` prefix and line breaks are tolerated. Raises
    :class:`InvalidImage` when ``data`` is not valid base64.
    """
    payload = data.split(";base64,", 1)[1] if data.startswith("data:") else data
    try:
        yield base64.b64decode("".join(payload.split()), validate=True)
    except binascii.Error as exc:
        raise InvalidImage(f"b64_json is not valid base64: {exc}") from exc
