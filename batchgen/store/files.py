"""Files in the output folder: safe names from job ids, atomic durable writes, the folder lock.

Durability follows the usual POSIX recipe (write a temporary file in the same folder, fsync it,
rename it over the final name, fsync the folder), so a reader or a crash sees either the old
file or the whole new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import os
import re
import secrets
import sys
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from batchgen.errors import OutputFolderError, OutputLockedError, StorageError

__all__ = [
    "SYNCFS",
    "DirectoryLock",
    "TempFile",
    "WrittenFile",
    "ensure_real_dir",
    "fsync_dir",
    "make_output_dir",
    "remove_temporaries",
    "replace",
    "safe_name",
    "sync_filesystem",
    "write_all",
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


def make_output_dir(root: Path, *, parents: bool = False) -> None:
    """Create the output folder ``root`` if needed (and, with ``parents``, its missing parents).

    Unlike the folders batchgen makes inside it, ``root`` may be a symlink: the user chose it.
    Raises :class:`~batchgen.errors.OutputFolderError` for a folder that can never be written as
    named (read-only filesystem, no permission, not a folder, a missing parent: a typo in
    ``--out`` must not start a run from zero somewhere new), :class:`StorageError` otherwise
    (a full disk: a later run may succeed).
    """
    try:
        root.mkdir(parents=parents, exist_ok=True)
    except FileNotFoundError as exc:
        raise OutputFolderError(
            f"the output folder {root} cannot be created: its parent does not exist"
        ) from exc
    except OSError as exc:
        message = f"cannot create the output folder {root}: {exc.strerror or exc}"
        if exc.errno in _PERMANENT:
            raise OutputFolderError(message) from exc
        raise StorageError(message) from exc
    if not root.is_dir():
        raise OutputFolderError(f"the output folder {root} is not a folder")
    if not os.access(root, os.W_OK | os.X_OK):  # (access(2) reports a read-only mount to root too)
        raise OutputFolderError(f"the output folder {root} cannot be written (read-only or no permission)")


_PERMANENT = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST, errno.ENAMETOOLONG}
"""``mkdir`` errors that no later run can outlive."""


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


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
SYNCFS = _LIBC is not None and hasattr(_LIBC, "syncfs")
"""Whether :func:`sync_filesystem` is available (Linux' ``syncfs(2)``)."""


def sync_filesystem(path: Path) -> None:
    """Make everything written to the filesystem holding ``path`` durable: ``syncfs(2)``.

    One call for a whole group of files and renames, instead of one ``fsync`` each (group
    commit). Linux only (see :data:`SYNCFS`). Raises :class:`StorageError`.
    """
    assert _LIBC is not None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise StorageError(f"cannot sync {path}: {exc.strerror or exc}") from exc
    try:
        if _LIBC.syncfs(fd) != 0:
            error = ctypes.get_errno()
            raise StorageError(f"cannot sync {path}: {os.strerror(error)}")
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make renames and new files in ``path`` durable (fsync the folder itself).

    Raises :class:`StorageError`.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StorageError(f"cannot sync {path}: {exc.strerror or exc}") from exc


@dataclass(frozen=True, slots=True)
class WrittenFile:
    """A file made durable: where, its SHA-256 (hex) and size (bytes)."""

    path: Path
    sha256: str
    size: int


class TempFile:
    """A new temporary file in ``folder``, written in parts, made durable, then renamed or dropped.

    Created exclusively (``O_EXCL | O_NOFOLLOW``: no planted symlink is followed) with mode
    0666 less the umask, like any file the user's tools create. Blocking: call it off the event
    loop. Raises :class:`StorageError` when the disk is full or unwritable.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
        self._digest = hashlib.sha256()
        self._size = 0
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
        except OSError as exc:
            raise StorageError(f"cannot write in {folder}: {exc.strerror or exc}") from exc

    def write(self, data: bytes) -> None:
        """Append ``data``."""
        self._digest.update(data)
        self._size += len(data)
        try:
            write_all(self._fd, data)
        except OSError as exc:
            self.discard()
            raise StorageError(f"cannot write {self.path}: {exc.strerror or exc}") from exc

    def commit(self, *, sync: bool = True) -> WrittenFile:
        """Close the file, fsync'd first unless ``sync`` is false (the caller then makes it durable
        with :func:`sync_filesystem` before relying on it); it keeps its temporary name."""
        try:
            if sync:
                os.fsync(self._fd)
            os.close(self._fd)
        except OSError as exc:
            self.discard()
            raise StorageError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        self._fd = -1
        return WrittenFile(self.path, self._digest.hexdigest(), self._size)

    def discard(self) -> None:
        """Close and delete the file (idempotent)."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
        with contextlib.suppress(OSError):
            self.path.unlink()


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may write less than asked). Raises OSError."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def replace(source: Path, target: Path) -> None:
    """Rename ``source`` over ``target`` (a planted symlink there is replaced, never followed).

    The caller fsyncs the folder (:func:`fsync_dir`) before relying on the new name.
    Raises :class:`StorageError`.
    """
    try:
        source.replace(target)
    except OSError as exc:
        raise StorageError(f"cannot write {target}: {exc.strerror or exc}") from exc


STALE_TEMPORARY = 3600.0
"""Seconds after which a worker sharing an output takes a temporary file for a crash's leftover
(another live worker may be writing a newer one)."""


def remove_temporaries(folder: Path, *, older_than: float = 0.0) -> int:
    """Delete temporary files a crash left in ``folder`` (last written over ``older_than``
    seconds ago); return how many."""
    removed = 0
    cutoff = time.time() - older_than
    for leftover in folder.glob(TEMP_PREFIX + "*"):
        with contextlib.suppress(OSError):
            if older_than and leftover.stat().st_mtime > cutoff:
                continue
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
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:  # a full disk: the pid is only for messages, but say why we stop
            os.close(fd)
            raise StorageError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        self._fd = fd

    @staticmethod
    def holder(path: Path) -> int | None:
        """The pid of the live run holding the lock at ``path``, or None. Writes nothing."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(owner) if owner.isdigit() else -1
        else:
            return None  # (closing drops the shared lock at once)
        finally:
            os.close(fd)

    def release(self) -> None:
        """Release the lock (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None
