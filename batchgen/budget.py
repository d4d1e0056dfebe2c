"""The spend budget of a run (``--max-usd``, ``--max-credits``): a gate that stops dispatching
before the next request could pass it.

The API reports what each request cost in its ``x-aimlapi-usd-spent`` and
``x-aimlapi-credits-used`` headers (NOTES.md, "Request tracing and cost headers"), and bills no
failed request. Before a request goes, the budget sets aside what one request of its model is
expected to cost: the highest cost recorded for that model so far (in this folder, then in this
run). When the answer comes, the reservation is replaced by the header's value. A model that
never reported a cost is sent one request at a time until it has. A request whose expected cost
no longer fits waits for requests in flight to settle, then, if it still does not fit, stops the
run (:class:`~batchgen.errors.BudgetReached`). So what is spent passes the budget by at most the
difference between what requests in flight cost and what was expected of them.

Example::

    budget = Budget(max_usd=5.0, max_credits=None, known={"reve/create-image": Spend(0.04, 2646)})
    gates = Gates(RetryQuota(), AdaptiveRate(), budget)
"""

from __future__ import annotations

import asyncio
import math

from batchgen.errors import BudgetReached, RequestError
from batchgen.gates import Send
from batchgen.responses import Spend

__all__ = ["Budget"]


class Budget:
    """A spend budget for one run: ``max_usd`` (USD) and/or ``max_credits`` (credits), either
    None for no limit. ``known``: the highest cost of one request per model, from the folder.
    ``spent`` is what this run's answers cost so far."""

    def __init__(self, *, max_usd: float | None, max_credits: float | None, known: dict[str, Spend]) -> None:
        self.limit = Spend(
            max_usd if max_usd is not None else math.inf, max_credits if max_credits is not None else math.inf
        )
        self.spent = Spend()
        self._reserved = Spend()
        self._in_flight = 0
        self._expected = dict(known)
        self._unpriced: set[str] = set()  # models with a request out and no cost ever seen
        self._settled = asyncio.Event()

    async def enter(self, send: Send) -> None:
        """Set aside the request's expected cost; wait while requests in flight may free room.

        Raises :class:`BudgetReached` when it cannot fit even with nothing in flight.
        """
        while True:
            expected = self._expected.get(send.model)
            if expected is None and send.model in self._unpriced:
                await self._wait()
                continue
            need = expected or Spend()
            if self._fits(need):
                send.reserved = need
                self._reserved += need
                self._in_flight += 1
                if expected is None:
                    self._unpriced.add(send.model)
                return
            if self._in_flight:
                await self._wait()
                continue
            raise BudgetReached(self.describe())

    def settle(self, send: Send, error: RequestError | None) -> None:
        """Replace the request's reservation by what its answer said it cost (failed requests
        are not billed)."""
        if send.reserved is None:
            return
        self._reserved = Spend(
            self._reserved.usd - send.reserved.usd, self._reserved.credits - send.reserved.credits
        )
        self._in_flight -= 1
        send.reserved = None
        self._unpriced.discard(send.model)
        cost = send.cost if error is None or send.cost is not None else None
        if cost is not None:
            self.spent += cost
            known = self._expected.get(send.model, Spend())
            self._expected[send.model] = Spend(max(known.usd, cost.usd), max(known.credits, cost.credits))
        self._settled.set()
        self._settled = asyncio.Event()

    def describe(self) -> str:
        """What was spent against the budget, e.g. "spent $1.60 of the $1.62 budget"."""
        parts = []
        if math.isfinite(self.limit.usd):
            parts.append(f"${self.spent.usd:.2f} of the ${self.limit.usd:.2f}")
        if math.isfinite(self.limit.credits):
            parts.append(f"{self.spent.credits:.0f} of the {self.limit.credits:.0f} credits")
        return f"spend budget reached: spent {' and '.join(parts)} budget of this run"

    def _fits(self, need: Spend) -> bool:
        total = self.spent + self._reserved + need
        return total.usd <= self.limit.usd + 1e-9 and total.credits <= self.limit.credits + 1e-9

    async def _wait(self) -> None:
        await self._settled.wait()
