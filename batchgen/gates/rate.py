"""An optional hard ceiling of the sending rate (``--rpm``, aiolimiter), and the CUBIC controller
that learned the rate before :class:`~batchgen.gates.learned.LearnedLimit` (issue 19): kept for
``bench/rate_model.py``, which runs the old and the new controller side by side.

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
* ``w_max`` is the rate the server *admitted* in the second before the refused request, not
  botocore's sending rate: far above a limit (the run's opening burst of ``--concurrency``
  requests), botocore's one 0.7 step per burst of 429s costs a round of refusals each time.
  Refusals of requests sent before a cut that arrive after it lower that cut's ``w_max``
  further instead of cutting again, and far above a limit the next request waits until the
  refused burst's second has passed.
* A 429 cuts again only when it is news: the request was sent after the last cut (one cut per
  burst, like TCP's one reduction per round trip), and either the rate has grown back to
  ``w_max`` (``t >= K``) or more than ``1 - beta`` of the answers since the cut were 429s (the
  rate is still far too high). 429s that keep arriving at the same share whatever the rate are
  not caused by the rate, and cutting for each of them would starve the run.
* :class:`RateCeiling` (``--rpm N``) is a hard, smooth ceiling: ``aiolimiter.AsyncLimiter``
  with a one-request bucket spaces starts ``60 / N`` seconds apart from the very first, so any
  10-second window holds at most ``N / 6 + 1`` starts (a plain ``AsyncLimiter(N, 60)`` would let
  a minute's worth through at once).
* A ``Retry-After`` (if some proxy sends one) delays the retry of its own request (the retry
  policy's floor) and is handed on to the next run; it does not pause every job: a proxy that
  sends it with random 429s would otherwise stall the whole run.

Both are gates (:mod:`batchgen.gates`). Time is the event loop's clock unless a ``clock`` is given.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

from aiolimiter import AsyncLimiter

from batchgen.errors import RateLimited, RequestError
from batchgen.gates import Send

__all__ = ["AdaptiveRate", "RateCeiling"]

log = logging.getLogger(__name__)

BETA = 0.7  # botocore throttling.CubicCalculator._BETA
SCALE = 0.4  # botocore throttling.CubicCalculator._SCALE_CONSTANT
MIN_RATE = 0.5  # requests per second; botocore's TokenBucket minimum fill rate
MIN_ANSWERS = 5  # answers since a cut before their share of 429s is judged
HEAVY_ANSWERS = 20  # ... before it may call for a cut ahead of the curve (few answers are noisy)
MEASURE_WINDOW = 1.0  # seconds of sends the measured sending rate looks back over
RATE_BLIND = 1.5  # 429s in the climb's faster half at most this times the slower half's share
MARGIN = 0.05  # share of 429s above the background one that still calls for a cut
MIN_SPAN = 0.1  # seconds: the shortest time a sending rate is measured over
FEW_EVENTS = 3  # the fewest events a sending rate is measured on, when there are that many
HORIZON = 60.0  # seconds of sends the meters keep (a cut looks back to a second before the
# refused request left, which with slow generations can be long ago)


@dataclass(slots=True)
class _Window:
    """The sends from a second before the request whose 429 made a cut up to the cut, as far as
    is known.

    ``start``, ``end``: the window ``(start, end]`` (clock seconds); ``sent``: starts in it;
    ``refused``: those answered 429 so far; ``span``: seconds of it the run was sending (under
    1 s in its first second); ``oldest``: its first start; ``cap``: the rate before the cut
    (requests per second).
    """

    start: float
    end: float
    sent: int
    refused: int
    span: float
    oldest: float
    cap: float

    def holds(self, sent_at: float) -> bool:
        """Whether a request started at ``sent_at`` is one of this window's sends."""
        return self.start < sent_at <= self.end

    def far_above(self) -> bool:
        """More refused than one ``beta`` cut can make up for: the server admits far less."""
        return self.sent >= MIN_ANSWERS and self.refused > (1 - BETA) * self.sent

    def w_max(self, background: float) -> float:
        """The rate to come back to (requests per second).

        botocore takes the sending rate at the throttle; far above a limit that costs one
        ``beta`` step, and one round of refusals, per burst. Here it is the rate the server
        *admitted*: the window's sends less those refused beyond the background share (once
        there are enough of them to judge). Far above, admitted per whole second: a burst sent
        at one instant (the run's start) has no rate of its own, and limits count per second or
        longer.
        """
        admitted = float(self.sent)
        if self.sent >= MIN_ANSWERS:
            admitted -= max(0.0, self.refused - background * self.sent)
        span = max(self.span, MEASURE_WINDOW) if self.far_above() else self.span
        estimate = max(admitted, 1.0) / span  # n refused of n: the server admits under 1 in n
        return max(MIN_RATE, min(estimate, self.cap))


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
        self._window: _Window | None = None  # what the last cut was measured on
        self._logged_rate = math.inf
        self._answers_since_cut = 0
        self._throttled_since_cut = 0
        self._halves = [[0, 0], [0, 0]]  # [answers, 429s] to sends in each half of the climb
        self._background = 0.0  # share of 429s a cut did not lower: not caused by the rate
        self._next_start = -math.inf  # GCRA theoretical arrival time of the next start
        self._sent = _Meter()  # request starts
        self._refused = _Meter()  # starts of the requests answered 429
        self._turn = asyncio.Lock()  # FIFO: waiters take sending slots in order

    def now(self) -> float:
        """The clock this limiter runs on (seconds)."""
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    async def enter(self, send: Send) -> None:
        """Wait for the next sending slot (none to wait for before the first throttle)."""
        del send
        async with self._turn:
            delay = self.reserve(self.now()) - self.now()
            if delay > 0:
                await asyncio.sleep(delay)

    def reserve(self, now: float) -> float:
        """Book the next sending slot at or after ``now``; return its start time (clock seconds)."""
        start = max(now, self._next_start)
        self._next_start = start + (1.0 / self.rate if self.rate < math.inf else 0.0)
        self._sent.record(start)
        return start

    def settle(self, send: Send, error: RequestError | None) -> None:
        """Learn from an answer: a 429 may cut the rate; any other answer lets it grow back."""
        now = self.now()
        fresh = send.sent_at >= self._last_cut  # sent after the last cut: news about the new rate
        throttled = isinstance(error, RateLimited)
        if fresh:
            self._answers_since_cut += 1
            half = self._halves[send.sent_at >= self._last_cut + self._k / 2]
            half[0] += 1
            half[1] += throttled
        if throttled:
            self._refused.record(send.sent_at)
            if fresh:
                self._throttled_since_cut += 1
                if self._should_cut(now):
                    since = max(send.sent_at - MEASURE_WINDOW, now - HORIZON)
                    self._cut(now, since)
            elif self._window and self._window.holds(send.sent_at):
                # a send the last cut counted as admitted was refused: the cut was too shallow
                self._window.refused += 1
                self._set_from_window(now)
                if self.rate < self._logged_rate / 2:  # a burst's refusals: say where it lands
                    self._logged_rate = self.rate
                    log.info("%s", self.reason)
            return
        if self.rate < math.inf:
            grown = SCALE * (now - self._last_cut - self._k) ** 3 + self._w_max
            # botocore's cap (twice the measured rate), but never below the last known maximum:
            # a lull in sending (every job backing off) must not reset what was learned.
            self.rate = max(MIN_RATE, min(grown, max(2 * self._sent.rate(now), self._w_max)))

    def _should_cut(self, now: float) -> bool:
        if self.rate == math.inf:
            return True
        answers, throttled = self._answers_since_cut, self._throttled_since_cut
        if answers >= HEAVY_ANSWERS and throttled / answers > 1 - BETA:
            return True  # far above the limit: do not wait for the curve
        if now - self._last_cut < self._k:
            return False  # one cut per climb back to w_max
        if not self._background:
            self._background = self._rate_blind_share()
        quiet = (throttled - 1) / (answers - 1) if answers > 1 else 0.0  # this 429 aside
        return quiet > self._background + MARGIN if self._background else True

    def _rate_blind_share(self) -> float:
        """The share of 429s if it did not grow with the rate during the climb, else 0.

        The climb's first half ran at lower rates than its second: 429s caused by the rate are
        rarer there; 429s that come at the same share in both halves are not the rate's doing.
        """
        (low_answers, low_throttled), (high_answers, high_throttled) = self._halves
        if min(low_answers, high_answers) < MIN_ANSWERS:
            return 0.0
        low, high = low_throttled / low_answers, (high_throttled - 1) / (high_answers - 1)
        if low < MARGIN or high > low * RATE_BLIND + MARGIN:
            return 0.0
        share = (low_throttled + high_throttled - 1) / (low_answers + high_answers - 1)
        log.info("%.0f%% of answers are 429s whatever the rate: not caused by it", share * 100)
        return min(share, 1 - BETA)

    def _cut(self, now: float, since: float) -> None:
        self._window = _Window(
            start=since,
            end=now,
            sent=self._sent.count(since, now),
            refused=self._refused.count(since, now),
            span=self._sent.span(since, now),
            oldest=self._sent.oldest(since, now),
            cap=self.rate,
        )
        self._last_cut = now
        self._answers_since_cut = self._throttled_since_cut = 0
        self._halves = [[0, 0], [0, 0]]
        self._set_from_window(now)
        self._logged_rate = self.rate
        log.info("%s", self.reason)

    def _set_from_window(self, now: float) -> None:
        """Set ``w_max`` (see :meth:`_Window.w_max`), ``K`` and the rate (botocore: ``beta *
        w_max``) from the last cut's window; again each time one of its refusals arrives late.

        Far above a limit, the next start also waits for the window to pass: the requests the
        server admitted in it count against the limit until then.
        """
        window = self._window
        assert window is not None
        self._w_max = window.w_max(self._background)
        self._k = (self._w_max * (1 - BETA) / SCALE) ** (1 / 3)
        self.rate = max(MIN_RATE, self._w_max * BETA)
        resume = now + 1.0 / self.rate
        if window.far_above():
            # the server counted its requests from their arrival, up to a round trip (that of
            # the 429 that made the cut) after they left
            round_trip = window.end - (window.start + MEASURE_WINDOW)
            resume = max(resume, window.oldest + MEASURE_WINDOW + round_trip)
        self._next_start = max(self._next_start, resume)
        # (a window can hold refusals of requests sent before it: then its rate says nothing)
        seen = (
            f"was sending {window.sent / window.span:.1f}/s, {window.refused} of {window.sent} refused"
            if window.sent >= window.refused and window.sent
            else f"{window.refused} refused"
        )
        self.reason = f"429s: sending rate lowered to {self.rate:.1f}/s ({seen})"


