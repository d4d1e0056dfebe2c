"""Files in the output folder: safe names from job ids, atomic durable writes, the folder lock.

Durability follows the usual POSIX recipe (write a temporary file in the same folder, fsync it,
rename it over the final name, fsync the folder), so a reader or a crash sees either the old
file or the whole new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import tempfile
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiofiles
import aiofiles.os

from batchgen.errors import OutputLockedError, StorageError

__all__ = [
    "DirectoryLock",
    "WrittenFile",
    "ensure_real_dir",
    "fsync_dir",
    "make_output_dir",
    "remove_temporaries",
    "safe_name",
    "write_stream",
]

TEMP_PREFIX = ".tmp-"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# Names Windows reserves whatever the extension (and so does any share the folder is synced to).
_RESERVED = {"con", "prn", "aux", "nul"} | {f"{p}{n}" for p in ("com", "lpt") for n in range(10)}
_STEM_CHARS = 80  # keeps names well under every filesystem's 255-byte limit


def safe_name(job_id: str) -> str:
    """A file-name stem for ``job_id`` that is safe on Linux, macOS and Windows.

    Letters, digits, ``.``, ``_`` and ``-`` are kept (accents folded to ASCII), anything else
    becomes ``_``; no leading dot (no ``..``, no hidden files), no reserved device names,
    at most 80 characters, then ``-`` and 10 hex digits of the id's SHA-256, so ids that map to
    the same stem, or differ only in case, still get different names.

    For example ``../../etc/passwd`` becomes ``etc_passwd-<10 hex digits>``.
    """
    ascii_text = unicodedata.normalize("NFKD", job_id).encode("ascii", "ignore").decode()
    stem = _UNSAFE.sub("_", ascii_text).strip("._-")[:_STEM_CHARS] or "job"
    if stem.split(".")[0].lower() in _RESERVED:
        stem = "_" + stem
    return f"{stem}-{hashlib.sha256(job_id.encode()).hexdigest()[:10]}"


def make_output_dir(root: Path) -> None:
    """Create the output folder ``root`` if needed. Raises :class:`StorageError`.

    Unlike the folders batchgen makes inside it, ``root`` may be a symlink: the user chose it.
    """
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create the output folder {root}: {exc.strerror or exc}") from exc


def ensure_real_dir(path: Path, root: Path) -> Path:
    """Create ``path`` (a folder inside ``root``) unless it exists; refuse a symlink there.

    A symlink planted at ``path`` could send every file batchgen writes elsewhere.
    Raises :class:`StorageError`.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create {path}: {exc.strerror or exc}") from exc
    if path.is_symlink() or not path.is_dir():
        raise StorageError(f"{path} is a symlink or not a folder; batchgen writes only inside {root}")
    return path


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable (fsync the folder itself)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class WrittenFile:
    """A file made durable under a temporary name: where, its SHA-256 (hex) and size (bytes)."""

    path: Path
    sha256: str
    size: int


async def write_stream(folder: Path, chunks: AsyncIterator[bytes]) -> WrittenFile:
    """Write ``chunks`` to a new temporary file in ``folder``, fsync it, and return it.

    The caller renames it into place (:func:`os.replace`) once it is judged good, or deletes it.
    The file is created exclusively (``O_EXCL``), so no planted symlink is followed.
    Raises :class:`StorageError` when the disk is full or unwritable; the temporary file is
    removed on any failure.
    """
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX)
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide results from the user's other tools
    except OSError as exc:
        raise StorageError(f"cannot write in {folder}: {exc.strerror or exc}") from exc
    path = Path(name)
    digest = hashlib.sha256()
    size = 0
    try:
        async with aiofiles.open(fd, "wb") as out:
            async for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                await out.write(chunk)
            await out.flush()
            await aiofiles.os.wrap(os.fsync)(out.fileno())
    except BaseException as exc:
        with contextlib.suppress(OSError):
            await aiofiles.os.remove(path)
        if isinstance(exc, OSError):
            raise StorageError(f"cannot write in {folder}: {exc.strerror or exc}") from exc
        raise
    return WrittenFile(path, digest.hexdigest(), size)


def remove_temporaries(folder: Path) -> int:
    """Delete temporary files a crash left in ``folder``; return how many."""
    removed = 0
    for leftover in folder.glob(TEMP_PREFIX + "*"):
        with contextlib.suppress(OSError):
            leftover.unlink()
            removed += 1
    return removed


class DirectoryLock:
    """An exclusive ``flock`` on a file, holding the owner's pid for the refusal message.

    The kernel drops a ``flock`` when its process dies, so a lock left by a killed run is
    taken over by the next run without any stale-pid guessing; a live one is respected.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`OutputLockedError` naming the live owner's pid."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise StorageError(f"cannot open lock file {self.path}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise OutputLockedError(
                    f"{self.path.parent.parent} is in use by another batchgen run (pid {owner})"
                ) from None
            raise StorageError(f"cannot lock {self.path}: {exc.strerror or exc}") from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Release the lock (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None
