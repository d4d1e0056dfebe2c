"""Workers of one run sharing a PostgreSQL state (``--state postgresql://...``, issue 22): who is
alive, which jobs each has claimed, and what may be re-sent.

Every ``batchgen run FILE --out OUT --state postgresql://...`` process is a worker. Workers that
overlap in time are one run (they share its budget: :mod:`batchgen.store.ledger`). A worker:

* **registers** (``workers``: host, pid, a lease ``until`` by the database server's clock) and
  renews its lease every ``lease / 6`` seconds (its heartbeat);
* **claims** jobs in batches before judging them (``claims``: one row per job, its worker),
  ``FOR UPDATE SKIP LOCKED`` as procrastinate and pgqueuer claim theirs: a job claimed by a live
  worker is skipped, one whose worker's lease ran out is taken over;
* never takes over a job its dead worker had **dispatched**: its outcome is unknown (it may have
  been billed), so it stays *possibly billed* (``status`` lists it with its
  ``X-Client-Request-Id``) until the user re-sends it (``--resend-possibly-billed``) or settles it
  against the usage logs. That is what keeps "never pay twice" true across hosts, where a task
  queue's at-least-once redelivery would pay twice;
* sends a job only while its claim is its own and its lease holds: the dispatch's transaction
  checks both (:data:`CLAIM_CHECK`), and an answer or a record of a job another worker took
  over is refused, so a worker whose lease ran out while it was cut off can neither send a job
  another worker took over nor record it twice. A lease that ran out is never renewed: the
  worker stops (:meth:`WorkerRegistry.beat`).

All times are the database server's (``now()``): hosts' clocks do not matter.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CLAIM_CHECK",
    "CLAIM_HOLDER",
    "LEASE_SECONDS",
    "WORKERS_SCHEMA",
    "Claimed",
    "WorkerInfo",
    "WorkerRegistry",
    "list_workers",
    "new_worker_id",
    "possibly_billed",
]

LEASE_SECONDS = 30.0
"""A worker's lease: its claims pass to the others this long after its last heartbeat."""

WORKERS_SCHEMA = """
CREATE SEQUENCE IF NOT EXISTS run_ids;
CREATE TABLE IF NOT EXISTS workers (
    worker_id TEXT PRIMARY KEY,
    run_id BIGINT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    beat_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    until TIMESTAMPTZ NOT NULL,
    ended_at TIMESTAMPTZ
);
CREATE TABLE IF NOT EXISTS claims (
    job_id TEXT PRIMARY KEY,
    worker_id TEXT,
    claimed_at TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS claims_by_worker ON claims (worker_id);
"""
"""The coordination tables (created with the state's own, under its creator lock)."""

_ALIVE = "w.ended_at IS NULL AND w.until > now()"
_TAKEABLE = (
    "(c.worker_id IS NULL OR c.worker_id = %(me)s OR NOT EXISTS"  # noqa: S608 - (ours)
    f" (SELECT 1 FROM workers w WHERE w.worker_id = c.worker_id AND {_ALIVE}))"
)

CLAIM_CHECK = (
    "UPDATE claims SET claimed_at = now() WHERE job_id = %(job)s AND worker_id = %(me)s"
    " AND EXISTS (SELECT 1 FROM workers w"
    " WHERE w.worker_id = %(me)s AND w.ended_at IS NULL AND w.until > now())"
)
"""Run in a dispatch's transaction: one row when the job is still this worker's and its lease
holds (it locks the claim until the dispatch commits, so no other worker takes it over
meanwhile)."""

CLAIM_HOLDER = "SELECT worker_id FROM claims WHERE job_id = %s FOR UPDATE"
"""Run in the transaction of a job's answer or record: who holds the job (None: no claim, as
for a job whose lost image is fetched again)."""


