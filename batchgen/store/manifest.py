"""``manifest.jsonl``: the user-facing record, one JSON object per finished job attempt.

The file is append-only; a group of records is written with one ``write`` and one fsync. A job that
failed and later succeeded has both records, the later one last: the last record of a job is
its outcome. A torn last line (a crash mid-append) is detected and cut off on the next run,
which then re-appends it from the state database (:mod:`batchgen.store.state`), the source
of truth.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from batchgen.errors import StorageError
from batchgen.outcome import Status
from batchgen.store.files import fsync_dir, write_all

__all__ = ["ErrorInfo", "ImageRecord", "ManifestFile", "ManifestRecord", "utc_now"]


class ImageRecord(BaseModel):
    """One saved image: ``path`` relative to the output folder, measured from the file itself."""

    path: str
    sha256: str
    bytes: int
    content_type: str
    width: int
    height: int
    url: str | None = None
    revised_prompt: str | None = None  # the prompt the model says it used (OpenAI-style models)


class ErrorInfo(BaseModel):
    """Why a job failed: a message, the error class, HTTP status and API ``requestId`` if any,
    whether a plain resume re-sends it (``retryable``), and an excerpt of a malformed body."""

    message: str
    kind: str
    status: int | None = None
    request_id: str | None = None
    retryable: bool = False
    body_excerpt: str | None = None


class ManifestRecord(BaseModel):
    """One line of ``manifest.jsonl``.

    ``request_id``, ``tokens_used`` and ``content_violation`` are the API's (NOTES.md: flux sends
    no request id nor tokens, so those are null for flux); ``client_request_ids`` lists the
    ``X-Client-Request-Id`` of every attempt, to match against the API's usage logs
    (``GET /v2/logs``, field ``client_request_id``). Times are ISO 8601 UTC.
    """

    job_id: str
    model: str
    status: Status
    request_id: str | None = None
    tokens_used: float | int | None = None
    content_violation: bool = False
    images: list[ImageRecord] = []
    attempts: int = 0
    client_request_ids: list[str] = []
    inference_id: str | None = None
    credits_used: str | None = None
    usd_spent: str | None = None
    seed: int | None = None
    usage: dict[str, Any] | None = None  # the answer's usage object as sent (meta.usage or usage)
    error: ErrorInfo | None = None
    started_at: str | None = None
    finished_at: str | None = None
    request_fingerprint: str | None = None  # of the request this record answers (Job.fingerprint)
    request: dict[str, Any] | None = None  # its fields as written (Job.request): no image data


def utc_now() -> str:
    """The current time as ISO 8601 UTC, to the millisecond."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ManifestFile:
    """Appends records to ``manifest.jsonl`` durably; reads and repairs it.

    The file is opened with ``O_NOFOLLOW``: a symlink planted in its place is refused.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def repair(self, known: int) -> tuple[int, list[ManifestRecord]]:
        """Cut off a torn or unreadable tail; return (complete lines, records past ``known``).

        ``known`` is how many records the state database holds; records beyond it exist only
        when the database was lost, and are returned so it can be rebuilt from them.
        Raises :class:`StorageError` if the file cannot be read or is a symlink.
        """
        extra: list[ManifestRecord] = []
        count = good_end = last_start = 0
        last = b""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        except OSError as exc:
            raise StorageError(f"cannot open {self.path}: {exc.strerror or exc}") from exc
        with os.fdopen(fd, "r+b") as handle:
            for line in handle:
                if not line.endswith(b"\n"):
                    break  # torn by a crash mid-append
                if count >= known:
                    record = _parse(line)
                    if record is None:
                        break
                    extra.append(record)
                last_start, last = good_end, line
                count += 1
                good_end += len(line)
            # Each record is one write, so only the tail can be torn; records the database already
            # holds are not parsed again, except the last, in case a crash left junk ending in "\n".
            if 0 < count <= known and not _complete(last):
                count, good_end = count - 1, last_start
            if handle.seek(0, os.SEEK_END) != good_end:
                handle.truncate(good_end)
                handle.flush()
                os.fsync(handle.fileno())
        return count, extra

    def last_line(self) -> bytes:
        """The file's last line (with its newline), or b"" for an empty file."""
        with self.path.open("rb") as handle:
            end = handle.seek(0, os.SEEK_END)
            start = max(0, end - 64 * 1024)
            while True:  # bounded: each pass reads 64 KiB further back, down to the start
                handle.seek(start)
                tail = handle.read(end - start)
                cut = tail.rfind(b"\n", 0, len(tail) - 1)
                if cut >= 0 or start == 0:
                    return tail[cut + 1 :]
                start = max(0, start - 64 * 1024)

    def rewrite(self, lines: Iterable[str]) -> None:
        """Replace the file by ``lines`` atomically (temporary file, fsync, rename, folder fsync).

        Raises :class:`StorageError`.
        """
        temporary = self.path.with_name(f".{self.path.name}.rewrite")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o666)
            with os.fdopen(fd, "wb") as out:
                for line in lines:
                    out.write(line.encode())
                out.flush()
                os.fsync(out.fileno())
            temporary.replace(self.path)
        except OSError as exc:
            raise StorageError(f"cannot rewrite {self.path}: {exc.strerror or exc}") from exc
        fsync_dir(self.path.parent)

    def append_lines(self, lines: list[str]) -> None:
        """Append ``lines`` (each one JSON record ending in a newline) with one write; fsync.

        Blocking: call it off the event loop. Raises :class:`StorageError` (disk full...).
        """
        data = "".join(lines).encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
            try:
                write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StorageError(f"cannot append to {self.path}: {exc.strerror or exc}") from exc


def _complete(line: bytes) -> bool:
    """A whole JSON object ending in a newline (not a line torn by a crash)."""
    if not line.endswith(b"\n"):
        return False
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _parse(line: bytes) -> ManifestRecord | None:
    if not line.endswith(b"\n"):
        return None
    try:
        return ManifestRecord.model_validate(json.loads(line))
    except (ValueError, ValidationError):
        return None
