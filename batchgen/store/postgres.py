"""The write-ahead job state in PostgreSQL (``--state postgresql://...``), committed in groups:
the same state machine and guarded transitions as SQLite (:mod:`batchgen.store.sqlite`), in a
database a team can keep on another machine than the one that runs.

Driver: psycopg 3, used synchronously. The state backend seam is synchronous by design (every
call runs on the store's one thread, a group of events is one transaction), so asyncpg's event
loop would only be bridged back to a thread; psycopg 3 is the maintained driver with a plain
blocking API, server-side parameter binding and ``executemany`` pipelining.

Several runs of the same job file into the same output and state are *workers* of one run
(:mod:`batchgen.store.workers`): each group commit takes the database's commit lock, so records
get their ``seq`` in commit order and the manifest is a projection of the ``records`` table,
appended in that order by whichever worker holds the manifest lock (:meth:`take_manifest`). A
dispatch commits only while the job's claim is the worker's own. One database (or one schema,
through ``options=-csearch_path=...`` in the URL) per output, which the state remembers. A NUL
character (``\\u0000``) in an answer or a record becomes U+FFFD here: PostgreSQL's ``jsonb``,
which reads them, refuses it. When the connection is lost, a call reconnects and tries again for
up to :data:`~batchgen.store.pg_connection.RECONNECT_SECONDS`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from batchgen.errors import StateDatabaseError, UsageError
from batchgen.money import Spend, from_units
from batchgen.outcome import Status
from batchgen.store.events import Answered, ClaimLost, Dispatched, Event, Finished, Unanswered
from batchgen.store.ledger import LEDGER_SCHEMA
from batchgen.store.manifest import ManifestRecord
from batchgen.store.pacing import PACING_SCHEMA
from batchgen.store.pg_connection import Reconnecting, psycopg_module, without_password
from batchgen.store.postgres_effects import EFFECTS, SCHEMA
from batchgen.store.sql_state import Dialect, SqlReads
from batchgen.store.state import (
    JobRow,
    apply_each_alone_if_refused,
    job_row,
)
from batchgen.store.workers import (
    CLAIM_CHECK,
    CLAIM_HOLDER,
    WORKERS_SCHEMA,
    WorkerInfo,
    list_workers,
    possibly_billed,
)

__all__ = ["PostgresState", "is_postgres_url", "without_password"]

log = logging.getLogger(__name__)
T = TypeVar("T")

CREATE_LOCK = 0x62617464  # advisory lock keys: one creator of the tables,
COMMIT_LOCK = 0x62617463  # ... one group commit at a time (records in commit order),
MANIFEST_LOCK = 0x62617467  # ... one worker appending the manifest
NEWEST_OBJECT = "rate_log_answers"  # the schema's last-created object: where it exists, all do
OUTPUT_KEY = "output"  # meta: the --out the state belongs to
_NEVER_THERE = ("does not exist", "authentication failed", "no password supplied", "not permitted to log in")


def is_postgres_url(value: str) -> bool:
    """Whether ``--state`` names a PostgreSQL database (``postgresql://`` or ``postgres://``)."""
    return value.lower().startswith(("postgresql://", "postgres://"))


class PostgresState(SqlReads):
    """The state of one output in PostgreSQL: a :class:`~batchgen.store.state.StateBackend`.

    Every method runs on one thread. Writes happen only inside :meth:`apply` (one transaction
    for all of its events). Raises :class:`StorageError` when the database cannot be reached,
    read or written.
    """

    dialect = Dialect(
        mark="%s", by_id=' COLLATE "C"', anew="COUNT(*) FILTER (WHERE generation > 0)", no_limit=None
    )

    def __init__(self, connection: Reconnecting, *, worker_id: str | None = None) -> None:
        self._conn = connection
        self._where = connection.where  # (the URL without its password, for messages)
        self._worker_id = worker_id
        self._manifest_held_in = -1  # the connection that holds the manifest lock (its generation)
        self._committing = False  # a group's COMMIT is on its way

    @property
    def _db(self) -> Any:
        return self._conn.db

    @property
    def _manifest_held(self) -> bool:
        return self._manifest_held_in == self._conn.generation  # (a session lock goes with its connection)

    @classmethod
    def open(
        cls, url: str, *, read_only: bool = False, output: str = "", worker_id: str | None = None
    ) -> PostgresState:
        """Connect to ``url``. For a run (not ``read_only``): create the tables where missing
        and tie the state to ``output`` (the ``--out`` of its first run; another output is
        refused with :class:`UsageError`). ``worker_id``: the worker whose claims its dispatches
        must hold (:data:`~batchgen.store.workers.CLAIM_CHECK`). Raises :class:`StorageError`
        when the database cannot be reached, :class:`UsageError` when psycopg is not installed."""
        where = without_password(url)
        connection = Reconnecting(url)
        try:
            connection.run(lambda: None, doing="open", patience=0)
        except StateDatabaseError as exc:
            # (waiting will not make it exist, nor mend a URL)
            lost = isinstance(exc.__cause__, psycopg_module().OperationalError)
            if not lost or any(word in exc.message for word in _NEVER_THERE):
                raise UsageError(f"{exc.message}; fix --state or create it") from exc
            raise
        state = cls(connection, worker_id=worker_id)
        if read_only:
            return state
        try:
            with state._db.transaction():
                state._db.execute("SELECT pg_advisory_xact_lock(%s)", (CREATE_LOCK,))
                # (DDL on tables in use by other workers would wait on them, and they on it: only
                # a database without the newest object gets the schema)
                if state._db.execute("SELECT to_regclass(%s)", (NEWEST_OBJECT,)).fetchone()[0] is None:
                    state._db.execute(SCHEMA + WORKERS_SCHEMA + PACING_SCHEMA + LEDGER_SCHEMA)
                if output:
                    state._db.execute(
                        "INSERT INTO meta (key, value) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                        (OUTPUT_KEY, output),
                    )
            owner = state.get_meta(OUTPUT_KEY)
            if output and owner and owner != output:
                raise UsageError(
                    f"the state database {where} holds the run of --out {owner}, not {output}: give that"
                    " --out, or another database (one per output)"
                )
        except BaseException as exc:
            state.close()
            if isinstance(exc, psycopg_module().Error):
                raise StateDatabaseError(f"cannot open the state database {where}: {exc}".strip()) from exc
            raise
        return state

    def close(self) -> None:
        """Close the connection (everything is already committed; the manifest lock goes with it)."""
        self._conn.close()

    # -- the manifest, a projection of the records (several workers) ---------------------------

    def take_manifest(self, *, wait: float = 0.0) -> bool | None:
        """Hold the manifest lock: True when just taken (the holder then brings the manifest up
        to date), False when held already, None when another worker holds it (after waiting up
        to ``wait`` seconds for it)."""
        if self._manifest_held:
            return False
        if wait <= 0:
            taken = self._call(
                lambda: self._db.execute("SELECT pg_try_advisory_lock(%s)", (MANIFEST_LOCK,)).fetchone()[0]
            )
        else:
            taken = self._call(lambda: self._wait_for_manifest(wait))
        if not taken:
            return None
        self._manifest_held_in = self._conn.generation
        return True

    def holds_manifest(self) -> bool:
        """Whether this state's connection still holds the manifest lock (a reconnect loses it)."""
        return self._manifest_held

    def release_manifest(self) -> None:
        """Let another worker append the manifest."""
        if self._manifest_held:
            self._manifest_held_in = -1
            self._call(lambda: self._db.execute("SELECT pg_advisory_unlock(%s)", (MANIFEST_LOCK,)))

    def record_seq_at(self, offset: int) -> int:
        """The ``seq`` of the record at ``offset`` (0-based, in order), 0 for none."""
        rows = (
            self._read("SELECT seq FROM records ORDER BY seq LIMIT 1 OFFSET %s", (offset,))
            if offset >= 0
            else []
        )
        return int(rows[0][0]) if rows else 0

    def records_after(self, seq: int, *, limit: int = 1000) -> tuple[list[str], int]:
        """Up to ``limit`` manifest lines past record ``seq``, in order, and the last one's seq."""
        rows = self._read(
            "SELECT seq, record FROM records WHERE seq > %s ORDER BY seq LIMIT %s", (seq, limit)
        )
        lines = [text if text.endswith("\n") else text + "\n" for _, text in rows]
        return lines, int(rows[-1][0]) if rows else seq

    def _wait_for_manifest(self, wait: float) -> bool:
        try:
            with self._db.transaction():  # (the timeout for this wait alone)
                self._db.execute(f"SET LOCAL lock_timeout = '{int(wait * 1000)}ms'")
                self._db.execute("SELECT pg_advisory_lock(%s)", (MANIFEST_LOCK,))
        except psycopg_module().errors.LockNotAvailable:
            return False
        return True

    # -- reads ---------------------------------------------------------------------------------

    def rows(self, job_ids: Iterable[str], *, source: str = "") -> dict[str, JobRow]:
        """The rows of those of ``job_ids`` the database knows, by id (one query per 1,000 ids)."""
        ids = list(job_ids)
        found: dict[str, JobRow] = {}
        for start in range(0, len(ids), 1000):
            for row in self._read(_ROWS_QUERY, (source, ids[start : start + 1000])):
                found[row[0]] = job_row(row)
        return found

    def current_records(self, *, status: Status | None = None) -> Iterator[ManifestRecord]:
        """Each job's last record, in job id order; with ``status``, only those of that status."""
        rows = self._read(
            "SELECT r.record FROM jobs JOIN records r ON r.seq = jobs.record_seq"
            " WHERE %(status)s::text IS NULL OR r.record::jsonb ->> 'status' = %(status)s"
            ' ORDER BY jobs.job_id COLLATE "C"',
            {"status": status.value if status else None},
        )
        for (text,) in rows:
            yield ManifestRecord.model_validate_json(text)

    def failed_jobs(self, limit: int) -> tuple[list[dict[str, Any]], int]:
        """The first ``limit`` failed jobs (id, kind, message, whether a plain resume retries
        it), by id, and how many failed jobs there are in all."""
        rows = self._read(
            "SELECT jobs.job_id, r.record::jsonb #>> '{error,kind}', r.record::jsonb #>> '{error,message}',"
            " jobs.final FROM jobs LEFT JOIN records r ON r.seq = jobs.record_seq"
            """ WHERE jobs.state = 'failed' ORDER BY jobs.job_id COLLATE "C" LIMIT %s""",
            (limit,),
        )
        total = self._read("SELECT COUNT(*) FROM jobs WHERE state = 'failed'")[0][0]
        jobs = [
            {"id": job, "kind": kind, "message": message, "retried_on_resume": not final}
            for job, kind, message, final in rows
        ]
        return jobs, int(total)

    def record_lines(self, offset: int) -> Iterator[str]:
        """The manifest's lines as the database holds them, in order, skipping the first ``offset``
        (read 1,000 at a time)."""
        last = self._read("SELECT seq FROM records ORDER BY seq LIMIT 1 OFFSET %s", (offset,))
        after = last[0][0] - 1 if last else None
        while after is not None:
            rows = self._read(
                "SELECT seq, record FROM records WHERE seq > %s ORDER BY seq LIMIT 1000", (after,)
            )
            for _, text in rows:
                yield text if text.endswith("\n") else text + "\n"
            after = rows[-1][0] if len(rows) == 1000 else None  # noqa: PLR2004

    def workers(self) -> list[WorkerInfo]:
        """The latest run's workers, by start (``status``)."""
        return self._call(lambda: list_workers(self._db), doing="read")

    def possibly_billed(self) -> list[tuple[str, list[str]]]:
        """Jobs a worker that is no longer alive left dispatched: (job id, X-Client-Request-Ids)."""
        return self._call(lambda: possibly_billed(self._db), doing="read")

    def spent_by_model(self, *, day: str | None = None) -> dict[str, Spend]:
        """What the answers charged, by model: all, or those of ``day`` (UTC). Exact: PostgreSQL
        sums integers into ``numeric``."""
        return {
            model: Spend(from_units(int(usd)), from_units(int(credits)))
            for model, usd, credits in self._read(
                "SELECT model, SUM(usd), SUM(credits) FROM charges"
                " WHERE %(day)s::text IS NULL OR day = %(day)s GROUP BY model ORDER BY model",
                {"day": day},
            )
        }

    def _read(self, sql: str, params: Any = ()) -> list[Any]:
        return self._call(lambda: list(self._db.execute(sql, params).fetchall()), doing="read")

    def _call(self, work: Callable[[], T], *, doing: str = "use") -> T:
        return self._conn.run(work, doing=doing)

    # -- writes --------------------------------------------------------------------------------

    def apply(self, events: list[Event]) -> list[BaseException | None]:
        """Apply ``events`` in one transaction (see :meth:`batchgen.store.sqlite.SqliteState.apply`),
        under the commit lock. A dispatch whose claim another worker took raises
        :class:`~batchgen.store.events.ClaimLost` for that event alone. A connection lost
        before the commit is sent is reconnected and the group applied again; one lost while
        committing raises :class:`StorageError` (whether it committed is unknown: the run stops,
        and the next one reads what the state holds)."""
        return self._call(lambda: self._apply_once(events), doing="write")

    def _apply_once(self, events: list[Event]) -> list[BaseException | None]:
        self._committing = False
        try:
            return apply_each_alone_if_refused(self._transaction, events)
        except psycopg_module().OperationalError as exc:
            if self._committing:
                raise StateDatabaseError(
                    f"the connection to the state database {self._where} was lost while committing: {exc}"
                ) from exc
            raise

    def _transaction(self, events: list[Event]) -> None:
        with self._db.transaction(), self._db.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (COMMIT_LOCK,))
            for event in events:
                if self._worker_id:
                    self._check_claim(cursor, event)
                EFFECTS[type(event)](cursor, event)
            self._committing = True  # (the block's end sends COMMIT)

    def _check_claim(self, cursor: Any, event: Event) -> None:
        """A worker's job events need its claim: a dispatch, the claim and a live lease; an
        answer or a record, a claim that is not another worker's. Raises :class:`ClaimLost`."""
        if isinstance(event, Dispatched):
            cursor.execute(CLAIM_CHECK, {"job": event.job_id, "me": self._worker_id})
            if cursor.rowcount != 1:
                raise ClaimLost(f"job {event.job_id!r}: this worker's claim or lease on it ran out")
            return
        job = event.record.job_id if isinstance(event, Finished) else getattr(event, "job_id", None)
        if isinstance(event, Answered | Unanswered | Finished) and job is not None:
            holder = cursor.execute(CLAIM_HOLDER, (job,)).fetchone()
            if holder is not None and holder[0] not in (None, self._worker_id):
                raise ClaimLost(f"job {job!r}: another worker took it over (this worker's lease ran out)")


_ROWS_QUERY = (
    "SELECT jobs.job_id, state, final, attempts, client_request_ids, answer, started_at, jobs.fingerprint,"
    " generation, r.record, CASE WHEN state = 'succeeded' THEN (r.record::jsonb -> 'images')::text END,"
    " a.fingerprint, (SELECT string_agg(o.fingerprint, ' ') FROM asked o WHERE o.job_id = jobs.job_id)"
    " FROM jobs"
    " LEFT JOIN records r ON r.seq = jobs.record_seq"
    " LEFT JOIN asked a ON a.job_id = jobs.job_id AND a.source = %s"
    " WHERE jobs.job_id = ANY(%s)"
)
