"""The reads both SQL state backends make in the same SQL but for its dialect (placeholders, the
order of job ids, counting by a condition): :class:`SqlReads`, which :class:`SqliteState` and
:class:`PostgresState` extend with what differs (JSON access, paging, exact money sums, writes).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from batchgen.money import Spend, from_units
from batchgen.store.layout import Meta
from batchgen.store.state import SHOWN_NOT_IN_FILE, StateCounts, state_counts

__all__ = ["IN_FILE", "OUTSIDE", "Dialect", "SqlReads"]

# A job counts as the file's when its last full pass listed it, or while it is in flight (maybe charged).
IN_FILE = "WHERE job_id IN (SELECT job_id FROM listing) OR state NOT IN ('succeeded', 'failed')"
OUTSIDE = "WHERE state IN ('succeeded', 'failed') AND job_id NOT IN (SELECT job_id FROM listing)"


@dataclass(frozen=True, slots=True)
class Dialect:
    """What a SQL backend's reads spell differently."""

    mark: str  # a query parameter: "?" (sqlite3) or "%s" (psycopg)
    by_id: str  # how job ids sort in byte order: "" or ' COLLATE "C"'
    anew: str  # the count of jobs generated anew
    no_limit: int | None  # LIMIT's value for "no limit"


class SqlReads(ABC):
    """Reads of a SQL state, for backends whose :meth:`_read` runs a query of :attr:`dialect`."""

    dialect: ClassVar[Dialect]

    @abstractmethod
    def _read(self, sql: str, params: Any = ()) -> list[Any]:
        """The rows of ``sql``; raises :class:`~batchgen.errors.StorageError`."""

    @abstractmethod
    def spent_by_model(self, *, day: str | None = None) -> dict[str, Spend]:
        """What the answers charged, by model (see the state Protocol)."""

    def count_records(self) -> int:
        """How many manifest records the database holds."""
        return int(self._read("SELECT COUNT(*) FROM records")[0][0])

    def in_flight(self) -> list[tuple[str, list[str]]]:
        """Jobs left ``dispatched`` (sent, no answer recorded): (job id, X-Client-Request-Ids)."""
        rows = self._read(
            "SELECT job_id, client_request_ids FROM jobs WHERE state='dispatched'"  # noqa: S608 - (ours)
            f" ORDER BY job_id{self.dialect.by_id}"
        )
        return [(row[0], json.loads(row[1])) for row in rows]

    def counts(self) -> StateCounts:
        """Jobs per outcome, and tokens used by every recorded answer; money over every answer
        charged. Once a run has judged every job of its file, the counts are that file's jobs
        and the others are listed in :attr:`StateCounts.not_in_file`."""
        listed = self.get_meta(Meta.LISTED) is not None
        scope = IN_FILE if listed else ""
        by_state = self._read(f"SELECT state, final, COUNT(*) FROM jobs {scope} GROUP BY state, final")  # noqa: S608
        tokens, anew = self._read(f"SELECT COALESCE(SUM(tokens_used), 0), {self.dialect.anew} FROM jobs")[0]  # noqa: S608
        return state_counts(
            by_state,
            total_jobs=int(self.get_meta(Meta.TOTAL_JOBS) or 0),
            tokens=tokens,
            anew=anew,
            spent=self.spent_by_model(),
            outside=self.not_in_file(limit=SHOWN_NOT_IN_FILE) if listed else [],
            outside_count=self._read(f"SELECT COUNT(*) FROM jobs {OUTSIDE}")[0][0] if listed else 0,  # noqa: S608
        )

    def not_in_file(self, *, limit: int = -1) -> list[str]:
        """Finished jobs the last full pass of the job file did not list, by id (``limit``:
        at most that many; -1: all). Empty until a run has read a whole file."""
        if self.get_meta(Meta.LISTED) is None:
            return []
        d = self.dialect
        query = f"SELECT job_id FROM jobs {OUTSIDE} ORDER BY job_id{d.by_id} LIMIT {d.mark}"  # noqa: S608
        return [job for (job,) in self._read(query, (d.no_limit if limit < 0 else limit,))]

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
        rows = self._read(f"SELECT value FROM meta WHERE key={self.dialect.mark}", (key,))  # noqa: S608
        return str(rows[0][0]) if rows else None
