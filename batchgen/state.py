"""Write-ahead job state in SQLite (``DIR/.batchgen/state.sqlite3``): the source of truth for resume.

Why SQLite and not a JSONL journal: a resume must answer "what happened to job X?" for each of
possibly millions of jobs without holding them all in memory; SQLite answers by primary key from
disk, its WAL mode with ``synchronous=FULL`` makes each commit durable and atomic (no torn
records), and it ships with Python. ``manifest.jsonl`` stays the user-facing record; it is a
projection of the ``records`` table, re-appended from it after a crash (see
:mod:`batchgen.manifest`).

A job moves ``pending -> dispatched -> answered -> succeeded | failed``. ``dispatched`` is
committed before the request is sent, ``answered`` (with the answer: request id, tokens, image
URLs or base64 bytes) before anything else is done with the answer. So after a crash, a job left
``dispatched`` was in flight (it may have been charged), and a job left ``answered`` is fetched
again from its recorded answer, never generated again.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import aiosqlite

from batchgen.errors import StorageError
from batchgen.manifest import ManifestRecord, Status
from batchgen.responses import Answer

__all__ = ["JobRow", "JobState", "StateCounts", "StateDB"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    state TEXT NOT NULL,
    final INTEGER NOT NULL DEFAULT 0,      -- failed for good: re-sent only with --retry-failed
    attempts INTEGER NOT NULL DEFAULT 0,   -- generation requests sent, over all runs
    client_request_ids TEXT NOT NULL DEFAULT '[]',
    answer TEXT,                           -- Answer JSON; base64 images dropped once saved
    tokens_used REAL,
    started_at TEXT
);
CREATE TABLE IF NOT EXISTS records (seq INTEGER PRIMARY KEY AUTOINCREMENT, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class JobState(StrEnum):
    """Where a job stands; see the module docstring for the transitions."""

    PENDING = "pending"  # not sent, or sent and refused without an answer (not billed)
    DISPATCHED = "dispatched"  # committed as sent; no answer recorded yet
    ANSWERED = "answered"  # generation answered and recorded; images not all saved yet
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class JobRow:
    """One job's durable state."""

    job_id: str
    state: JobState
    final: bool
    attempts: int
    client_request_ids: list[str]
    answer: Answer | None
    started_at: str | None


@dataclass(frozen=True, slots=True)
class StateCounts:
    """Jobs per state, the failed ones split into final and retryable; tokens in all."""

    succeeded: int = 0
    failed_final: int = 0
    failed_retryable: int = 0
    in_progress: int = 0
    tokens_used: float = 0.0