def new_worker_id() -> str:
    """``<host>-<pid>-<random>``: unique per process, readable in ``status``."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(frozen=True, slots=True)
class Claimed:
    """What a claim of a batch of jobs gave: ``mine`` (now this worker's), ``possibly_billed``
    (dispatched by a worker that died: not taken), the rest is held by live workers."""

    mine: list[str]
    possibly_billed: list[str]


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One worker as ``status`` shows it (times: ISO 8601, the database's clock; ``alive``:
    its lease holds; ``claims``: jobs it holds that are not finished)."""

    worker_id: str
    host: str
    pid: int
    started_at: str
    beat_at: str
    until: str
    ended_at: str | None
    alive: bool
    claims: int


class WorkerRegistry:
    """The coordination statements of one worker, on the psycopg connection ``connection()``
    gives (autocommit; each method one transaction). Every method runs on the caller's thread
    and raises what psycopg raises (the caller turns it into a
    :class:`~batchgen.errors.StorageError`)."""

    def __init__(
        self, connection: Callable[[], Any], worker_id: str, *, lease: float = LEASE_SECONDS
    ) -> None:
        self._db = connection
        self.worker_id = worker_id
        self.lease = lease
        self.run_id = 0

    def register(self) -> int:
        """Join the live workers' run (or start a new one when none is alive): the run's id."""
        me = {"me": self.worker_id, "lease": self.lease}
        with self._db().transaction():
            self._db().execute("SELECT pg_advisory_xact_lock(%s)", (_REGISTRY_LOCK,))
            row = (
                self._db()
                .execute(
                    f"SELECT run_id FROM workers w WHERE {_ALIVE} ORDER BY started_at LIMIT 1"  # noqa: S608
                )
                .fetchone()
            )
            self.run_id = row[0] if row else self._db().execute("SELECT nextval('run_ids')").fetchone()[0]
            self._db().execute(
                "INSERT INTO workers (worker_id, run_id, host, pid, until)"
                " VALUES (%(me)s, %(run)s, %(host)s, %(pid)s, now() + make_interval(secs => %(lease)s))",
                me | {"run": self.run_id, "host": socket.gethostname(), "pid": os.getpid()},
            )
        return int(self.run_id)

    def beat(self) -> bool:
        """Renew the lease (the heartbeat): False when it had run out (the others may have taken
        this worker's jobs over; it is not renewed)."""
        renewed = self._db().execute(
            "UPDATE workers SET beat_at = now(), until = now() + make_interval(secs => %s)"
            " WHERE worker_id = %s AND ended_at IS NULL AND until > now()",
            (self.lease, self.worker_id),
        )
        return bool(renewed.rowcount == 1)

    def end(self) -> None:
        """Leave the run: this worker's claims pass to the others at once (a job it left
        dispatched stays possibly billed)."""
        self._db().execute(
            "UPDATE workers SET ended_at = now(), until = now() WHERE worker_id = %s", (self.worker_id,)
        )

    def claim(self, job_ids: list[str], *, resend: bool = False) -> Claimed:
        """Claim those of ``job_ids`` no live worker holds (one transaction, ``SKIP LOCKED``).
        ``resend``: take jobs a dead worker left dispatched too (the user's say-so)."""
        self._db().execute(
            "INSERT INTO claims (job_id) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING", (job_ids,)
        )
        with self._db().transaction():
            free = [
                row[0]
                for row in self._db().execute(
                    f"SELECT c.job_id FROM claims c WHERE c.job_id = ANY(%(ids)s) AND {_TAKEABLE}"  # noqa: S608
                    " FOR UPDATE OF c SKIP LOCKED",
                    {"ids": job_ids, "me": self.worker_id},
                )
            ]
            return self._take(free, resend=resend)

    def take_over(self, limit: int, *, foreign: list[str] | None = None) -> list[str]:
        """Claim up to ``limit`` jobs whose worker died or left with work unsent (not finished,
        not dispatched), by job id; not those of ``foreign`` (jobs this worker's job file lacks)."""
        with self._db().transaction():
            free = [
                row[0]
                for row in self._db().execute(
                    "SELECT c.job_id FROM claims c LEFT JOIN jobs j ON j.job_id = c.job_id"  # noqa: S608 - (ours)
                    f" WHERE {_TAKEABLE} AND (c.worker_id IS DISTINCT FROM %(me)s)"
                    " AND (j.state IS NULL OR j.state IN ('pending', 'answered'))"
                    " AND NOT (c.job_id = ANY(%(foreign)s))"
                    ' ORDER BY c.job_id COLLATE "C" LIMIT %(limit)s FOR UPDATE OF c SKIP LOCKED',
                    {"me": self.worker_id, "limit": limit, "foreign": foreign or []},
                )
            ]
            return self._take(free, resend=False).mine

    def release(self, job_ids: list[str]) -> None:
        """Give claims back (jobs this worker cannot run: its job file lacks them)."""
        self._db().execute(
            "UPDATE claims SET worker_id = NULL WHERE worker_id = %s AND job_id = ANY(%s)",
            (self.worker_id, job_ids),
        )

    def others_busy(self) -> int:
        """Jobs other live workers hold and have not finished."""
        row = (
            self._db()
            .execute(
                "SELECT COUNT(*) FROM claims c JOIN workers w ON w.worker_id = c.worker_id"  # noqa: S608 - (ours)
                " LEFT JOIN jobs j ON j.job_id = c.job_id"
                f" WHERE c.worker_id <> %s AND {_ALIVE}"
                " AND (j.state IS NULL OR j.state IN ('pending', 'dispatched', 'answered'))",
                (self.worker_id,),
            )
            .fetchone()
        )
        return int(row[0])

    def _take(self, free: list[str], *, resend: bool) -> Claimed:
        # (a new statement: it sees a dispatch committed while this transaction waited for its rows)
        sent = {
            row[0]
            for row in self._db().execute(
                "SELECT job_id FROM jobs WHERE job_id = ANY(%s) AND state = 'dispatched'", (free,)
            )
        }
        mine = [job for job in free if resend or job not in sent]
        self._db().execute(
            "UPDATE claims SET worker_id = %s, claimed_at = now() WHERE job_id = ANY(%s)",
            (self.worker_id, mine),
        )
        return Claimed(mine, [job for job in free if job in sent and not resend])


def list_workers(connection: Any) -> list[WorkerInfo]:
    """Every worker of the latest run, by start (for ``status``)."""
    rows = connection.execute(
        "SELECT w.worker_id, w.host, w.pid, w.started_at, w.beat_at, w.until, w.ended_at,"  # noqa: S608 - (ours)
        f" ({_ALIVE}),"
        " (SELECT COUNT(*) FROM claims c LEFT JOIN jobs j ON j.job_id = c.job_id"
        "  WHERE c.worker_id = w.worker_id AND (j.state IS NULL OR j.state NOT IN ('succeeded', 'failed')))"
        " FROM workers w WHERE w.run_id = (SELECT MAX(run_id) FROM workers) ORDER BY w.started_at"
    ).fetchall()
    return [
        WorkerInfo(
            worker_id=r[0],
            host=r[1],
            pid=r[2],
            started_at=r[3].isoformat(),
            beat_at=r[4].isoformat(),
            until=r[5].isoformat(),
            ended_at=r[6].isoformat() if r[6] else None,
            alive=bool(r[7]),
            claims=int(r[8]),
        )
        for r in rows
    ]


def possibly_billed(connection: Any) -> list[tuple[str, list[str]]]:
    """Jobs left dispatched by a worker that is no longer alive: (job id, X-Client-Request-Ids)."""
    rows = connection.execute(
        "SELECT j.job_id, j.client_request_ids FROM jobs j LEFT JOIN claims c ON c.job_id = j.job_id"  # noqa: S608 - (ours)
        " WHERE j.state = 'dispatched' AND NOT EXISTS (SELECT 1 FROM workers w"
        f" WHERE w.worker_id = c.worker_id AND {_ALIVE})"
        ' ORDER BY j.job_id COLLATE "C"'
    ).fetchall()
    return [(job, json.loads(ids)) for job, ids in rows]


_REGISTRY_LOCK = 0x62617465  # the advisory lock joining or starting a run
