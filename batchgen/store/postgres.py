"""The write-ahead job state in PostgreSQL (``--state postgresql://...``), committed in groups:
the same state machine and guarded transitions as SQLite (:mod:`batchgen.store.sqlite`), in a
database a team can keep on another machine than the one that runs.

Driver: psycopg 3, used synchronously. The state backend seam is synchronous by design (every
call runs on the store's one thread, a group of events is one transaction), so asyncpg's event
loop would only be bridged back to a thread; psycopg 3 is the maintained driver with a plain
blocking API, server-side parameter binding and ``executemany`` pipelining.

This backend serves one run at a time, as SQLite does: a run holds a session advisory lock on
the database, so a second run on the same state is refused whatever its output or host; one
database (or one schema, through ``options=-csearch_path=...`` in the URL) per output, which the
state remembers. A NUL character (``\\u0000``) in an answer or a record becomes U+FFFD here:
PostgreSQL's ``jsonb``, which reads them, refuses it. Workers sharing one run through it
(claims, leases, a shared rate and budget) are the next step (issue 22).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from batchgen.errors import OutputLockedError, StorageError, UsageError
from batchgen.money import Spend, from_units
from batchgen.outcome import Status
from batchgen.store.events import Event
from batchgen.store.manifest import ManifestRecord
from batchgen.store.postgres_effects import EFFECTS, SCHEMA
from batchgen.store.sql_state import Dialect, SqlReads
from batchgen.store.state import (
    JobRow,
    apply_each_alone_if_refused,
    job_row,
)

__all__ = ["RUN_LOCK", "PostgresState", "is_postgres_url", "without_password"]

RUN_LOCK = 0x62617463  # the advisory lock key a run holds on its state database ("batc")
OUTPUT_KEY = "output"  # meta: the --out the state belongs to


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

    def __init__(self, connection: Any, where: str) -> None:
        self._db = connection
        self._where = where  # the URL without its password, for messages

    @classmethod
    def open(cls, url: str, *, read_only: bool = False, output: str = "") -> PostgresState:
        """Connect to ``url``. For a run (not ``read_only``): create the tables where missing,
        take the database's run lock (a session advisory lock, held until :meth:`close`: a
        second run on the same state, from any output or host, gets
        :class:`~batchgen.errors.OutputLockedError`), and tie the state to ``output`` (the
        ``--out`` of its first run; another output is refused with :class:`UsageError`).
        Raises :class:`StorageError` when the database cannot be reached, :class:`UsageError`
        when psycopg is not installed."""
        try:
            import psycopg  # noqa: PLC0415 - only a PostgreSQL state loads the driver
        except ImportError as exc:
            raise UsageError(
                "--state postgresql://... needs psycopg: pip install 'batchgen[postgres]'"
            ) from exc

        where = without_password(url)
        try:
            connection = psycopg.connect(url, autocommit=True, connect_timeout=10)
            # (each commit durable before the write-ahead order goes on, whatever the server's default;
            # job ids in byte order, as SQLite sorts them)
            connection.execute("SET synchronous_commit = on")
        except psycopg.Error as exc:
            raise StorageError(f"cannot open the state database {where}: {exc}".strip()) from exc
        state = cls(connection, where)
        if read_only:
            return state
        try:
            if not connection.execute("SELECT pg_try_advisory_lock(%s)", (RUN_LOCK,)).fetchone()[0]:
                raise OutputLockedError(f"the state database {where} is in use by another batchgen run")
            with connection.transaction():
                connection.execute("SELECT pg_advisory_xact_lock(%s)", (RUN_LOCK + 1,))  # (one creator)
                connection.execute(SCHEMA)
            owner = state.get_meta(OUTPUT_KEY)
            if owner is None and output:
                connection.execute("INSERT INTO meta (key, value) VALUES (%s, %s)", (OUTPUT_KEY, output))
            elif output and owner != output:
                raise UsageError(f"the state database {where} holds the run of --out {owner}, not {output}")
        except psycopg.Error as exc:
            connection.close()
            raise StorageError(f"cannot open the state database {where}: {exc}".strip()) from exc
        except BaseException:
            connection.close()
            raise
        return state

    def close(self) -> None:
        """Close the connection (everything is already committed)."""
        self._db.close()

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
        import psycopg  # noqa: PLC0415

        try:
            return list(self._db.execute(sql, params).fetchall())
        except psycopg.Error as exc:
            raise StorageError(f"cannot read the state database {self._where}: {exc}") from exc

    # -- writes --------------------------------------------------------------------------------

    def apply(self, events: list[Event]) -> list[BaseException | None]:
        """Apply ``events`` in one transaction (see :meth:`batchgen.store.sqlite.SqliteState.apply`)."""
        import psycopg  # noqa: PLC0415

        try:
            return apply_each_alone_if_refused(self._transaction, events)
        except psycopg.Error as exc:
            raise StorageError(f"cannot write the state database {self._where}: {exc}") from exc

    def _transaction(self, events: list[Event]) -> None:
        with self._db.transaction(), self._db.cursor() as cursor:
            for event in events:
                EFFECTS[type(event)](cursor, event)


def without_password(url: str) -> str:
    """``url`` with its password dropped, from the user part and from the query (for messages
    and files)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        credentials, host = netloc.rsplit("@", 1)
        netloc = f"{credentials.split(':', 1)[0]}@{host}"
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = (
        urlencode([(k, v) for k, v in pairs if k != "password"], safe="/")
        if any(k == "password" for k, _ in pairs)
        else parts.query
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


_ROWS_QUERY = (
    "SELECT jobs.job_id, state, final, attempts, client_request_ids, answer, started_at, jobs.fingerprint,"
    " generation, r.record, CASE WHEN state = 'succeeded' THEN (r.record::jsonb -> 'images')::text END,"
    " a.fingerprint, (SELECT string_agg(o.fingerprint, ' ') FROM asked o WHERE o.job_id = jobs.job_id)"
    " FROM jobs"
    " LEFT JOIN records r ON r.seq = jobs.record_seq"
    " LEFT JOIN asked a ON a.job_id = jobs.job_id AND a.source = %s"
    " WHERE jobs.job_id = ANY(%s)"
)
