"""The write-ahead job state in SQLite (``DIR/.batchgen/state.sqlite3``), committed in groups.

Why SQLite and not a JSONL journal: a resume must answer "what happened to job X?" for each of
possibly millions of jobs without holding them all in memory; SQLite answers by primary key from
disk, its WAL mode with ``synchronous=FULL`` makes each commit durable and atomic (no torn
records), and it ships with Python. ``manifest.jsonl`` stays the user-facing record; it is a
projection of the ``records`` table, re-appended from it after a crash.

Each event of :mod:`batchgen.store.events` has its statements in :mod:`.sqlite_effects`;
tables and upgrades are in :mod:`.sqlite_schema`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from batchgen.errors import StorageError
from batchgen.money import Spend, from_units
from batchgen.outcome import Status
from batchgen.store.events import (
    Event,
)
from batchgen.store.manifest import ManifestRecord
from batchgen.store.sql_state import Dialect, SqlReads
from batchgen.store.sqlite_effects import EFFECTS
from batchgen.store.sqlite_schema import SCHEMA, SCHEMA_VERSION, upgrade, view_as_current
from batchgen.store.state import (
    JobRow,
    apply_each_alone_if_refused,
    job_row,
)

__all__ = ["SqliteState"]

_HALF = 10**9  # money units are summed as (x / _HALF, x % _HALF): each sum fits in 64 bits


class SqliteState(SqlReads):
    """The state of one output folder in SQLite: a :class:`~batchgen.store.state.StateBackend`.

    Every method runs on one thread. Writes happen only inside :meth:`apply` (one transaction,
    one sync to disk for all of its events). Raises :class:`StorageError` when SQLite cannot
    read or write the file.
    """

    dialect = Dialect(mark="?", by_id="", anew="COALESCE(SUM(generation > 0), 0)", no_limit=-1)

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    @classmethod
    def open(cls, path: Path, *, read_only: bool = False) -> SqliteState:
        """Open (creating if needed) the database at ``path``: WAL mode, ``synchronous=FULL``.

        ``read_only`` opens an existing database without write access (``batchgen status``).
        Raises :class:`StorageError` for a file that is not a batchgen state database, a newer
        schema, or a folder that cannot be written.
        """
        connection: sqlite3.Connection | None = None
        try:
            if read_only:
                # With no write-ahead log beside it (no run live, none died mid-write) the file is
                # read as immutable: reading it then creates no -wal/-shm file either.
                quiet = not path.with_name(path.name + "-wal").exists()
                connection = sqlite3.connect(
                    f"{path.resolve().as_uri()}?{'immutable=1' if quiet else 'mode=ro'}",
                    uri=True,
                    isolation_level=None,
                    check_same_thread=False,
                )
            else:
                connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=FULL")
                connection.executescript(SCHEMA)
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"{path} was written by a newer batchgen (state schema {version}); upgrade batchgen"
                )
            if version < SCHEMA_VERSION:
                if read_only:  # (status, plan, verify of a folder no run has upgraded yet)
                    view_as_current(connection)
                else:
                    upgrade(connection)
            connection.execute("SELECT COUNT(*) FROM jobs").fetchone()
        except sqlite3.Error as exc:
            if connection is not None:
                connection.close()
            raise StorageError(f"cannot open the state database {path}: {exc}") from exc
        except StorageError:
            if connection is not None:
                connection.close()
            raise
        return cls(connection)

    def close(self) -> None:
        """Close the connection (everything is already committed)."""
        self._db.close()

    # -- reads ---------------------------------------------------------------------------------

    def rows(self, job_ids: Iterable[str], *, source: str = "") -> dict[str, JobRow]:
        """The rows of those of ``job_ids`` the database knows, by id (one query per 500 ids);
        ``source``: the job file being run, whose :attr:`JobRow.asked` each row carries."""
        ids = list(job_ids)
        found: dict[str, JobRow] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))  # only '?' marks are formatted into the query
            query = _ROWS_QUERY + f"WHERE jobs.job_id IN ({marks})"
            for row in self._read(query, (source, *chunk)):
                found[row[0]] = job_row(row)
        return found

    def current_records(self, *, status: Status | None = None) -> Iterator[ManifestRecord]:
        """Each job's last record, in job id order (what ``verify`` checks); with ``status``,
        only the records of that status, picked by SQLite."""
        cursor = self._db.execute(
            "SELECT r.record FROM jobs JOIN records r ON r.seq = jobs.record_seq"
            " WHERE ?1 IS NULL OR json_extract(r.record, '$.status') = ?1 ORDER BY jobs.job_id",
            (status,),
        )
        for (text,) in cursor:
            yield ManifestRecord.model_validate_json(text)

    def failed_jobs(self, limit: int) -> tuple[list[dict[str, Any]], int]:
        """The first ``limit`` failed jobs (id, kind, message, whether a plain resume retries
        it), by id, and how many failed jobs there are in all."""
        rows = self._read(
            "SELECT jobs.job_id, json_extract(r.record, '$.error.kind'),"
            " json_extract(r.record, '$.error.message'), jobs.final"
            " FROM jobs LEFT JOIN records r ON r.seq = jobs.record_seq"
            " WHERE jobs.state = 'failed' ORDER BY jobs.job_id LIMIT ?",
            (limit,),
        )
        total = self._read("SELECT COUNT(*) FROM jobs WHERE state = 'failed'")[0][0]
        jobs = [
            {"id": job, "kind": kind, "message": message, "retried_on_resume": not final}
            for job, kind, message, final in rows
        ]
        return jobs, int(total)

    def record_lines(self, offset: int) -> Iterator[str]:
        """The manifest's lines as the database holds them, in order, skipping the first ``offset``."""
        cursor = self._db.execute("SELECT record FROM records ORDER BY seq LIMIT -1 OFFSET ?", (offset,))
        for (text,) in cursor:
            yield text if text.endswith("\n") else text + "\n"  # the first release stored no newline

    def spent_by_model(self, *, day: str | None = None) -> dict[str, Spend]:
        """What the answers charged, by model: all of them, or those of ``day`` (UTC,
        ``YYYY-MM-DD``). Exact: summed as integers, in two halves so that no sum can pass
        SQLite's 64-bit integers (each half of a million charges stays under 10**15)."""
        return {
            model: Spend(
                from_units(usd_high * _HALF + usd_low), from_units(credits_high * _HALF + credits_low)
            )
            for model, usd_high, usd_low, credits_high, credits_low in self._read(
                f"SELECT model, SUM(usd / {_HALF}), SUM(usd % {_HALF}), SUM(credits / {_HALF}),"  # noqa: S608
                f" SUM(credits % {_HALF}) FROM charges WHERE ?1 IS NULL OR day = ?1"
                " GROUP BY model ORDER BY model",
                (day,),
            )
        }

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        try:
            return self._db.execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read the state database: {exc}") from exc

    # -- writes --------------------------------------------------------------------------------

    def apply(self, events: list[Event]) -> list[BaseException | None]:
        """Apply ``events`` in one transaction; commit once.

        Returns, per event, None or the :class:`TransitionError` that refused it. A refusal
        (a bug) rolls the group back and replays it event by event, so the others still land.
        Raises :class:`StorageError` when the transaction cannot be committed (nothing of it is).
        """
        try:
            return apply_each_alone_if_refused(self._transaction, events)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot write the state database: {exc}") from exc

    def _transaction(self, events: list[Event]) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for event in events:
                EFFECTS[type(event)](self._db, event)
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise


_ROWS_QUERY = (
    "SELECT jobs.job_id, state, final, attempts, client_request_ids, answer, started_at, jobs.fingerprint,"
    " generation, r.record, CASE WHEN state = 'succeeded' THEN json_extract(r.record, '$.images') END,"
    " a.fingerprint, (SELECT group_concat(o.fingerprint, ' ') FROM asked o WHERE o.job_id = jobs.job_id)"
    " FROM jobs"
    " LEFT JOIN records r ON r.seq = jobs.record_seq"
    " LEFT JOIN asked a ON a.job_id = jobs.job_id AND a.source = ? "
)
