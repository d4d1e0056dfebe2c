"""Spend budgets shared by the workers of a run (issue 22): reservations and settlements in the
PostgreSQL state, so N workers together stay within a cap but for what is in flight.

A budget has a scope: ``run:<id>`` (``--max-usd``, ``--max-credits``: the workers alive together
are one run) or ``day:<YYYY-MM-DD>`` (``--max-usd-per-day``). Its spend is a base (what the
output's answers had cost that day when the scope began) plus, per worker, what it reserved
and what its answers cost. A reservation fits when ``base + spent + reserved + need <= cap``
over every worker, checked and taken under one lock; a worker that dies keeps its reservations
counted (its requests may have been billed). Money is in units of 10**-9 (:mod:`batchgen.money`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["LEDGER_SCHEMA", "BudgetLedger"]

LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS budgets (
    scope TEXT PRIMARY KEY,
    base_usd BIGINT NOT NULL,
    base_credits BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS budget_shares (
    scope TEXT NOT NULL,
    worker_id TEXT NOT NULL,
    spent_usd BIGINT NOT NULL DEFAULT 0,
    spent_credits BIGINT NOT NULL DEFAULT 0,
    reserved_usd BIGINT NOT NULL DEFAULT 0,
    reserved_credits BIGINT NOT NULL DEFAULT 0,
    in_flight INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, worker_id)
);
"""

_ALIVE = (
    "EXISTS (SELECT 1 FROM workers w"
    " WHERE w.worker_id = s.worker_id AND w.ended_at IS NULL AND w.until > now())"
)


class BudgetLedger:
    """The budget statements of one worker, on the psycopg connection ``connection()`` gives (autocommit)."""

    def __init__(self, connection: Callable[[], Any], worker_id: str) -> None:
        self._db = connection
        self.worker_id = worker_id

    def begin(self, scope: str, base: tuple[int, int]) -> None:
        """Start ``scope`` with ``base`` (usd, credits units) unless it is started already."""
        self._db().execute(
            "INSERT INTO budgets (scope, base_usd, base_credits) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
            (scope, *base),
        )

    def reserve(
        self, scope: str, need: tuple[int, int], cap: tuple[int | None, int | None]
    ) -> tuple[bool, tuple[int, int], int]:
        """Set ``need`` aside when it fits under ``cap`` (None: no cap in that currency): (whether
        it did, the scope's spend and reservations so far, other live workers' requests in
        flight)."""
        with self._db().transaction():
            self._db().execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (scope,))
            usd, credits, others = (
                self._db()
                .execute(
                    "SELECT b.base_usd + COALESCE(SUM(s.spent_usd + s.reserved_usd), 0),"  # noqa: S608 - (ours)
                    " b.base_credits + COALESCE(SUM(s.spent_credits + s.reserved_credits), 0),"
                    f" COALESCE(SUM(s.in_flight) FILTER (WHERE s.worker_id <> %s AND {_ALIVE}), 0)"
                    " FROM budgets b LEFT JOIN budget_shares s ON s.scope = b.scope WHERE b.scope = %s"
                    " GROUP BY b.base_usd, b.base_credits",
                    (self.worker_id, scope),
                )
                .fetchone()
            )
            fits = all(
                limit is None or total + n <= limit
                for total, n, limit in zip((usd, credits), need, cap, strict=True)
            )
            if fits:
                self._db().execute(
                    "INSERT INTO budget_shares (scope, worker_id, reserved_usd, reserved_credits, in_flight)"
                    " VALUES (%s, %s, %s, %s, 1) ON CONFLICT (scope, worker_id) DO UPDATE SET"
                    " reserved_usd = budget_shares.reserved_usd + excluded.reserved_usd,"
                    " reserved_credits = budget_shares.reserved_credits + excluded.reserved_credits,"
                    " in_flight = budget_shares.in_flight + 1",
                    (scope, self.worker_id, *need),
                )
            return fits, (int(usd), int(credits)), int(others)

    def settle(self, scope: str, reserved: tuple[int, int], cost: tuple[int, int]) -> None:
        """Replace a reservation by what the answer cost."""
        self._db().execute(
            "UPDATE budget_shares SET reserved_usd = reserved_usd - %s,"
            " reserved_credits = reserved_credits - %s, spent_usd = spent_usd + %s,"
            " spent_credits = spent_credits + %s, in_flight = in_flight - 1"
            " WHERE scope = %s AND worker_id = %s",
            (*reserved, *cost, scope, self.worker_id),
        )
