"""The run's sending rate: learned from 429s (CUBIC, as AWS SDKs' adaptive mode), and an optional
hard ceiling (``--rpm``, aiolimiter).

The API publishes no requests-per-minute figure and sends 429 without ``Retry-After`` or any
``RateLimit-*`` header (NOTES.md): a client learns its limit only by hitting it. So:

* :class:`AdaptiveRate` sends freely (only ``--concurrency`` bounds it) until the first 429.
  Then it paces every request start (GCRA: a theoretical arrival time per request) at a rate set
  as in botocore's ``retries/adaptive.py`` and ``retries/throttling.py``: on a throttle the rate
  becomes ``beta`` (0.7) times the measured sending rate, which is remembered as ``w_max``; then
  it grows back *in time*, not per success, along the CUBIC curve
  ``C * (t - K)**3 + w_max`` with ``C = 0.4`` and ``K = cbrt(w_max * (1 - beta) / C)``, so it is
  back at ``w_max`` ``K`` seconds after the cut and probes above it after that (RFC 9438). As in
  botocore, the rate never runs ahead of twice the measured sending rate (or ``w_max``).
* A 429 cuts again only when it is news: the request was sent after the last cut (one cut per
  burst, like TCP's one reduction per round trip), and either the rate has grown back to
  ``w_max`` (``t >= K``) or more than ``1 - beta`` of the answers since the cut were 429s (the
  rate is still far too high). 429s that keep arriving at the same share whatever the rate are
  not caused by the rate, and cutting for each of them would starve the run.
* :class:`RateCeiling` (``--rpm N``) is a hard, smooth ceiling: ``aiolimiter.AsyncLimiter``
  with a one-request bucket spaces starts ``60 / N`` seconds apart from the very first, so any
  10-second window holds at most ``N / 6 + 1`` starts (a plain ``AsyncLimiter(N, 60)`` would let
  a minute's worth through at once).
* A ``Retry-After`` (if some proxy sends one) pauses every start for that long.

Both are gates (:mod:`batchgen.gates`). Time is the event loop's clock unless a ``clock`` is given.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
from collections.abc import Callable

from aiolimiter import AsyncLimiter

from batchgen.errors import RateLimited, RequestError
from batchgen.gates import Send

__all__ = ["AdaptiveRate", "RateCeiling"]

log = logging.getLogger(__name__)

BETA = 0.7  # botocore throttling.CubicCalculator._BETA
SCALE = 0.4  # botocore throttling.CubicCalculator._SCALE_CONSTANT
MIN_RATE = 0.5  # requests per second; botocore's TokenBucket minimum fill rate
MIN_ANSWERS = 8  # answers since a cut before their share of 429s is judged
MEASURE_WINDOW = 1.0  # seconds of sends the measured sending rate looks back over


class AdaptiveRate:
    """Pace request starts at a rate learned from 429s (requests per second; see the module doc).

    ``rate`` is ``math.inf`` until the first throttle. ``clock``: seconds, monotonic (the
    running loop's ``time`` by default). ``reason`` says why the rate last changed.
    """

    def __init__(self, *, clock: Callable[[], float] | None = None) -> None:
        self.rate = math.inf
        self.reason = "no 429 yet: no client-side limit"
        self._clock = clock
        self._w_max = 0.0
        self._k = 0.0
        self._last_cut = -math.inf
        self._answers_since_cut = 0
        self._throttled_since_cut = 0
        self._next_start = -math.inf  # GCRA theoretical arrival time of the next start
        self._sends: collections.deque[float] = collections.deque()
        self._first_send: float | None = None
        self._turn = asyncio.Lock()  # FIFO: waiters take sending slots in order

    def now(self) -> float:
        """The clock this limiter runs on (seconds)."""
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    async def enter(self, send: Send) -> None:
        """Wait for the next sending slot (none to wait for before the first throttle)."""
        del send
        async with self._turn:
            delay = self._next_start - self.now()
            if delay > 0:
                await asyncio.sleep(delay)
            now = self.now()
            self._next_start = max(now, self._next_start) + (1.0 / self.rate if self.rate < math.inf else 0.0)
            self._record_send(now)

    def settle(self, send: Send, error: RequestError | None) -> None:
        """Learn from an answer: a 429 may cut the rate; any other answer lets it grow back."""
        now = self.now()
        fresh = send.sent_at >= self._last_cut  # sent after the last cut: news about the new rate
        if fresh:
            self._answers_since_cut += 1
        if isinstance(error, RateLimited):
            if error.retry_after:
                self.pause(error.retry_after)
            if fresh:
                self._throttled_since_cut += 1
                if self._should_cut(now):
                    self._cut(now)
        elif self.rate < math.inf:
            grown = SCALE * (now - self._last_cut - self._k) ** 3 + self._w_max
            # botocore's cap (twice the measured rate), but never below the last known maximum:
            # a lull in sending (every job backing off) must not reset what was learned.
            self.rate = max(MIN_RATE, min(grown, max(2 * self.measured_rate(now), self._w_max)))

    def pause(self, seconds: float) -> None:
        """Start nothing for ``seconds`` (a server's ``Retry-After``)."""
        self._next_start = max(self._next_start, self.now() + seconds)

    def measured_rate(self, now: float) -> float:
        """Requests started per second over the last second (or since the first start)."""
        self._forget(now)
        if self._first_send is None:
            return 0.0
        span = min(MEASURE_WINDOW, max(now - self._first_send, 0.1))
        return len(self._sends) / span

    def _should_cut(self, now: float) -> bool:
        if self.rate == math.inf:
            return True
        if now - self._last_cut >= self._k:
            return True
        share = self._throttled_since_cut / self._answers_since_cut
        return self._answers_since_cut >= MIN_ANSWERS and share > 1 - BETA

    def _cut(self, now: float) -> None:
        measured = self.measured_rate(now)
        self._w_max = max(MIN_RATE, min(measured, self.rate))
        self._k = (self._w_max * (1 - BETA) / SCALE) ** (1 / 3)
        self.rate = max(MIN_RATE, self._w_max * BETA)
        self._last_cut = now
        self._answers_since_cut = self._throttled_since_cut = 0
        self._next_start = max(self._next_start, now + 1.0 / self.rate)
        self.reason = f"429s: sending rate lowered to {self.rate:.1f}/s (was sending {measured:.1f}/s)"
        log.info("%s", self.reason)

    def _record_send(self, now: float) -> None:
        if self._first_send is None:
            self._first_send = now
        self._sends.append(now)
        self._forget(now)

    def _forget(self, now: float) -> None:
        while self._sends and self._sends[0] < now - MEASURE_WINDOW:
            self._sends.popleft()


class RateCeiling:
    """``--rpm``: at most ``rpm`` request starts per minute, evenly spaced from the first."""

    def __init__(self, rpm: float) -> None:
        self.rpm = rpm
        self._limiter = AsyncLimiter(1, 60.0 / rpm)

    async def enter(self, send: Send) -> None:
        """Wait for the ceiling's next slot."""
        del send
        await self._limiter.acquire()

    def settle(self, send: Send, error: RequestError | None) -> None:
        """The ceiling learns nothing from answers."""
        del send, error