class StateDB:
    """Async access to the state database; one instance per run, used by every worker.

    Every write is one committed transaction. Raises :class:`StorageError` when SQLite cannot
    write (disk full, read-only folder).
    """

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._db = connection
        self._write = asyncio.Lock()  # one connection: transactions must not interleave

    @classmethod
    async def open(cls, path: Path) -> StateDB:
        """Open (creating if needed) the database at ``path`` in WAL mode, fully synchronous."""
        try:
            connection = await aiosqlite.connect(path, isolation_level=None)
            await connection.execute("PRAGMA journal_mode=WAL")
            await connection.execute("PRAGMA synchronous=FULL")
            await connection.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the state database {path}: {exc}") from exc
        return cls(connection)

    async def close(self) -> None:
        """Close the connection (everything is already committed)."""
        await self._db.close()

    async def get(self, job_id: str) -> JobRow | None:
        """The job's row, or None for a job never seen."""
        async with self._db.execute(
            "SELECT state, final, attempts, client_request_ids, answer, started_at FROM jobs WHERE job_id=?",
            (job_id,),
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return None
        answer = Answer.model_validate_json(row[4]) if row[4] else None
        return JobRow(job_id, JobState(row[0]), bool(row[1]), row[2], json.loads(row[3]), answer, row[5])

    async def dispatched(self, job_id: str, model: str, client_request_id: str, now: str) -> None:
        """Record, before sending, that attempt ``client_request_id`` of the job goes out."""
        await self._transaction(
            (
                "INSERT INTO jobs (job_id, model, state, started_at) VALUES (?, ?, 'pending', ?) "
                "ON CONFLICT(job_id) DO NOTHING",
                (job_id, model, now),
            ),
            (
                "UPDATE jobs SET state='dispatched', final=0, attempts=attempts+1, "
                "client_request_ids=json_insert(client_request_ids, '$[#]', ?) WHERE job_id=?",
                (client_request_id, job_id),
            ),
        )

    async def unanswered(self, job_id: str) -> None:
        """The request failed without a generation (error status, no connection): back to pending."""
        await self._transaction(("UPDATE jobs SET state='pending' WHERE job_id=?", (job_id,)))

    async def answered(self, job_id: str, answer: Answer) -> None:
        """Make the API's answer durable before anything is done with it."""
        await self._transaction(
            (
                "UPDATE jobs SET state='answered', answer=?, tokens_used=? WHERE job_id=?",
                (answer.model_dump_json(), answer.tokens_used, job_id),
            )
        )

    async def finish(self, record: ManifestRecord, *, final: bool) -> None:
        """Store the job's manifest record and its outcome in one transaction.

        ``final``: a failure that a plain resume must not re-send. Base64 image data, saved by
        now, is dropped from the stored answer.
        """
        succeeded = record.status is Status.SUCCEEDED
        await self._transaction(
            ("INSERT INTO records (record) VALUES (?)", (record.model_dump_json(),)),
            (
                "INSERT INTO jobs (job_id, model, state) VALUES (?, ?, 'pending') "
                "ON CONFLICT(job_id) DO NOTHING",
                (record.job_id, record.model),
            ),
            (
                "UPDATE jobs SET state=?, final=?, answer=CASE WHEN ? THEN "
                "json_remove(answer, '$.images') ELSE answer END WHERE job_id=?",
                (
                    JobState.SUCCEEDED if succeeded else JobState.FAILED,
                    final and not succeeded,
                    succeeded,
                    record.job_id,
                ),
            ),
        )

    async def count_records(self) -> int:
        """How many manifest records the database holds."""
        async with self._db.execute("SELECT COUNT(*) FROM records") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def records_from(self, offset: int) -> AsyncIterator[ManifestRecord]:
        """Manifest records in order, skipping the first ``offset``."""
        async with self._db.execute(
            "SELECT record FROM records ORDER BY seq LIMIT -1 OFFSET ?", (offset,)
        ) as cursor:
            async for (text,) in cursor:
                yield ManifestRecord.model_validate_json(text)

    async def in_flight(self) -> list[tuple[str, list[str]]]:
        """Jobs left ``dispatched`` (sent, no answer recorded): (job id, X-Client-Request-Ids)."""
        async with self._db.execute(
            "SELECT job_id, client_request_ids FROM jobs WHERE state='dispatched' ORDER BY job_id"
        ) as cursor:
            return [(row[0], json.loads(row[1])) async for row in cursor]

    async def counts(self) -> StateCounts:
        """Jobs per outcome, and tokens used by every recorded answer."""
        totals: dict[str, int] = {}
        async with self._db.execute(
            "SELECT state, final, COUNT(*) FROM jobs GROUP BY state, final"
        ) as cursor:
            async for state, final, count in cursor:
                key = f"{state}:{int(final)}" if state == JobState.FAILED else state
                totals[key] = totals.get(key, 0) + count
        async with self._db.execute("SELECT COALESCE(SUM(tokens_used), 0) FROM jobs") as cursor:
            row = await cursor.fetchone()
        return StateCounts(
            succeeded=totals.get(JobState.SUCCEEDED, 0),
            failed_final=totals.get("failed:1", 0),
            failed_retryable=totals.get("failed:0", 0),
            in_progress=sum(totals.get(s, 0) for s in (JobState.DISPATCHED, JobState.ANSWERED)),
            tokens_used=float(row[0]) if row else 0.0,
        )

    async def get_meta(self, key: str) -> str | None:
        """A run-level value (e.g. ``total_jobs``), or None."""
        async with self._db.execute("SELECT value FROM meta WHERE key=?", (key,)) as cursor:
            row = await cursor.fetchone()
        return str(row[0]) if row else None

    async def set_meta(self, key: str, value: str) -> None:
        """Store a run-level value."""
        await self._transaction(
            (
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, value),
            )
        )

    async def _transaction(self, *statements: tuple[str, tuple[Any, ...]]) -> None:
        async with self._write:
            try:
                await self._db.execute("BEGIN IMMEDIATE")
                for sql, params in statements:
                    await self._db.execute(sql, params)
                await self._db.execute("COMMIT")
            except BaseException as exc:
                # Also on cancellation: an open transaction would block every later write.
                if self._db.in_transaction:
                    await asyncio.shield(self._db.execute("ROLLBACK"))
                if isinstance(exc, sqlite3.Error):
                    raise StorageError(f"cannot write the state database: {exc}") from exc
                raise
