"""``batchgen status DIR`` and ``batchgen verify DIR``: what an output folder holds, read
without disturbing a live run.

The database is opened read-only: both work on a read-only mount and beside a live run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchgen.errors import UsageError
from batchgen.money import Spend
from batchgen.outcome import Status
from batchgen.store.files import DirectoryLock
from batchgen.store.layout import LOCK, STATE, Meta, has_state, state_url
from batchgen.store.manifest import ManifestRecord
from batchgen.store.output import OutputBackend
from batchgen.store.sqlite import SqliteState
from batchgen.store.state import JobRow, StateBackend

__all__ = [
    "FolderReader",
    "ImageProblem",
    "ReportView",
    "failed_records",
    "read_records",
    "read_report_view",
    "read_status",
    "verify_folder",
]


@dataclass(frozen=True, slots=True)
class ImageProblem:
    """An image a job's current record lists that is not as recorded: ``path`` relative to
    the folder; ``problem`` is ``missing`` or says how it differs."""

    job_id: str
    path: str
    problem: str


def _open(out_dir: Path) -> StateBackend:
    shared = state_url(out_dir)
    if shared is not None:
        from batchgen.store.postgres import PostgresState  # noqa: PLC0415 - only then the driver

        return PostgresState.open(shared, read_only=True)
    path = out_dir / STATE
    if not path.is_file():
        raise UsageError(f"{out_dir} holds no batchgen run (no {path})")
    return SqliteState.open(path, read_only=True)


class FolderReader:
    """A read-only view of an output folder's state, for ``batchgen plan``: job rows by id and
    recorded costs. A folder with no state yet reads as empty. Use as a context manager.

    Raises :class:`~batchgen.errors.StorageError` when the state cannot be read.
    """

    def __init__(self, out_dir: Path, *, source: str = "") -> None:
        self._db = _open(out_dir) if has_state(out_dir) else None
        self._source = source  # the job file to be run (its resolved path)

    def __enter__(self) -> FolderReader:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._db is not None:
            self._db.close()

    def rows(self, job_ids: Iterable[str]) -> dict[str, JobRow]:
        """The rows of those of ``job_ids`` the folder knows (see
        :meth:`~batchgen.store.state.StateBackend.rows`)."""
        return self._db.rows(job_ids, source=self._source) if self._db is not None else {}

    def request_costs(self) -> dict[str, list[Spend]]:
        """What one request of each model cost, job by job."""
        return self._db.request_costs() if self._db is not None else {}


def _verify(out_dir: Path, output: OutputBackend | None) -> tuple[int, list[ImageProblem]]:
    db = _open(out_dir)
    checked, problems = 0, []
    try:
        for record in db.current_records(status=Status.SUCCEEDED):
            for image in record.images:
                checked += 1
                problem = (
                    _check(out_dir / image.path, image.bytes, image.sha256)
                    if output is None
                    else _check_object(output, image.path, image.bytes, image.sha256)
                )
                if problem:
                    problems.append(ImageProblem(record.job_id, image.path, problem))
    finally:
        db.close()
    return checked, problems


def _check(path: Path, size: int, sha256: str) -> str | None:
    try:
        if not path.is_file() or path.is_symlink():
            return "missing"
        found = path.stat().st_size
        if found != size:
            return f"altered: {found} bytes, recorded {size}"
        with path.open("rb") as handle:
            if hashlib.file_digest(handle, "sha256").hexdigest() != sha256:
                return "altered: its SHA-256 is not the recorded one"
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    return None


def _check_object(output: OutputBackend, path: str, size: int, sha256: str) -> str | None:
    found = output.image_size(path)
    if found is None:
        return "missing"
    if found != size:
        return f"altered: {found} bytes, recorded {size}"
    if output.sha256(path) != sha256:
        return "altered: its SHA-256 is not the recorded one"
    return None


def read_records(out_dir: Path, status: Status | None = None) -> list[ManifestRecord]:
    """The current (last) record of every job of ``out_dir`` (or of those whose record has
    ``status``), by job id (blocking).

    Raises :class:`UsageError` when ``out_dir`` holds no batchgen state.
    """
    db = _open(out_dir)
    try:
        return list(db.current_records(status=status))
    finally:
        db.close()


@dataclass(frozen=True, slots=True)
class ReportView:
    """What ``batchgen report`` shows: every job's current record, what the folder's answers
    cost in all (every run: the figure ``status`` shows), and the jobs the job file last run
    into the folder no longer holds."""

    records: list[ManifestRecord]
    spent: Spend
    not_in_file: frozenset[str]


def read_report_view(out_dir: Path) -> ReportView:
    """The :class:`ReportView` of ``out_dir`` (blocking).

    Raises :class:`UsageError` when ``out_dir`` holds no batchgen state.
    """
    db = _open(out_dir)
    try:
        spent = sum(db.spent_by_model().values(), Spend())
        return ReportView(list(db.current_records()), spent, frozenset(db.not_in_file()))
    finally:
        db.close()


async def failed_records(out_dir: Path) -> list[ManifestRecord]:
    """The current record of every failed job of ``out_dir`` (``batchgen failed``), by job id;
    the others are not read.

    Raises :class:`UsageError` when ``out_dir`` holds no batchgen state.
    """
    return await asyncio.to_thread(read_records, out_dir, Status.FAILED)


async def verify_folder(
    out_dir: Path, *, output: OutputBackend | None = None
) -> tuple[int, list[ImageProblem]]:
    """Check every image of every job's current record: it exists, and its size and SHA-256
    are the recorded ones. Returns (images checked, the problems found). ``output``: where the
    images are when not in ``out_dir`` (an object store; ``out_dir`` then holds the state)."""
    return await asyncio.to_thread(_verify, out_dir, output)


FAILED_SHOWN = 20  # failed jobs listed by status; the rest are counted


def _read(out_dir: Path) -> dict[str, Any]:
    from batchgen.store.postgres import PostgresState  # noqa: PLC0415 - (no driver is loaded for it)

    running = DirectoryLock.holder(out_dir / LOCK)
    db = _open(out_dir)
    try:
        counts = db.counts()
        total = counts.total
        job_file = db.get_meta(Meta.JOB_FILE) or "?"
        last_run = json.loads(db.get_meta(Meta.LAST_RUN) or "null")
        failed, failed_count = db.failed_jobs(FAILED_SHOWN)
        in_flight = db.in_flight() if running is None else []
        workers: list[dict[str, Any]] = []
        if isinstance(db, PostgresState):  # (workers share it: only a dead one's sends are unknown)
            in_flight = db.possibly_billed()
            workers = [dataclasses.asdict(w) for w in db.workers()]
    finally:
        db.close()
    return {
        "job_file": job_file,
        "total": total,
        "succeeded": counts.succeeded,
        "failed": counts.failed_final,
        "failed_retryable": counts.failed_retryable,
        "in_progress": counts.in_progress,
        "pending": counts.pending,
        "generated_anew": counts.generated_anew,
        "tokens_used": int(counts.tokens_used) if counts.tokens_used.is_integer() else counts.tokens_used,
        # Exact decimals: the sum of every cost header recorded, all runs (money.py)
        "spent": {
            "usd": counts.total_spent.usd,
            "credits": counts.total_spent.credits,
            "by_model": {m: {"usd": s.usd, "credits": s.credits} for m, s in counts.spent.items()},
        },
        "not_in_job_file": counts.not_in_file_count,
        "not_in_job_file_ids": counts.not_in_file,
        "running_pid": running,
        "last_run": last_run,
        # Sent by a run (or worker) that is no longer alive, no answer recorded: each may have been
        # charged once; match their X-Client-Request-Ids in the usage logs (GET /v2/logs).
        "in_flight_of_a_dead_run": [{"id": job, "client_request_ids": ids} for job, ids in in_flight],
        "workers": workers,  # the latest run's workers (a PostgreSQL state): leases, heartbeats, claims
        "failed_jobs": failed,
        "failed_jobs_not_shown": failed_count - len(failed),
    }


async def read_status(out_dir: Path) -> dict[str, Any]:
    """What an output folder holds: total jobs of its job file(s), succeeded, failed (final and
    retryable), in progress, pending (never finished), generated anew, tokens, money spent (in
    all and per model), the pid of a live run holding it (or None), the last run's end (stop
    reason), jobs a dead run left in flight with their X-Client-Request-Ids, and the first
    failed jobs with their error kind and message.

    Raises :class:`UsageError` when ``out_dir`` holds no batchgen state, and
    :class:`~batchgen.errors.StorageError` when it cannot be read.
    """
    return await asyncio.to_thread(_read, out_dir)
