"""The output backend seam: where images, the manifest and the report land.

Two backends: a local folder (:mod:`batchgen.store.local`) and an object store
(:mod:`batchgen.store.objects`): every image is put once under its final name (never renamed,
never rewritten), the manifest grows by whole groups of lines, and everything can be read
back. Every method runs on the store's one thread (blocking is fine) and raises
:class:`~batchgen.errors.StorageError` when the output cannot be written or read. The tests
hold a third, in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from batchgen.store.manifest import ImageRecord, ManifestRecord

__all__ = ["OutputBackend", "Spill"]


class Spill(Protocol):
    """A download too large to hold in memory, streamed to the output's scratch space."""

    def write(self, data: bytes) -> None:
        """Append ``data``."""
        ...

    def discard(self) -> None:
        """Drop what was written (idempotent)."""
        ...


class OutputBackend(Protocol):
    """Images and manifest of one run's output, behind the store's facade."""

    puts_at_once: int
    """How many of a group's images the writer puts at the same time (threads): 1 puts them
    one after the other."""

    def open(self) -> None:
        """Take the output for this run (its lock: raises
        :class:`~batchgen.errors.OutputLockedError` when a live run holds it), create its layout
        and drop what a crash left half-written. An output opened ``shared`` (workers of one
        run, coordinated by their state) takes no lock, and drops only what is older than
        :data:`~batchgen.store.files.STALE_TEMPORARY` seconds."""
        ...

    def close(self) -> None:
        """Release the output (its lock)."""
        ...

    def spill(self) -> Spill:
        """A new scratch file for a large download."""
        ...

    def put_image(
        self, stem: str, parts: list[bytes], spilled: Spill | None, *, max_pixels: int
    ) -> ImageRecord:
        """Verify an image (its bytes: ``parts``, or ``spilled`` once they passed the memory
        bound) and put it once as ``images/<stem>.<ext>``; its record (path relative to the
        output, size, SHA-256, type, pixels). Raises :class:`~batchgen.images.InvalidImage`
        (nothing is put) or :class:`~batchgen.errors.StorageError`."""
        ...

    def make_durable(self) -> None:
        """Every image put so far survives a crash (before the records that list them commit)."""
        ...

    def image_size(self, path: str) -> int | None:
        """The size in bytes of the image at ``path`` (relative to the output), None if absent."""
        ...

    def read_bytes(self, path: str) -> bytes | None:
        """The file at ``path`` (relative to the output), None when there is none."""
        ...

    def sha256(self, path: str) -> str | None:
        """The SHA-256 (hex) of the file at ``path``, read in chunks; None when there is none."""
        ...

    def put_file(self, path: str, data: bytes) -> None:
        """Write (or replace) a file that is not write-once: the report, a thumbnail."""
        ...

    def manifest_lines(self) -> Iterator[bytes]:
        """Every line of the manifest, newline included, in order (bounded memory)."""
        ...

    def manifest_repair(self, known: int) -> tuple[int, list[ManifestRecord]]:
        """Cut what a crash tore off the manifest's end; (its complete lines, the records past
        the first ``known``: a lost state is rebuilt from them)."""
        ...

    def manifest_last_line(self) -> bytes:
        """The manifest's last line, newline included (b"" when empty)."""
        ...

    def manifest_append(self, lines: list[str]) -> None:
        """Append ``lines`` (each a record ending in a newline), durably, as one group."""
        ...

    def flush_manifest(self) -> None:
        """Put what :meth:`manifest_append` holds back, if anything (an object store's part
        being filled)."""
        ...

    def manifest_rewrite(self, lines: Iterable[str]) -> None:
        """Replace the manifest by ``lines``, atomically."""
        ...
