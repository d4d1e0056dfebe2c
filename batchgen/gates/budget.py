"""Spend budgets (``--max-usd``, ``--max-credits`` per run; ``--max-usd-per-day`` per folder):
gates that stop dispatching before the next request could pass them.

The API reports what each request cost in its ``x-aimlapi-usd-spent`` and
``x-aimlapi-credits-used`` headers (NOTES.md, "Request tracing and cost headers"), and bills no
failed request. Before a request goes, a budget sets aside what one request of its model is
expected to cost: the highest cost recorded for that model so far (in this folder, then in this
run). When the answer comes, the reservation is replaced by what its headers say, whatever its
status or body. A model that never reported a cost is sent one request at a time until it has;
a model whose answer came back *without* a readable cost cannot be held to a budget: its next
request stops the run (:class:`~batchgen.errors.BudgetReached`) unless a worst-case price was
given (``--assume-usd``, ``--assume-credits``), which then stands in for every such answer. A
request whose expected cost no longer fits waits for requests in flight to settle, then, if it
still does not fit, stops the run. So what is spent passes a budget by at most the difference
between what requests in flight cost and what was expected of them.

Workers of one run (a PostgreSQL state, issue 22) share their budgets through a ledger
(:mod:`batchgen.store.ledger`): a reservation fits when the run's spend and reservations over
every worker leave room, and a worker waits while other live workers have requests in flight.
So N workers together pass a budget by no more than what is in flight, as one run would.

Example::

    budget = Budget(max_usd=Decimal("5"), known={"reve/create-image": Spend(Decimal("0.04"))})
    gates = Gates(RetryQuota(), LearnedLimit(), budget)
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol

from batchgen.errors import BudgetReached, RequestCapReached, RequestError
from batchgen.gates import Gate, Send
from batchgen.money import Spend, from_units, to_units, usd
from batchgen.settings import Settings

if TYPE_CHECKING:
    from batchgen.store import OutputFolder

__all__ = ["Budget", "BudgetLedger", "RequestCap", "SharedBudgets", "budget_gates"]

_NONE = Decimal("Infinity")
POLL_SECONDS = 0.5  # how often a worker waiting on other workers' requests looks again

Units = tuple[int, int]  # (USD, credits) in units of 10**-9 (money.to_units)


class BudgetLedger(Protocol):
    """The ledger workers share budgets through (:class:`batchgen.store.coordinator.Coordinator`)."""

    async def reserve(
        self, scope: str, need: Units, cap: tuple[int | None, int | None]
    ) -> tuple[bool, Units, int]:
        """Set ``need`` aside under ``cap``: (whether it fit, the scope's spend and reservations,
        other live workers' requests in flight)."""
        ...

    def settle(self, scope: str, reserved: Units, cost: Units) -> None:
        """Replace a reservation by a cost."""
        ...


def _units(spend: Spend) -> Units:
    return to_units(spend.usd), to_units(spend.credits)


class Budget:
    """One spend budget: ``max_usd`` (USD) and/or ``max_credits`` (credits), either None for no
    limit; ``before``: what was already spent against it (a daily cap's earlier runs today);
    ``scope`` names it in messages ("of this run", "of today in this folder").
    ``known``: the highest cost of one request per model, from the folder. ``assumed``: the
    worst-case cost of one request of a model whose answers carry no readable cost header.
    ``spent`` is what this run's answers cost against it so far (``before`` included).
    ``ledger`` and ``scope``: the ledger the run's workers share it through, and its name
    there (then ``spent`` is the whole run's, as of the last reservation)."""

    def __init__(
        self,
        *,
        max_usd: Decimal | None = None,
        max_credits: Decimal | None = None,
        known: dict[str, Spend] | None = None,
        assumed: Spend | None = None,
        before: Spend | None = None,
        scope: str = "of this run",
        ledger: BudgetLedger | None = None,
        ledger_scope: str = "",
    ) -> None:
        self.limit = Spend(
            _NONE if max_usd is None else max_usd, _NONE if max_credits is None else max_credits
        )
        self.spent = before or Spend()
        self.scope = scope
        self._assumed = assumed
        self._reserved = Spend()
        self._in_flight = 0
        self._expected = dict(known or {})
        self._unpriced: set[str] = set()  # models with a request out and no cost ever seen
        self._unpriceable: dict[str, str] = {}  # models answered without a readable cost: why
        self._settled = asyncio.Event()
        self._ledger = ledger
        self._ledger_scope = ledger_scope

    async def enter(self, send: Send) -> None:
        """Set aside the request's expected cost; wait while requests in flight may free room.

        Raises :class:`BudgetReached` when it cannot fit even with nothing in flight, or when
        its model's cost cannot be known and no worst-case price was given.
        """
        while True:
            expected = self._expected.get(send.model)
            if expected is None and send.model in self._unpriceable:
                raise BudgetReached(self._unpriceable[send.model])
            if expected is None and send.model in self._unpriced:
                await self._wait()
                continue
            need = expected or Spend()
            fits, others = await self._reserve(need)
            if fits:
                send.reserved = need
                self._reserved += need
                self._in_flight += 1
                if expected is None:
                    self._unpriced.add(send.model)
                return
            if self._in_flight:
                await self._wait()
                continue
            if others:  # (another worker's answers may free room: no event crosses processes)
                await asyncio.sleep(POLL_SECONDS)
                continue
            raise BudgetReached(self.describe())

    def settle(self, send: Send, error: RequestError | None) -> None:
        """Replace the request's reservation by what its answer's headers said it cost (failed
        requests are not billed unless their headers say so)."""
        if send.reserved is None:
            return
        reserved = send.reserved
        self._reserved -= send.reserved
        self._in_flight -= 1
        send.reserved = None
        self._unpriced.discard(send.model)
        cost = send.cost
        limited = ("usd",) * self.limit.usd.is_finite() + ("credits",) * self.limit.credits.is_finite()
        if error is None and (cost is None or set(cost.missing) & set(limited)):
            cost = self._unreadable(send.model)  # answered, and nothing says what it cost in our currency
        if self._ledger is not None:
            self._ledger.settle(self._ledger_scope, _units(reserved), _units(cost or Spend()))
        if cost is not None:
            self.spent += cost
            known = self._expected.get(send.model, Spend())
            self._expected[send.model] = Spend(max(known.usd, cost.usd), max(known.credits, cost.credits))
        self._settled.set()
        self._settled = asyncio.Event()

    def _unreadable(self, model: str) -> Spend | None:
        """An answer without a readable cost: the worst-case price stands in, or the model's
        next request stops the run."""
        if self._assumed is not None:
            return self._assumed
        self._unpriceable[model] = (
            f"the API's answers to {model} carry no readable cost header in the budget's currency"
            " (x-aimlapi-usd-spent / x-aimlapi-credits-used), so the spend budget cannot be enforced:"
            " give a worst-case price per request with --assume-usd (or --assume-credits), or run"
            " without a budget"
        )
        return None

    def describe(self) -> str:
        """What was spent against the budget, e.g. "spent $1.60 of the $1.62 budget of this run"."""
        parts = []
        if self.limit.usd.is_finite():
            parts.append(f"{usd(self.spent.usd, exact=True)} of the {usd(self.limit.usd, exact=True)}")
        if self.limit.credits.is_finite():
            parts.append(f"{self.spent.credits:.0f} of the {self.limit.credits:.0f} credits")
        return f"spend budget reached: spent {' and '.join(parts)} budget {self.scope}"

    async def _reserve(self, need: Spend) -> tuple[bool, int]:
        """Whether ``need`` fits (and is then set aside in the shared ledger), and how many
        requests other live workers have in flight."""
        if self._ledger is None:
            total = self.spent + self._reserved + need
            return total.usd <= self.limit.usd and total.credits <= self.limit.credits, 0
        cap = tuple(to_units(x) if x.is_finite() else None for x in (self.limit.usd, self.limit.credits))
        fits, (usd_so_far, credits_so_far), others = await self._ledger.reserve(
            self._ledger_scope,
            _units(need),
            cap,  # type: ignore[arg-type]
        )
        self.spent = Spend(from_units(usd_so_far), from_units(credits_so_far))  # (the run's, for messages)
        return fits, others

    async def _wait(self) -> None:
        await self._settled.wait()


class RequestCap:
    """``--max-requests N``: this run sends at most ``most`` generation requests (retries
    count: each one may be billed); the next one stops the run, resumable."""

    def __init__(self, most: int) -> None:
        self.most = most
        self.sent = 0

    async def enter(self, send: Send) -> None:
        """Count the request, or raise :class:`RequestCapReached` when ``most`` were sent."""
        del send
        if self.sent >= self.most:
            raise RequestCapReached(
                f"--max-requests {self.most} reached: {self.sent} generation requests sent"
            )
        self.sent += 1

    def settle(self, send: Send, error: RequestError | None) -> None:
        """Nothing to settle: a request counts once it is sent."""
        del send, error

    def __repr__(self) -> str:
        return f"RequestCap(sent={self.sent} of {self.most})"


async def budget_gates(
    settings: Settings, folder: OutputFolder, shared: SharedBudgets | None = None
) -> list[Gate]:
    """The run's budgets, as gates: ``--max-requests``, ``--max-usd``/``--max-credits``, and the
    folder's daily cap (kept in the folder by ``--max-usd-per-day`` so that every later run
    respects it), knowing what each model cost before; ``shared``: the ledger of a run's
    workers (``--max-requests`` stays each worker's own). Raises
    :class:`~batchgen.errors.StorageError`."""
    daily = await folder.daily_cap(settings.max_usd_per_day)
    # (the request cap last: a request another budget refuses is not one of its count)
    cap: list[Gate] = [RequestCap(settings.max_requests)] if settings.max_requests is not None else []
    gates: list[Gate] = []
    if settings.max_usd is None and settings.max_credits is None and daily is None:
        return cap
    known = {
        model: Spend(max(c.usd for c in costs), max(c.credits for c in costs))
        for model, costs in (await folder.request_costs()).items()
    }
    assumed = settings.assumed_cost
    if settings.max_usd is not None or settings.max_credits is not None:
        ledger, scope = await _shared_scope(shared, f"run:{shared.run_id}" if shared else "", Spend())
        gates.append(
            Budget(
                max_usd=settings.max_usd,
                max_credits=settings.max_credits,
                known=known,
                assumed=assumed,
                ledger=ledger,
                ledger_scope=scope,
            )
        )
    if daily is not None:
        today = datetime.now(UTC).date().isoformat()
        before = await folder.spent(day=today)
        ledger, scope = await _shared_scope(shared, f"day:{today}", before)
        gates.append(
            Budget(
                max_usd=daily,
                known=known,
                assumed=assumed,
                before=before,
                scope=f"of {today} (UTC) in this folder, all runs",
                ledger=ledger,
                ledger_scope=scope,
            )
        )
    return gates + cap


class SharedBudgets(BudgetLedger, Protocol):
    """A worker's ledger, with the run it belongs to."""

    @property
    def run_id(self) -> int:
        """The run the worker joined."""
        ...

    async def begin_budget(self, scope: str, base: Units) -> None:
        """Start ``scope`` with ``base`` spent, unless it is started."""
        ...


async def _shared_scope(
    shared: SharedBudgets | None, scope: str, base: Spend
) -> tuple[BudgetLedger | None, str]:
    """The ledger and scope of a budget (none when the run has one worker), started with ``base``."""
    if shared is None:
        return None, ""
    await shared.begin_budget(scope, _units(base))
    return shared, scope
