"""Retries: a pure policy, a run-wide quota, and the one attempt loop every retried step uses.

Backoff is "full jitter" exponential (AWS Architecture Blog, "Exponential Backoff And Jitter"):
the delay is drawn uniformly from ``[0, min(cap, base * 2**(attempt-1))]``, so clients that failed
together do not retry together. A ``Retry-After`` the server sends is a floor on the delay
(the AIML API has not been seen to send one, NOTES.md, but a proxy in front of it may).

The whole run shares a :class:`RetryQuota` (AWS SDKs' "standard" retry quota, a gate of
:mod:`batchgen.gates`): a dead API drains it quickly and the run stops, instead of every job
retrying into the outage.

:func:`retrying` is the loop, in stamina's shape::

    async for attempt in retrying(policy, gates, place, waiter, label="job trex"):
        async with attempt:
            answer = await client.generate(...)
    # a RequestError that is not retried is raised out of the loop
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType

from batchgen.errors import RateLimited, RequestError
from batchgen.gates import Gates, Send

__all__ = ["Attempt", "Decision", "Interrupted", "Place", "RetryPolicy", "retrying"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do after a failure: ``retry`` or not, and ``delay`` seconds before the retry."""

    retry: bool
    delay: float = 0.0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When a failed request is tried again.

    ``max_retries``: retries per job and step (generation or download) after the first attempt.
    ``base`` and ``cap``: backoff scale and ceiling, seconds (0 turns backoff off, for tests).
    """

    max_retries: int = 5
    base: float = 1.0
    cap: float = 60.0

    def decide(self, error: RequestError, attempt: int, rng: random.Random | None = None) -> Decision:
        """Judge ``error`` raised by try number ``attempt`` (1-based).

        Permanent errors and errors that stop the run are never retried here.
        """
        if error.stops_run:
            return Decision(False, reason="stops the run")
        if not error.transient:
            return Decision(False, reason="permanent")
        limit = self.max_retries if error.retry_limit is None else min(self.max_retries, error.retry_limit)
        if attempt > limit:
            return Decision(False, reason=f"gave up after {attempt} attempts")
        ceiling = min(self.cap, self.base * 2 ** (attempt - 1))
        if isinstance(error, RateLimited):
            # The learned sending rate, shared by every job, is the backoff for 429s: a job's
            # own growing wait on top would only idle it (and stretch the run's tail).
            ceiling = min(ceiling, self.base)
        delay = (rng or random).uniform(0, ceiling)
        if isinstance(error, RateLimited) and error.retry_after is not None:
            delay = max(delay, error.retry_after)
        return Decision(True, delay)


class Interrupted(Exception):
    """The run stopped while a job waited (for a slot, a gate or its backoff); it stays resumable."""


Waiter = Callable[[Awaitable[object]], Awaitable[object]]
"""Awaits an awaitable unless the run stops first; then raises :class:`Interrupted`."""


class Place:
    """A job's place among the ``concurrency`` jobs at work; given back while it waits out a
    backoff, so that a job waiting to retry never idles a place another job could use."""

    def __init__(self, places: asyncio.Semaphore) -> None:
        self._places = places
        self.held = False

    async def take(self, waiter: Waiter) -> None:
        """Wait for a free place (raises :class:`Interrupted` if the run stops first)."""
        await waiter(self._places.acquire())
        self.held = True

    def give_back(self) -> None:
        """Free the place (idempotent)."""
        if self.held:
            self.held = False
            self._places.release()


class Attempt:
    """One try: ``async with attempt:`` passes the gates first.

    A :class:`RequestError` raised inside is kept in :attr:`error` (and suppressed) for the
    loop to judge, and the gates hear how the try ended; anything else propagates.
    """

    def __init__(self, number: int, send: Send, gates: Gates, waiter: Waiter) -> None:
        self.number = number
        self.error: RequestError | None = None
        self.send = send  # the gates hear of it; the job tells it what the answer cost
        self._gates = gates
        self._waiter = waiter

    async def __aenter__(self) -> Attempt:
        await self._waiter(self._gates.enter(self.send))
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if exc is None:
            self._gates.settle(self.send, None)
            return False
        if isinstance(exc, RequestError):
            self._gates.settle(self.send, exc)
            self.error = exc
            return True
        # Cancelled, or a bug: the gates still hear of it (a reservation must not leak).
        self._gates.settle(
            self.send, RequestError(f"the attempt ended without an answer ({type(exc).__name__})")
        )
        return False


async def retrying(
    policy: RetryPolicy, gates: Gates, place: Place, waiter: Waiter, *, label: str, model: str = ""
) -> AsyncIterator[Attempt]:
    """Yield attempts until one ends without a :class:`RequestError`.

    A failed attempt is judged by ``policy``; its backoff is waited out with ``place`` given back
    (other jobs work meanwhile). Raises the last error when it is not retried, and
    :class:`Interrupted` when the run stops during a wait.
    """
    previous: RequestError | None = None
    number = 0
    while True:
        number += 1
        attempt = Attempt(number, Send(retry_of=previous, model=model), gates, waiter)
        yield attempt
        if attempt.error is None:
            return
        decision = policy.decide(attempt.error, number)
        if not decision.retry:
            raise attempt.error
        when = f"in {decision.delay:.1f}s" if decision.delay >= 0.05 else "now"  # noqa: PLR2004
        log.info("%s: %s; retry %d %s", label, attempt.error, number, when)
        place.give_back()
        await waiter(asyncio.sleep(decision.delay))
        await place.take(waiter)
        previous = attempt.error
