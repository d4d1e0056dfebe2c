"""The run's request-rate limit: a smooth ceiling (aiolimiter) under an adaptive rate (AIMD).

The API publishes no requests-per-minute figure and sends 429 without ``Retry-After`` or any
``RateLimit-*`` header (NOTES.md): a client learns its limit only by hitting it. So:

* ``--rpm`` is a hard ceiling, enforced by ``aiolimiter.AsyncLimiter`` with a one-request
  bucket: a plain ``AsyncLimiter(rpm, 60)`` would let a whole minute's worth through at once,
  whereas a bucket of one spaces requests ``60 / rpm`` seconds apart from the very start, so any
  10-second window holds at most a sixth of ``rpm``.
* Below it, the sending rate adapts like TCP congestion control and AWS SDKs' adaptive retry
  mode: additive increase, multiplicative decrease (AIMD). A 429 halves the rate for every
  worker; each success adds back a small step. A 429 for a request sent before the last
  decrease does not count again, so one burst of in-flight 429s halves the rate once.
* A ``Retry-After`` (if some proxy sends one) pauses all sending for that long.

Example::

    limiter = AdaptiveRateLimiter(rpm=120)
    sent_at = await limiter.acquire()     # waits for a sending slot
    ...
    limiter.on_throttled(sent_at)         # after a 429
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiolimiter import AsyncLimiter

__all__ = ["AdaptiveRateLimiter"]


class AdaptiveRateLimiter:
    """Pace request starts at an adaptive rate, in requests per minute, never above ``rpm``.

    ``decrease``: factor applied on a 429 (0.5 halves); ``increase``: requests per minute added
    per success (default: 2% of the ceiling); ``floor``: lowest rate (requests per minute).
    ``clock`` is injectable for tests (seconds, monotonic).
    """

    def __init__(
        self,
        rpm: float,
        *,
        decrease: float = 0.5,
        increase: float | None = None,
        floor: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ceiling = rpm
        self.rate = rpm
        self._decrease = decrease
        self._increase = increase if increase is not None else max(rpm * 0.02, 0.1)
        self._floor = min(floor, rpm)
        self._clock = clock
        self._ceiling_limiter = AsyncLimiter(1, 60.0 / rpm)
        # Theoretical arrival time of the next request (GCRA): the earliest moment it may start.
        self._next_start = 0.0
        self._last_decrease = float("-inf")
        self._turn = asyncio.Lock()  # FIFO: waiters take sending slots in order

    async def acquire(self) -> float:
        """Wait for the next sending slot; return the moment it was granted (clock seconds)."""
        async with self._turn:
            delay = self._next_start - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._ceiling_limiter.acquire()
            now = self._clock()
            self._next_start = max(now, self._next_start) + 60.0 / self.rate
            return now

    def on_throttled(self, sent_at: float) -> None:
        """A request sent at ``sent_at`` got a 429: cut the rate, once per burst."""
        if sent_at < self._last_decrease:
            return
        self._last_decrease = self._clock()
        self.rate = max(self._floor, self.rate * self._decrease)
        self._next_start = max(self._next_start, self._clock() + 60.0 / self.rate)

    def on_success(self) -> None:
        """A request succeeded: raise the rate by one step, up to the ceiling."""
        self.rate = min(self.ceiling, self.rate + self._increase)

    def pause(self, seconds: float) -> None:
        """Send nothing for ``seconds`` (a server's ``Retry-After``)."""
        self._next_start = max(self._next_start, self._clock() + seconds)
