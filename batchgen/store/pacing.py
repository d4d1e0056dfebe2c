"""The learned rate shared by the workers of a run (issue 22): a log of sends and answers in
the PostgreSQL state, replayed by every worker into its own
:class:`~batchgen.gates.learned.LearnedLimit` (state machine replication: every replica sees
the same sends in the same order, so each counts what the whole run sent).

A worker decides on its replica, then proposes its send in one transaction
(:meth:`RateLog.exchange`) that takes the log's lock, and is refused when the log grew since
its replica was last brought up to date: it replays what is new and decides again. So every
accepted send was decided on the whole log, as one process's limiter would have decided it. The
``--rpm`` ceiling is a GCRA over the same lock: one send per ``60 / rpm`` seconds for the whole
run. Times are the database server's (``clock_timestamp()``, seconds since the epoch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["PACING_SCHEMA", "Exchange", "LogRow", "RateLog"]

PACING_SCHEMA = """
CREATE TABLE IF NOT EXISTS rate_log (
    seq BIGSERIAL PRIMARY KEY,
    worker_id TEXT NOT NULL,
    sent_seq BIGINT,                 -- an answer: the send it answers; NULL: a send
    at DOUBLE PRECISION NOT NULL,    -- seconds since the epoch, the database's clock
    probe BOOLEAN NOT NULL DEFAULT false,
    refused BOOLEAN                  -- an answer: refused (429) or admitted
);
CREATE INDEX IF NOT EXISTS rate_log_answers ON rate_log (sent_seq);
CREATE TABLE IF NOT EXISTS pacing (run_id BIGINT PRIMARY KEY, next_at DOUBLE PRECISION NOT NULL);
"""

KEEP = 300.0  # seconds of log a new worker replays, and kept
_RATE_LOCK = 0x62617466
_ORPHANS = (
    "SELECT s.seq FROM rate_log s WHERE s.sent_seq IS NULL AND s.at > %s"
    " AND NOT EXISTS (SELECT 1 FROM rate_log a WHERE a.sent_seq = s.seq)"
    " AND NOT EXISTS (SELECT 1 FROM workers w WHERE w.worker_id = s.worker_id"
    " AND w.ended_at IS NULL AND w.until > now())"
)
_NOW = "extract(epoch from clock_timestamp())::float8"


@dataclass(frozen=True, slots=True)
class LogRow:
    """One entry of the log: a send (``sent_seq`` None) or an answer to send ``sent_seq``."""

    seq: int
    worker_id: str
    sent_seq: int | None
    at: float
    probe: bool
    refused: bool | None


@dataclass(frozen=True, slots=True)
class Exchange:
    """What one exchange gave: the entries since the replica's last (``rows``),
    the log's newest seq, the database's clock (``now``); ``sent``: the seq of the send
    accepted, or None; ``wait``: seconds the ``--rpm`` ceiling asks first."""

    rows: list[LogRow]
    last: int
    now: float
    sent: int | None = None
    wait: float = 0.0
    orphans: list[int] | None = None  # sends of workers no longer alive that no answer will come to


class RateLog:
    """The log's statements for one worker, on the psycopg connection ``connection()`` gives (autocommit)."""

    def __init__(self, connection: Callable[[], Any], worker_id: str, run_id: int) -> None:
        self._db = connection
        self.worker_id = worker_id
        self.run_id = run_id

    def exchange(
        self,
        last: int,
        answers: list[tuple[int, bool, float]],
        *,
        propose: bool | None = None,
        spacing: float = 0.0,
        orphans: bool = False,
    ) -> Exchange:
        """Add this worker's ``answers`` ((send seq, refused, at)); read the entries past
        ``last`` (``last`` 0: those of the last :data:`KEEP` seconds) but this worker's own
        sends, which it applied when they were accepted: every answer, its own too, is applied
        in the log's order, so every replica learns the same; with ``propose`` (whether the
        send is a probe), add a send when no other worker's entry came and the ceiling
        (``spacing`` seconds between sends, 0 for none) allows it; with ``orphans``, list the
        recent sends of workers no longer alive that were never answered (a killed worker's,
        a worker's last ones): replicas take them as answered."""
        with self._db().transaction():
            self._db().execute("SELECT pg_advisory_xact_lock(%s)", (_RATE_LOCK,))
            now = self._db().execute(f"SELECT {_NOW}").fetchone()[0]
            if answers:
                self._db().cursor().executemany(
                    "INSERT INTO rate_log (worker_id, sent_seq, at, refused) VALUES (%s, %s, %s, %s)",
                    [(self.worker_id, seq, at, refused) for seq, refused, at in answers],
                )
            rows = [
                LogRow(*row)
                for row in self._db().execute(
                    "SELECT seq, worker_id, sent_seq, at, probe, refused FROM rate_log"
                    " WHERE seq > %(last)s AND (%(last)s > 0 OR at > %(since)s)"
                    " AND NOT (worker_id = %(me)s AND sent_seq IS NULL) ORDER BY seq",
                    {"last": last, "since": now - KEEP, "me": self.worker_id},
                )
            ]
            sent, wait = None, 0.0
            if propose is not None and all(r.worker_id == self.worker_id for r in rows):
                wait = self._ceiling(now, spacing) if spacing else 0.0
                if wait <= 0:
                    sent = (
                        self._db()
                        .execute(
                            "INSERT INTO rate_log (worker_id, at, probe) VALUES (%s, %s, %s) RETURNING seq",
                            (self.worker_id, now, propose),
                        )
                        .fetchone()[0]
                    )
                    if sent % 1000 == 0:  # (now and then: the log keeps KEEP seconds)
                        self._db().execute("DELETE FROM rate_log WHERE at < %s", (now - KEEP,))
            newest = self._db().execute("SELECT COALESCE(MAX(seq), 0) FROM rate_log").fetchone()[0]
            dead = [row[0] for row in self._db().execute(_ORPHANS, (now - KEEP,))] if orphans else None
            return Exchange(rows, max(last, int(newest)), float(now), sent, max(0.0, wait), dead)

    def _ceiling(self, now: float, spacing: float) -> float:
        """GCRA: seconds until the run's next send may go, or 0 (then its slot is taken)."""
        self._db().execute(
            "INSERT INTO pacing (run_id, next_at) VALUES (%s, 0) ON CONFLICT DO NOTHING", (self.run_id,)
        )
        next_at = (
            self._db().execute("SELECT next_at FROM pacing WHERE run_id = %s", (self.run_id,)).fetchone()[0]
        )
        if next_at > now:
            return float(next_at - now)
        self._db().execute("UPDATE pacing SET next_at = %s WHERE run_id = %s", (now + spacing, self.run_id))
        return 0.0
