"""The output backend of a local folder: images renamed into place, ``manifest.jsonl`` appended
with one write and fsync per group, the folder lock (layout: :mod:`batchgen.store.layout`)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from batchgen.errors import StorageError
from batchgen.images import inspect_image
from batchgen.store.files import (
    STALE_TEMPORARY,
    SYNCFS,
    DirectoryLock,
    TempFile,
    WrittenFile,
    ensure_real_dir,
    fsync_dir,
    make_output_dir,
    remove_temporaries,
    replace,
    sync_filesystem,
)
from batchgen.store.layout import IMAGES, LOCK, MANIFEST, PRIVATE
from batchgen.store.manifest import ImageRecord, ManifestFile, ManifestRecord
from batchgen.store.output import Spill

__all__ = ["LocalFolder"]


class LocalFolder:
    """An :class:`~batchgen.store.output.OutputBackend` on a local filesystem, rooted at ``root``
    (``parents``: create its missing parents). Raises
    :class:`~batchgen.errors.OutputFolderError` from :meth:`open` for a folder that can never
    be written as named, :class:`~batchgen.errors.StorageError` elsewhere."""

    puts_at_once = 1  # (a rename is quicker than a thread hop)

    def __init__(self, root: Path, *, parents: bool = False, shared: bool = False) -> None:
        self.root = root
        self.images = root / IMAGES
        self._parents = parents
        self._shared = shared  # workers of one run write it together (no lock)
        self._lock = DirectoryLock(root / LOCK)
        self._manifest = ManifestFile(root / MANIFEST)

    def open(self) -> None:
        """Create the folder and its layout, take the lock, drop temporary files a crash left."""
        make_output_dir(self.root, parents=self._parents)
        ensure_real_dir(self.root / PRIVATE, self.root)
        if not self._shared:
            self._lock.acquire()
        try:
            ensure_real_dir(self.images, self.root)
            remove_temporaries(self.images, older_than=STALE_TEMPORARY if self._shared else 0.0)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the lock."""
        if not self._shared:
            self._lock.release()

    def spill(self) -> Spill:
        """A temporary file in ``images/`` (renamed into place once verified)."""
        return TempFile(self.images)

    def put_image(
        self, stem: str, parts: list[bytes], spilled: Spill | None, *, max_pixels: int
    ) -> ImageRecord:
        """Verify, write and rename one image. One held in memory is verified before anything is
        written, and (where ``syncfs`` exists) made durable by :meth:`make_durable` rather than
        by an fsync of its own; a spilled one is fsync'd, then verified."""
        whole = None
        if spilled is None:
            whole = parts[0] if len(parts) == 1 else b"".join(parts)
            info = inspect_image(whole, max_pixels=max_pixels)
        if spilled is not None and not isinstance(spilled, TempFile):
            raise TypeError(f"a local folder cannot put {type(spilled).__name__}: spill through its spill()")
        temp = spilled or TempFile(self.images)
        for part in [whole] if whole is not None else parts:
            temp.write(part)
        try:
            written: WrittenFile = temp.commit(sync=whole is None or not SYNCFS)
            if whole is None:
                info = inspect_image(written.path, max_pixels=max_pixels)
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

    def make_durable(self) -> None:
        """The images written and their renames, durable: one ``syncfs`` (or a folder fsync)."""
        if SYNCFS:
            sync_filesystem(self.images)
        else:
            fsync_dir(self.images)

    def image_size(self, path: str) -> int | None:
        """A stat, no reading; a symlink is its own size, never its target's."""
        try:
            return os.lstat(f"{self.root}/{path}").st_size
        except OSError:
            return None

    def read_bytes(self, path: str) -> bytes | None:
        """The file's bytes; None when it is absent or a symlink."""
        target = self.root / path
        try:
            return None if target.is_symlink() else target.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read {target}: {exc.strerror or exc}") from exc

    def sha256(self, path: str) -> str | None:
        """The file's SHA-256, read in chunks; None when it is absent or a symlink."""
        target = self.root / path
        try:
            if target.is_symlink() or not target.is_file():
                return None
            with target.open("rb") as handle:
                return hashlib.file_digest(handle, "sha256").hexdigest()
        except OSError as exc:
            raise StorageError(f"cannot read {target}: {exc.strerror or exc}") from exc

    def put_file(self, path: str, data: bytes) -> None:
        """Write the file whole (temporary file, then rename)."""
        target = self.root / path
        temporary = target.with_name(f".{target.name}.tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_bytes(data)
            temporary.replace(target)
        except OSError as exc:
            raise StorageError(f"cannot write {target}: {exc.strerror or exc}") from exc

    def manifest_lines(self) -> Iterator[bytes]:
        """The manifest file's lines (none when it does not exist)."""
        try:
            with self._manifest.path.open("rb") as handle:
                yield from handle
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StorageError(f"cannot read {self._manifest.path}: {exc.strerror or exc}") from exc

    def manifest_repair(self, known: int) -> tuple[int, list[ManifestRecord]]:
        """See :meth:`ManifestFile.repair`."""
        return self._manifest.repair(known)

    def manifest_last_line(self) -> bytes:
        """See :meth:`ManifestFile.last_line`."""
        return self._manifest.last_line()

    def manifest_append(self, lines: list[str]) -> None:
        """See :meth:`ManifestFile.append_lines`."""
        self._manifest.append_lines(lines)

    def flush_manifest(self) -> None:
        """Nothing is held back: every append is durable."""

    def manifest_rewrite(self, lines: Iterable[str]) -> None:
        """See :meth:`ManifestFile.rewrite`."""
        self._manifest.rewrite(lines)