class _Meter:
    """Events of the recent past by the time each happened (seconds, sorted; recorded mostly in
    order: a 429 is recorded by its request's start)."""

    def __init__(self) -> None:
        self._times: list[float] = []
        self._first = math.inf

    def record(self, when: float) -> None:
        """Note an event at ``when``; events over ``HORIZON`` before it may be forgotten."""
        self._first = min(self._first, when)
        bisect.insort(self._times, when)
        if self._times[0] < when - 2 * HORIZON:  # forget in batches: amortized O(1)
            del self._times[: bisect.bisect_left(self._times, when - HORIZON)]

    def count(self, since: float, until: float) -> int:
        """Events in ``(since, until]``."""
        return bisect.bisect_right(self._times, until) - bisect.bisect_right(self._times, since)

    def oldest(self, since: float, until: float) -> float:
        """The first event in ``(since, until]`` (``until`` if none)."""
        first = bisect.bisect_right(self._times, since)
        return self._times[first] if self.count(since, until) else until

    def span(self, since: float, until: float) -> float:
        """Seconds of ``(since, until]`` after the first event ever (at least ``MIN_SPAN``)."""
        return max(until - max(since, self._first), MIN_SPAN)

    def rate(self, now: float) -> float:
        """Events per second over the last second (or since the first event), or over the last
        ``FEW_EVENTS`` events when the last second holds fewer (a second says little at 0.5/s)."""
        end = bisect.bisect_right(self._times, now)
        start = min(bisect.bisect_right(self._times, now - MEASURE_WINDOW), max(end - FEW_EVENTS, 0))
        since = min(now - MEASURE_WINDOW, self._times[start]) if start < end else now - MEASURE_WINDOW
        return (end - start) / self.span(since, now)


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
