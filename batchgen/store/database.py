"""Write-ahead job state in SQLite (``DIR/.batchgen/state.sqlite3``), committed in groups.

Why SQLite and not a JSONL journal: a resume must answer "what happened to job X?" for each of
possibly millions of jobs without holding them all in memory; SQLite answers by primary key from
disk, its WAL mode with ``synchronous=FULL`` makes each commit durable and atomic (no torn
records), and it ships with Python. ``manifest.jsonl`` stays the user-facing record; it is a
projection of the ``records`` table, re-appended from it after a crash.

Job states and the moves between them are one table, :data:`TRANSITIONS`; every update names the
states it may leave (``WHERE state IN (...)``) and one that changes no row raises
:class:`TransitionError` (a bug, never a silent no-op).

This module is synchronous: :class:`StateDatabase` runs on the store's one database thread
(:mod:`batchgen.store.folder`), which applies each group of transitions in one transaction.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from batchgen.errors import BatchgenError, StorageError
from batchgen.money import Spend, from_units, to_units
from batchgen.responses import Answer
from batchgen.store.manifest import ManifestRecord, Status

__all__ = [
    "SCHEMA_VERSION",
    "TRANSITIONS",
    "Change",
    "JobRow",
    "JobState",
    "StateCounts",
    "StateDatabase",
    "TransitionError",
]

SCHEMA_VERSION = 3
"""``PRAGMA user_version`` of the layout below. 0 and 1: without the columns version 2 added
(``fingerprint``, ``generation``, ``record_seq``); 2: money summed in floats per job, no
``charges`` (exact, one row per answer charged) and no ``asked`` (what each job file last asked
of each job). Such a folder is brought up to date on open."""

_ADDED_IN_2 = (  # (column, its definition, its value in an older folder read without upgrading)
    ("fingerprint", "TEXT", "NULL"),
    ("generation", "INTEGER NOT NULL DEFAULT 0", "0"),
    ("record_seq", "INTEGER", "NULL"),
)
_FLOAT_MONEY = ("usd_spent", "credits_used", "last_usd", "last_credits")  # schema 2's, per job
_FLOAT_PLACES = Decimal("1e-9")  # schema 2 summed floats: its sums are exact to this

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
    started_at TEXT,
    fingerprint TEXT,                      -- of the request last sent (Job.fingerprint)
    generation INTEGER NOT NULL DEFAULT 0, -- times a succeeded job was generated anew
    record_seq INTEGER                     -- its last record in `records`
);
CREATE TABLE IF NOT EXISTS records (seq INTEGER PRIMARY KEY AUTOINCREMENT, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_ADDED_IN_3 = """
CREATE TABLE IF NOT EXISTS charges (       -- one row per answer whose cost headers were readable
    seq INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL,
    model TEXT NOT NULL,
    client_request_id TEXT,                -- the request answered (NULL: before schema 3)
    day TEXT NOT NULL,                     -- its UTC date, YYYY-MM-DD
    usd INTEGER NOT NULL,                  -- x-aimlapi-usd-spent in units of 10**-9 USD (money.PLACES)
    credits INTEGER NOT NULL               -- x-aimlapi-credits-used, the same units
);
CREATE INDEX IF NOT EXISTS charges_by_day ON charges (day);
CREATE TABLE IF NOT EXISTS asked (         -- what a job file last asked of a job: its fingerprint
    source TEXT NOT NULL,                  -- the job file's resolved path
    job_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    PRIMARY KEY (source, job_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS asked_by_job ON asked (job_id);
CREATE TABLE IF NOT EXISTS listing (job_id TEXT PRIMARY KEY) WITHOUT ROWID;  -- ids of the last full pass
CREATE TABLE IF NOT EXISTS listing_next (job_id TEXT PRIMARY KEY) WITHOUT ROWID;  -- ... of the pass under way
"""


_HALF = 10**9  # money units are summed as (x / _HALF, x % _HALF): each sum fits in 64 bits
LISTED = "listed"  # meta: the job file (source) whose run last judged every one of its jobs
# A job counts as the file's when its last full pass listed it, or while it is in flight (maybe charged).
_IN_FILE = "WHERE job_id IN (SELECT job_id FROM listing) OR state NOT IN ('succeeded', 'failed')"
_OUTSIDE = "WHERE state IN ('succeeded', 'failed') AND job_id NOT IN (SELECT job_id FROM listing)"
_SHOWN = 20  # ids of jobs not in the job file that counts list


class JobState(StrEnum):
    """Where a job stands."""

    PENDING = "pending"  # not sent, or sent and refused without an answer (not billed)
    DISPATCHED = "dispatched"  # committed as sent; no answer recorded yet (maybe billed)
    ANSWERED = "answered"  # generation answered and recorded; images not all saved yet
    SUCCEEDED = "succeeded"  # record committed; never sent again
    FAILED = "failed"  # record committed; ``final`` says whether a plain resume retries it


_S = JobState
TRANSITIONS: frozenset[tuple[JobState, JobState]] = frozenset(
    {
        (_S.PENDING, _S.DISPATCHED),  # first send
        (_S.DISPATCHED, _S.DISPATCHED),  # re-send of a job in flight when a run died
        (_S.FAILED, _S.DISPATCHED),  # a retryable failure re-sent, or --retry-failed
        (_S.DISPATCHED, _S.PENDING),  # refused or lost without an answer: not billed
        (_S.DISPATCHED, _S.ANSWERED),  # the paid answer, made durable before any fetch
        (_S.ANSWERED, _S.SUCCEEDED),  # every image saved
        (_S.ANSWERED, _S.FAILED),  # content violation, no image, a download that gave up
        (_S.PENDING, _S.FAILED),  # refused for good (400), or retries spent without an answer
        (_S.DISPATCHED, _S.FAILED),  # an unforeseen error between send and answer (kind internal)
        (_S.FAILED, _S.SUCCEEDED),  # a recorded answer fetched again by a resume
        (_S.FAILED, _S.FAILED),  # ... and failed again
        (_S.SUCCEEDED, _S.DISPATCHED),  # generated anew: its request changed, or --redo
        (_S.SUCCEEDED, _S.SUCCEEDED),  # a missing image fetched again from its recorded URL
    }
)
"""Every allowed ``(from, to)`` move of a job (as dask's scheduler lists its transitions)."""


@functools.cache  # (three moves per job: the table is walked once per target, not per move)
def _sources(target: JobState) -> tuple[str, ...]:
    return tuple(sorted(source.value for source, to in TRANSITIONS if to is target))


class TransitionError(BatchgenError):
    """A state update found the job in a state it may not leave that way: a bug in batchgen."""

    hint = "please report it with the log; the output folder stays resumable"


@dataclass(frozen=True, slots=True)
class JobRow:
    """One job's durable state."""

    job_id: str
    state: JobState
    final: bool
    attempts: int
    sent_ids: str  # its X-Client-Request-Ids, as stored (JSON): read only when needed
    answer: Answer | None
    started_at: str | None
    damaged: str | None = None  # why the stored answer could not be read back (the job fails alone)
    fingerprint: str | None = None  # of the request last sent; None in folders older than schema 2
    generation: int = 0  # times this job succeeded and was then generated anew
    record: str | None = None  # its last manifest record (JSON), if any
    images: str | None = None  # ... and, for a succeeded job, that record's `images` list (JSON)
    asked: str | None = None  # the fingerprint the job file being run last asked of it, if it did
    others: frozenset[str] = frozenset()  # ... and those any job file asked of it

    @property
    def client_request_ids(self) -> list[str]:
        """The ``X-Client-Request-Id`` of each request sent for it, over all runs."""
        ids: list[str] = json.loads(self.sent_ids)
        return ids

    @property
    def error_kind(self) -> str | None:
        """The kind of the error its last record holds, if any (``ContentViolation``...)."""
        error = json.loads(self.record).get("error") if self.record else None
        return error.get("kind") if isinstance(error, dict) else None


@dataclass(frozen=True, slots=True)
class StateCounts:
    """Jobs per state, the failed ones split into final and retryable; tokens in all."""

    succeeded: int = 0
    failed_final: int = 0
    failed_retryable: int = 0
    in_progress: int = 0
    total: int = 0  # jobs of the job file last run into the folder (``total_jobs``), at least those seen
    tokens_used: float = 0.0
    generated_anew: int = 0  # succeeded jobs generated again: request changed, or --redo
    spent: dict[str, Spend] = field(default_factory=dict)  # by model, every answer charged, all runs
    not_in_file: list[str] = field(default_factory=list)  # the first 20 jobs the last job file lacks
    not_in_file_count: int = 0  # ... and how many there are

    @property
    def pending(self) -> int:
        """Jobs of the job file(s) never finished nor in progress."""
        return max(
            0, self.total - self.succeeded - self.failed_final - self.failed_retryable - self.in_progress
        )

    @property
    def total_spent(self) -> Spend:
        """Spent over every model."""
        return sum(self.spent.values(), Spend())


class StateDatabase:
    """The state database of one output folder; every method runs on one thread.

    Writes happen only inside :meth:`group` (one transaction, one sync to disk for all of its
    transitions). Raises :class:`StorageError` when SQLite cannot read or write the file.
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    @classmethod
    def open(cls, path: Path, *, read_only: bool = False) -> StateDatabase:
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
                connection.executescript(_SCHEMA + _ADDED_IN_3)
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"{path} was written by a newer batchgen (state schema {version}); upgrade batchgen"
                )
            if version < SCHEMA_VERSION:
                if read_only:  # (status, plan, verify of a folder no run has upgraded yet)
                    _view_as_current(connection)
                else:
                    _upgrade(connection)
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
                answer, damaged = None, None
                try:
                    # A succeeded job's answer is not used again (a job generated anew gets a new one).
                    answer = Answer.model_validate_json(row[5]) if row[5] and row[1] != "succeeded" else None
                except ValidationError as exc:
                    damaged = f"the recorded answer cannot be read: {str(exc).splitlines()[0]}"
                found[row[0]] = JobRow(
                    row[0],
                    JobState(row[1]),
                    bool(row[2]),
                    row[3],
                    row[4],
                    answer,
                    row[6],
                    damaged,
                    row[7],
                    row[8],
                    row[9],
                    row[10],
                    row[11],
                    frozenset(row[12].split(" ")) if row[12] else frozenset(),
                )
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

    def count_records(self) -> int:
        """How many manifest records the database holds."""
        return int(self._read("SELECT COUNT(*) FROM records")[0][0])

    def record_lines(self, offset: int) -> Iterator[str]:
        """The manifest's lines as the database holds them, in order, skipping the first ``offset``."""
        cursor = self._db.execute("SELECT record FROM records ORDER BY seq LIMIT -1 OFFSET ?", (offset,))
        for (text,) in cursor:
            yield text if text.endswith("\n") else text + "\n"  # the first release stored no newline

    def in_flight(self) -> list[tuple[str, list[str]]]:
        """Jobs left ``dispatched`` (sent, no answer recorded): (job id, X-Client-Request-Ids)."""
        rows = self._read(
            "SELECT job_id, client_request_ids FROM jobs WHERE state='dispatched' ORDER BY job_id"
        )
        return [(row[0], json.loads(row[1])) for row in rows]

    def counts(self) -> StateCounts:
        """Jobs per outcome, and tokens used by every recorded answer; money over every answer
        charged. Once a run has judged every job of its file, the counts are that file's jobs
        and the others are listed in :attr:`StateCounts.not_in_file`."""
        listed = self.get_meta(LISTED) is not None
        scope = _IN_FILE if listed else ""
        totals: dict[str, int] = {}
        for state, final, count in self._read(
            f"SELECT state, final, COUNT(*) FROM jobs {scope} GROUP BY state, final"  # noqa: S608
        ):
            key = f"{state}:{int(final)}" if state == JobState.FAILED else state
            totals[key] = totals.get(key, 0) + count
        tokens, anew = self._read(
            "SELECT COALESCE(SUM(tokens_used), 0), COALESCE(SUM(generation > 0), 0) FROM jobs"
        )[0]
        outside = self.not_in_file(limit=_SHOWN) if listed else []
        outside_count = (
            self._read(f"SELECT COUNT(*) FROM jobs {_OUTSIDE}")[0][0] if listed else 0  # noqa: S608
        )
        return StateCounts(
            succeeded=totals.get(JobState.SUCCEEDED, 0),
            failed_final=totals.get("failed:1", 0),
            failed_retryable=totals.get("failed:0", 0),
            in_progress=sum(totals.get(s, 0) for s in (JobState.DISPATCHED, JobState.ANSWERED)),
            # (a folder from before job files were counted: at least the jobs it has seen finish)
            total=max(
                int(self.get_meta("total_jobs") or 0), sum(n for k, n in totals.items() if k != "pending")
            ),
            tokens_used=float(tokens),
            generated_anew=anew,
            spent=self.spent_by_model(),
            not_in_file=outside,
            not_in_file_count=outside_count,
        )

    def not_in_file(self, *, limit: int = -1) -> list[str]:
        """Finished jobs the last full pass of the job file did not list, by id (``limit``:
        at most that many; -1: all). Empty until a run has read a whole file."""
        if self.get_meta(LISTED) is None:
            return []
        return [
            job
            for (job,) in self._read(
                f"SELECT job_id FROM jobs {_OUTSIDE} ORDER BY job_id LIMIT ?",  # noqa: S608
                (limit,),
            )
        ]

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

    def request_costs(self) -> dict[str, list[Spend]]:
        """What one request of each model cost: each job's last charged answer, by model (for
        ``plan`` and the spend budget). Models never answered with a cost header are absent."""
        costs: dict[str, list[Spend]] = {}
        for model, usd, credits in self._read(
            "SELECT model, usd, credits FROM charges"
            " WHERE seq IN (SELECT MAX(seq) FROM charges GROUP BY job_id)"
        ):
            costs.setdefault(model, []).append(Spend(from_units(usd), from_units(credits)))
        return costs

    def get_meta(self, key: str) -> str | None:
        """A run-level value (e.g. ``total_jobs``), or None."""
        rows = self._read("SELECT value FROM meta WHERE key=?", (key,))
        return str(rows[0][0]) if rows else None

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        try:
            return self._db.execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read the state database: {exc}") from exc

    # -- writes --------------------------------------------------------------------------------

    def group(self, changes: list[Change]) -> list[BaseException | None]:
        """Apply ``changes`` in one transaction; commit once.

        Returns, per change, None or the :class:`TransitionError` that refused it. A refusal
        (a bug) rolls the group back and replays it change by change, so the others still land.
        Raises :class:`StorageError` when the transaction cannot be committed (nothing of it is).
        """
        try:
            try:
                self._transaction(changes)
            except TransitionError:
                outcomes: list[BaseException | None] = []
                for change in changes:
                    try:
                        self._transaction([change])
                    except TransitionError as exc:
                        outcomes.append(exc)
                    else:
                        outcomes.append(None)
                return outcomes
        except sqlite3.Error as exc:
            raise StorageError(f"cannot write the state database: {exc}") from exc
        return [None] * len(changes)

    def _transaction(self, changes: list[Change]) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for change in changes:
                change.apply(self._db)
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


def _view_as_current(db: sqlite3.Connection) -> None:
    """Read an older folder as if upgraded, writing nothing: a temporary view named ``jobs``
    (it comes before ``main.jobs`` in name lookups) adds the missing columns, and temporary
    ``charges`` and ``asked`` tables stand in for the missing ones."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
    missing = [f"{value} AS {column}" for column, _, value in _ADDED_IN_2 if column not in columns]
    if missing:
        db.execute(f"CREATE TEMP VIEW jobs AS SELECT *, {', '.join(missing)} FROM main.jobs")  # noqa: S608
    # (temp tables come first in name lookups: an empty `charges` a failed upgrade left is hidden)
    db.executescript(
        _ADDED_IN_3.replace("CREATE TABLE IF NOT EXISTS ", "CREATE TEMP TABLE IF NOT EXISTS ").replace(
            "CREATE INDEX IF NOT EXISTS ", "CREATE INDEX IF NOT EXISTS temp."
        )
    )
    _charges_from_floats(db, columns)


def _upgrade(db: sqlite3.Connection) -> None:
    """Bring a folder of schema 0 to 2 to :data:`SCHEMA_VERSION`, in one transaction: the new
    columns, each job's last record found from the ``records`` table, and schema 2's money
    (floats per job) as exact charges."""
    db.execute("BEGIN IMMEDIATE")
    try:
        columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
        for column, definition, _ in _ADDED_IN_2:
            if column not in columns:
                db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {definition}")
        last = db.execute(
            "SELECT json_extract(record, '$.job_id'), MAX(seq) FROM records GROUP BY 1"
        ).fetchall()
        db.executemany("UPDATE jobs SET record_seq=? WHERE job_id=?", [(seq, job) for job, seq in last])
        _charges_from_floats(db, columns)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _charges_from_floats(db: sqlite3.Connection, columns: set[str]) -> None:
    """Schema 2 kept each job's money as float sums: each becomes a charge of run 0 (exact to
    :data:`_FLOAT_PLACES`), its last answer's cost a charge of its own (what one request cost)."""
    if not set(_FLOAT_MONEY) <= columns:
        return
    rows = db.execute(
        "SELECT job_id, model, COALESCE(substr(started_at, 1, 10), ''), usd_spent, credits_used, last_usd,"
        " last_credits FROM jobs WHERE usd_spent IS NOT NULL OR credits_used IS NOT NULL"
    ).fetchall()
    charges = []
    for job, model, day, usd, credits, last_usd, last_credits in rows:
        total, last = _float_units(usd, credits), _float_units(last_usd, last_credits)
        earlier = (total[0] - last[0], total[1] - last[1])
        if earlier[0] > 0 or earlier[1] > 0:
            charges.append((job, model, day, *earlier))
        charges.append((job, model, day, *last))
    db.executemany("INSERT INTO charges (job_id, model, day, usd, credits) VALUES (?, ?, ?, ?, ?)", charges)


def _float_units(usd: float | None, credits: float | None) -> tuple[int, int]:
    return tuple(  # type: ignore[return-value]
        to_units(Decimal(repr(value)).quantize(_FLOAT_PLACES)) if value else 0 for value in (usd, credits)
    )


def _move(
    db: sqlite3.Connection, job_id: str, target: JobState, assignments: str, params: tuple[Any, ...]
) -> None:
    sources = _sources(target)
    marks = ",".join("?" * len(sources))
    cursor = db.execute(
        f"UPDATE jobs SET state=?{assignments} WHERE job_id=? AND state IN ({marks})",  # noqa: S608
        (target.value, *params, job_id, *sources),
    )
    if cursor.rowcount != 1:
        row = db.execute("SELECT state FROM jobs WHERE job_id=?", (job_id,)).fetchone()
        found = row[0] if row else "no row"
        raise TransitionError(f"job {job_id!r}: cannot move from {found} to {target.value}")


def _ensure_row(db: sqlite3.Connection, job_id: str, model: str, now: str | None) -> None:
    db.execute(
        "INSERT INTO jobs (job_id, model, state, started_at) VALUES (?, ?, 'pending', ?) "
        "ON CONFLICT(job_id) DO NOTHING",
        (job_id, model, now),
    )


@dataclass(frozen=True, slots=True)
class Change:
    """One write of a group: a job's transition, a record, or a run-level value.

    ``source`` (the job file being run): a dispatch records what it asked of the job.
    ``cost``: what an answer that could not be used was charged (``unanswered``). ``pairs``:
    (job id, fingerprint) for ``adopt`` and ``asked``; ``ids``: job ids for ``listing``."""

    kind: str  # dispatch, unanswered, answered, finish, answered+finish, import, adopt, asked, listing, meta
    job_id: str = ""
    model: str = ""
    client_request_id: str = ""
    now: str | None = None
    answer: Answer | None = None
    record: ManifestRecord | None = None
    record_json: str = ""
    final: bool = False
    key: str = ""
    value: str = ""
    fingerprint: str = ""
    source: str = ""
    cost: Spend | None = None
    pairs: tuple[tuple[str, str], ...] = ()
    ids: tuple[str, ...] = ()

    def apply(self, db: sqlite3.Connection) -> None:
        """Run this change's statements inside the open transaction."""
        if self.kind == "dispatch":
            _ensure_row(db, self.job_id, self.model, self.now)
            _move(
                db,
                self.job_id,
                JobState.DISPATCHED,
                # (the right-hand sides see the row as it was: `state` is the state left)
                ", final=0, attempts=attempts+1, answer=NULL, fingerprint=?,"
                " generation=generation+(state='succeeded'),"
                " client_request_ids=json_insert(client_request_ids, '$[#]', ?)",
                (self.fingerprint or None, self.client_request_id),
            )
            if self.source and self.fingerprint:
                _asked(db, self.source, ((self.job_id, self.fingerprint),))
        elif self.kind == "unanswered":
            _move(db, self.job_id, JobState.PENDING, "", ())
            _charge(db, self.job_id, self.cost)
        elif self.kind in ("answered", "answered+finish"):
            assert self.answer is not None
            _move(
                db,
                self.job_id,
                JobState.ANSWERED,
                ", answer=?, tokens_used=COALESCE(tokens_used, 0)+COALESCE(?, 0)",
                (self.answer.model_dump_json(), self.answer.tokens_used),
            )
            _charge(db, self.job_id, self.answer.cost)
            if self.kind == "answered+finish":
                self._finish(db)
        elif self.kind in ("finish", "import"):
            self._finish(db)
        elif self.kind == "adopt":
            db.executemany(
                "UPDATE jobs SET fingerprint=? WHERE job_id=? AND fingerprint IS NULL",
                [(fingerprint, job_id) for job_id, fingerprint in self.pairs],
            )
        elif self.kind == "asked":
            _asked(db, self.source, self.pairs)
        elif self.kind == "listing":
            _listing(db, self.key, self.source, self.ids)
        else:
            db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (self.key, self.value),
            )

    def _finish(self, db: sqlite3.Connection) -> None:
        record = self.record
        assert record is not None
        succeeded = record.status is Status.SUCCEEDED
        seq = db.execute("INSERT INTO records (record) VALUES (?)", (self.record_json,)).lastrowid
        if self.kind == "import":  # the database was lost: rebuilt from the manifest, row by row
            _ensure_row(db, record.job_id, record.model, record.started_at)
            db.execute(
                "UPDATE jobs SET state=?, final=?, attempts=?, record_seq=?, fingerprint=?, tokens_used=?"
                " WHERE job_id=?",
                (
                    JobState.SUCCEEDED if succeeded else JobState.FAILED,
                    self.final,
                    record.attempts,
                    seq,
                    record.request_fingerprint,
                    record.tokens_used,
                    record.job_id,
                ),
            )
            # One charge per answer: records that re-record one (a restore, a download retried
            # by a resume) share its last X-Client-Request-Id.
            _charge(
                db,
                record.job_id,
                Spend.of(record.usd_spent, record.credits_used),
                request=record.client_request_ids[-1] if record.client_request_ids else None,
                day=(record.finished_at or "")[:10] or None,
            )
            return
        _ensure_row(db, record.job_id, record.model, record.started_at)
        _move(
            db,
            record.job_id,
            JobState.SUCCEEDED if succeeded else JobState.FAILED,
            ", final=?, record_seq=?,"
            " answer=CASE WHEN ? THEN json_remove(answer, '$.images') ELSE answer END",
            (self.final and not succeeded, seq, succeeded),
        )


def _charge(
    db: sqlite3.Connection,
    job_id: str,
    cost: Spend | None,
    *,
    request: str | None = None,
    day: str | None = None,
) -> None:
    """Record what an answer to the job was charged: the request it answered (by default the
    job's last X-Client-Request-Id; one already charged is not charged again) and its UTC day
    (by default today)."""
    if cost is None:
        return
    db.execute(
        "INSERT INTO charges (job_id, model, client_request_id, day, usd, credits)"
        " SELECT job_id, model, COALESCE(?2, json_extract(client_request_ids, '$[#-1]')),"
        " COALESCE(?3, date('now')), ?4, ?5 FROM jobs WHERE job_id = ?1"
        " AND NOT EXISTS (SELECT 1 FROM charges c WHERE c.job_id = ?1"
        " AND c.client_request_id = COALESCE(?2, json_extract(jobs.client_request_ids, '$[#-1]')))",
        (job_id, request, day, to_units(cost.usd), to_units(cost.credits)),
    )


def _listing(db: sqlite3.Connection, step: str, source: str, job_ids: tuple[str, ...]) -> None:
    """A pass over the job file: ``begin``; ``ids`` seen; ``done``: they are now the file's
    (the tables swap names: no copy of a million rows)."""
    if step == "begin":
        db.execute("DELETE FROM listing_next")
    elif step == "done":
        db.execute("DROP TABLE listing")
        db.execute("ALTER TABLE listing_next RENAME TO listing")
        db.execute("CREATE TABLE listing_next (job_id TEXT PRIMARY KEY) WITHOUT ROWID")
        db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (LISTED, source),
        )
    else:
        db.executemany("INSERT OR IGNORE INTO listing_next (job_id) VALUES (?)", [(i,) for i in job_ids])


def _asked(db: sqlite3.Connection, source: str, fingerprints: tuple[tuple[str, str], ...]) -> None:
    db.executemany(
        "INSERT INTO asked (source, job_id, fingerprint) VALUES (?, ?, ?)"
        " ON CONFLICT(source, job_id) DO UPDATE SET fingerprint=excluded.fingerprint",
        [(source, job_id, fingerprint) for job_id, fingerprint in fingerprints],
    )
