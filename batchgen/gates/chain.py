"""A run's gates, built in one place (as aiometer builds its meters): the order of the chain
every generation request passes, and the one of downloads.

Order: the retry quota first (a retry that may not happen waits for nothing), the learned rate
and the ``--rpm`` ceiling, then the budgets (last to reserve: nothing is set aside while a
request waits for its rate), then the meters that only watch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from batchgen.gates import Gate, Gates
from batchgen.gates.budget import SharedBudgets, budget_gates
from batchgen.gates.learned import LearnedLimit
from batchgen.gates.meters import RetryAfterMemo, SendMeter
from batchgen.gates.quota import RetryQuota
from batchgen.gates.rate import RateCeiling
from batchgen.gates.shared import RateExchange, SharedLimit
from batchgen.outcome import Tally
from batchgen.settings import Settings

if TYPE_CHECKING:
    from batchgen.store import OutputFolder

__all__ = ["RunGates", "SharedRun", "run_gates"]


class SharedRun(RateExchange, SharedBudgets, Protocol):
    """What a worker of a shared run passes its gates through (its
    :class:`~batchgen.store.coordinator.Coordinator`)."""


@dataclass(frozen=True, slots=True)
class RunGates:
    """The chains (``generation``, ``download``) and the gates others read: the learned
    ``rate``, the ``meter`` of what was sent, the latest ``retry_after``."""

    generation: Gates
    download: Gates
    rate: LearnedLimit
    meter: SendMeter
    retry_after: RetryAfterMemo


async def run_gates(
    settings: Settings, folder: OutputFolder, tally: Tally, shared: SharedRun | None = None
) -> RunGates:
    """Every gate of a run of ``settings`` into ``folder``; ``tally``: where the meter counts
    what answers were charged; ``shared``: the seat of a worker of a shared run, through which
    the rate, the ``--rpm`` ceiling and the budgets are the whole run's. Raises
    :class:`~batchgen.errors.StorageError` (the budgets read the folder's recorded costs)."""
    quota = RetryQuota(settings.retry_budget)
    meter = SendMeter(tally)
    retry_after = RetryAfterMemo()
    gates: list[Gate] = [quota]
    if shared is not None:
        limit = SharedLimit(shared, rpm=settings.rpm)
        rate = limit.learner
        gates.append(limit)
    else:
        rate = LearnedLimit()
        gates.append(rate)
        if settings.rpm is not None:
            gates.append(RateCeiling(settings.rpm))
    gates += await budget_gates(settings, folder, shared)
    gates += [retry_after, meter]
    return RunGates(Gates(*gates), Gates(quota), rate, meter, retry_after)
