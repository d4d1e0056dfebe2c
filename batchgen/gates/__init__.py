"""Gates: what a request passes before it is sent, and hears about once it is answered.

A run composes its gates (as aiometer composes its meters), in one place (``chain``): the
retry quota (``quota``), the learned limit (``learned``) and the optional ``--rpm`` ceiling (``rate``),
the budgets (``budget``), and the gates that only watch (``meters``). Each decides on its own,
and none of them is wired through the job code. A gate may wait (pacing) or refuse by raising
(quota spent, budget reached).

Example::

    gates = Gates(RetryQuota(500), LearnedLimit(), RateCeiling(600))
    send = Send(retry_of=None)
    await gates.enter(send)          # may wait; may raise RetryBudgetExhausted
    ...                              # the request
    gates.settle(send, error)        # error: the RequestError, or None on success
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from batchgen.errors import RequestError
from batchgen.money import Spend

__all__ = ["Gate", "Gates", "Send"]


@dataclass(slots=True)
class Send:
    """One request on its way: the error it retries (None for a first try), its ``model``, when
    it passed the gates (event-loop clock, seconds), what the retry quota took for it (tokens),
    what the spend budget set aside for it, and what its answer said it cost."""

    retry_of: RequestError | None
    model: str = ""
    sent_at: float = 0.0
    quota_taken: int = 0
    reserved: Spend | None = None
    cost: Spend | None = None
    ticket: object | None = None  # what the learned limit noted of it when it left


class Gate(Protocol):
    """One condition on sending."""

    async def enter(self, send: Send) -> None:
        """Return when ``send`` may go; raise a :class:`RequestError` that stops the run to refuse."""

    def settle(self, send: Send, error: RequestError | None) -> None:
        """Learn how ``send`` ended: ``error``, or None when it succeeded."""


class Gates:
    """Gates passed in order, settled in order; ``sent_at`` is stamped after the last one."""

    def __init__(self, *gates: Gate) -> None:
        self._gates = gates

    async def enter(self, send: Send) -> None:
        """Pass every gate (see :meth:`Gate.enter`)."""
        for gate in self._gates:
            await gate.enter(send)
        send.sent_at = asyncio.get_running_loop().time()

    def settle(self, send: Send, error: RequestError | None) -> None:
        """Tell every gate how ``send`` ended."""
        for gate in self._gates:
            gate.settle(send, error)
