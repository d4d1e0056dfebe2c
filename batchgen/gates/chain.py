"""A run's gates, built in one place (as aiometer builds its meters): the order of the chain
every generation request passes, and the one of downloads.

Order: the retry quota first (a retry that may not happen waits for nothing), the learned rate
and the ``--rpm`` ceiling, then the budgets (last to reserve: nothing is set aside while a
request waits for its rate), then the meters that only watch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from batchgen.gates import Gate, Gates
from batchgen.gates.budget import budget_gates
from batchgen.gates.learned import LearnedLimit
from batchgen.gates.meters import RetryAfterMemo, SendMeter
from batchgen.gates.quota import RetryQuota
from batchgen.gates.rate import RateCeiling
from batchgen.outcome import Tally
from batchgen.settings import Settings

if TYPE_CHECKING:
    from batchgen.store import OutputFolder

__all__ = ["RunGates", "run_gates"]


@dataclass(frozen=True, slots=True)
class RunGates:
    """The chains (``generation``, ``download``) and the gates others read: the learned
    ``rate``, the ``meter`` of what was sent, the latest ``retry_after``."""

    generation: Gates
    download: Gates
    rate: LearnedLimit
    meter: SendMeter
    retry_after: RetryAfterMemo


async def run_gates(settings: Settings, folder: OutputFolder, tally: Tally) -> RunGates:
    """Every gate of a run of ``settings`` into ``folder``; ``tally``: where the meter counts
    what answers were charged. Raises :class:`~batchgen.errors.StorageError` (the budgets read
    the folder's recorded costs)."""
    quota = RetryQuota(settings.retry_budget)
    rate = LearnedLimit()
    meter = SendMeter(tally)
    retry_after = RetryAfterMemo()
    gates: list[Gate] = [quota, rate]
    if settings.rpm is not None:
        gates.append(RateCeiling(settings.rpm))
    gates += await budget_gates(settings, folder)
    gates += [retry_after, meter]
    return RunGates(Gates(*gates), Gates(quota), rate, meter, retry_after)
