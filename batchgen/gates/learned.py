"""The sending rate, learned as a limit on a count the client can rebuild (issue 19; the idea and
its anchors: ``../shared/design/rate-control.md``).

The API publishes no limit and says nothing in its 429s. Almost every real limiter (a sliding or
fixed window, a token bucket, a cap on requests in flight) refuses a request when a count reaches
a threshold ``L``: this key's admitted requests of the last ``w`` seconds, or its admitted
requests in flight. The client can rebuild those counts from its own sends, so every answer is a
labelled sample: the counts when the request left, and whether it was admitted. So instead of
hunting the limit with a saw-tooth (CUBIC, :class:`~batchgen.gates.rate.AdaptiveRate`, whose cycle
dips to 0.7 of the limit), :class:`LearnedLimit`:

* **counts**, for every send: the client's own sends of the last 1, 10 and 60 s that were not
  refused (a request not answered yet counts), and its requests in flight (:data:`KINDS`);
* **opens gently**: no client-side limit until the first 429, but the opening burst of
  ``--concurrency`` requests is spread over :data:`RAMP` seconds (4, then twice as many every
  50 ms): a hidden limit refuses a handful, a latency-bound run loses a fraction of a second;
* **learns** after a 429 its current limits do not explain: for each count, the threshold that
  best separates admitted from refused among the most recent samples (a decision stump), adopted
  only if the refusals above it are far more than the 429s seen at random (a binomial test
  against the background share: random 429s carry no rate information and do not move it). The
  shortest span that shows a limit wins, so a drop is seen within a few refusals;
* **paces** just under every limit learned: window limits evenly (one send per ``w (1 + slack) /
  L`` seconds, as GCRA) and never with ``L`` sends in the window; the in-flight limit by waiting
  for an answer;
* **probes** above a limit now and then (one send allowed ``step`` over it): an admitted probe
  raises the limit to what it proved and doubles the step for the next probe, at once (a rise is
  found within seconds); a refused one resets the step and backs the probes off (2 s to 16 s);
* forgets nothing it proved but lets the newest evidence win: an admission at count ``c`` proves
  ``L > c`` for that count's limit (BBR's max filter).

Keeps from the CUBIC controller: ``--rpm`` stays a separate hard ceiling
(:class:`~batchgen.gates.rate.RateCeiling`), a ``Retry-After`` stays the retry's floor, a retried
job gives its place back, a log line says why the limit changed, and the clock is the loop's
unless one is given (the model in ``bench/rate_model.py`` runs it on a fake clock).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from batchgen.errors import RateLimited, RequestError
from batchgen.gates import Send
from batchgen.gates.limit_fit import FIT_POINTS, Point, near, refit

__all__ = ["KINDS", "LearnedLimit", "Sample"]

log = logging.getLogger(__name__)

KINDS = ("1s", "10s", "60s", "in_flight")
"""The counts a limit may be on: own sends not refused in the last 1, 10, 60 s; own in flight.
A tie between kinds goes to the earlier one."""
WINDOWS = (1.0, 10.0, 60.0)  # seconds, of the first three kinds
COUNTED = ("sent in the last second", "sent in the last 10 s", "sent in the last minute", "in flight")
SLACK = 0.03  # pace at L / (1 + SLACK) per window: arrival jitter must not fill the last place
RAMP = 0.3  # seconds the opening burst is spread over
RAMP_FIRST = 4  # sends at once at the very start
RAMP_DOUBLING = 0.05  # seconds per doubling of the opening's allowance
REFIT_EVERY = 0.02  # seconds between two refits at the least
PRESUME_LEAST = 0.02  # seconds: an unanswered request is taken as admitted after twice the
PRESUME_MOST = 2.0  # ... slowest recent 429's round trip, within these bounds
KEEP = 120.0  # seconds of samples kept for refits (a 60 s window needs more than its own span)
KEEP_MOST = 4096  # ... and at most this many
OPENING_SHARE = 0.3  # share of the opening's requests refused that makes its admissions an estimate
PROBE_FIRST = 2.0  # seconds from a limit learned to its first probe
PROBE_MOST = 8.0  # seconds between probes at the most (each refused probe doubles the gap)


@dataclass(slots=True)
class Sample:
    """One send: when (clock seconds), its counts (one per kind), and its outcome (None while
    in flight, True admitted, False refused); ``probe``: sent above a limit on purpose."""

    at: float
    counts: tuple[int, int, int, int]
    outcome: bool | None = None
    probe: bool = False


@dataclass(slots=True)
class _Probing:
    step: int = 1
    gap: float = PROBE_FIRST
    next_at: float = math.inf
    out: int = 0  # probes in flight


class LearnedLimit:
    """A gate that learns the API's hidden limit from labelled answers and paces under it.

    ``rate``: the pacing rate of the tightest window limit learned (requests per second;
    ``math.inf`` while none is). ``limits``: what was learned, by kind (:data:`KINDS`).
    ``clock``: seconds, monotonic (the running loop's ``time`` by default).
    """

    def __init__(self, *, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock
        self.limits: dict[int, int] = {}
        self.reason = "no 429 yet: no client-side limit"
        self._samples: deque[Sample] = deque()
        self._alive: list[float] = []  # send times of requests not refused (sorted)
        self._in_flight = 0  # requests sent, not yet answered
        self._started = math.inf  # the first send
        self._next_start = -math.inf  # GCRA: the earliest next start under the window limits
        self._hold = False  # after the first 429 with no limit learned: wait for the answers in flight
        self._ramping = True  # until the first 429 or RAMP seconds
        self._opened = False  # the opening's 429s were weighed (``_after_opening``)
        self._probing = _Probing()
        self._answered = asyncio.Event()  # set on every answer: in-flight waiters look again
        self._turn: asyncio.Lock | None = None
        self._refit_due = False  # a 429 no limit explains waits for the evidence around it
        self._last_refit = -math.inf
        self._refusal_times: deque[float] = deque(maxlen=32)  # round trips of recent 429s (s)

    # -- reading ------------------------------------------------------------------------------

    @property
    def rate(self) -> float:
        """The pacing rate of the tightest window limit (requests per second), or ``math.inf``."""
        rates = [self.limits[k] / (WINDOWS[k] * (1 + SLACK)) for k in range(3) if k in self.limits]
        return min(rates, default=math.inf)

    def now(self) -> float:
        """The clock this limiter runs on (seconds)."""
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    def __repr__(self) -> str:
        learned = ", ".join(f"{KINDS[k]}<{v}" for k, v in sorted(self.limits.items())) or "none"
        return (
            f"LearnedLimit(limits: {learned}; in flight {self._in_flight}; probe step {self._probing.step})"
        )

    # -- the gate -----------------------------------------------------------------------------

    async def enter(self, send: Send) -> None:
        """Wait until a send fits under every limit learned (and the opening ramp); note it."""
        if self._turn is None:
            self._turn = asyncio.Lock()
        async with self._turn:  # FIFO: waiters take sending slots in order
            while True:
                now = self.now()
                wait, probe = self.admit(now)
                if wait <= 0:
                    send.ticket = self.sent(now, probe=probe)
                    return
                # an answer may free a place sooner (a refused probe leaves the window)
                self._answered.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._answered.wait(), None if math.isinf(wait) else wait)

    def admit(self, now: float) -> tuple[float, bool]:
        """Seconds until a send may go at ``now`` (0: now; ``math.inf``: after an answer), and
        whether it would be a probe."""
        counts = self._counts(now)
        if not self.limits:
            return self._ramp_wait(now, counts), False
        probing = self._probing
        # Probing: from ``next_at`` until one probe is out, the spacing is lifted and each limit
        # allows ``step`` more; the send that goes at or over a limit is the probe.
        lifted = now >= probing.next_at and probing.out == 0
        allowance = probing.step if lifted else 0
        wait = 0.0
        for kind, limit in self.limits.items():
            if counts[kind] < limit + allowance:
                continue
            if kind == 3:  # noqa: PLR2004 - in flight
                return math.inf, False
            # the send that makes the count must leave the window first (no copy: this is
            # the newest ``limit`` sends, counted from the end)
            window = WINDOWS[kind]
            leaving = self._alive[len(self._alive) - (limit + allowance)]
            wait = max(wait, leaving + window - now + 1e-6)
        if not lifted:
            wait = max(wait, self._next_start - now)
        probe = lifted and any(counts[kind] >= limit for kind, limit in self.limits.items())
        return wait, probe and wait <= 0

    def sent(self, now: float, *, probe: bool = False) -> Sample:
        """Note a send at ``now`` (the model calls it directly); returns its sample."""
        sample = Sample(now, self._counts(now), probe=probe)
        self._started = min(self._started, now)
        self._samples.append(sample)
        bisect.insort(self._alive, now)
        self._in_flight += 1
        if probe:
            self._probing.out += 1
        if not probe:  # (a probe goes on top of the paced sends: refused, it costs them nothing)
            spacing = min(
                (WINDOWS[k] * (1 + SLACK) / self.limits[k] for k in range(3) if k in self.limits), default=0.0
            )
            self._next_start = max(now, self._next_start) + spacing
        self._forget(now)
        return sample

    def settle(self, send: Send, error: RequestError | None) -> None:
        """Learn from an answer: a 429 may teach a limit; an admission may raise one."""
        sample = send.ticket
        if isinstance(sample, Sample):
            self.answered(sample, refused=isinstance(error, RateLimited))

    def answered(self, sample: Sample, *, refused: bool, at: float | None = None) -> None:
        """Note the answer to ``sample`` (the model calls it directly), heard ``at`` (default:
        now; another worker's answer, replayed, was heard earlier)."""
        if sample.outcome is not None:
            return
        now = self.now() if at is None else at
        sample.outcome = not refused
        self._in_flight -= 1
        self._answered.set()
        if sample.probe:
            self._probing.out -= 1
        if refused:
            index = bisect.bisect_left(self._alive, sample.at)
            if index < len(self._alive) and self._alive[index] == sample.at:
                del self._alive[index]
            self._refusal_times.append(now - sample.at)
            self._refused(sample, now)
        else:
            self._admitted(sample, now)
        if self._refit_due and now - self._last_refit >= REFIT_EVERY:
            self._learn(now)

    # -- learning -----------------------------------------------------------------------------

    def _admitted(self, sample: Sample, now: float) -> None:
        raised = [
            (kind, sample.counts[kind] + 1)
            for kind, limit in self.limits.items()
            if sample.counts[kind] >= limit
        ]
        for kind, proved in raised:
            self.limits[kind] = proved
        probing = self._probing
        if sample.probe:
            if raised:
                probing.step *= 2
                probing.next_at = now  # slow start: the next probe at once
                probing.gap = PROBE_FIRST
                self._say(f"a probe was admitted: limit raised to {self._describe()}")
            else:
                probing.next_at = now + probing.gap

    def _refused(self, sample: Sample, now: float) -> None:
        # The opening met a limit: see what the requests in flight say. (Judged by when the
        # refused request left, not by when its answer is heard: a worker of a shared run hears
        # the others' answers late, and must judge the opening as they do.)
        if not self.limits and not self._opened and sample.at - self._started < RAMP:
            self._hold = True
        self._ramping = False
        probing = self._probing
        if sample.probe:
            probing.step = 1
            probing.gap = min(PROBE_MOST, probing.gap * 2)
            probing.next_at = now + probing.gap
            return
        if any(sample.counts[kind] >= near(limit) for kind, limit in self.limits.items()):
            return  # explained: sent at (or just under: arrival jitter) a limit
        self._refit_due = True

    def _learn(self, now: float) -> None:
        """Refit on the evidence so far; adopt a limit that passes the noise test."""
        self._last_refit = now
        # 429s come back fast, generations slowly: a request unanswered for longer than a 429
        # takes was admitted, for all the refit cares; one more recent is not judged yet
        # (counting only the answers in would see mostly refusals among the latest sends).
        settled = now - self._presume()
        points: list[Point] = []
        newest_refusal = -math.inf
        for s in reversed(self._samples):  # (the newest FIT_POINTS only: a refit stays cheap)
            if s.outcome is False:
                newest_refusal = max(newest_refusal, s.at)
            if s.at <= settled and not s.probe:
                points.append((s.counts, s.outcome is False))
                if len(points) >= FIT_POINTS:
                    break
        points.reverse()
        fit = refit(points)
        if fit is None:
            self._refit_due = newest_refusal > settled  # evidence still to come
            return
        self._refit_due = False
        probing = self._probing
        old = self.limits.get(fit.kind)
        self.limits[fit.kind] = fit.limit
        # A limit of another kind whose refusals the new one explains too explained nothing
        # more (a tie in the opening between a window and the requests in flight, or two windows)
        for kind in [k for k in self.limits if k != fit.kind]:
            theirs = [c for c, refused in points if refused and c[kind] >= self.limits[kind]]
            if all(c[fit.kind] >= near(fit.limit) for c in theirs):
                del self.limits[kind]
        if old is None or fit.limit < old:
            # the requests of that count already sent stay in its window: start over from now
            self._next_start = max(self._next_start, now)
        if probing.next_at == math.inf or old is None:
            probing.step, probing.gap, probing.next_at = 1, PROBE_FIRST, now + PROBE_FIRST
        self._say(
            f"429s: limit learned: {self._describe()} ({fit.refused_above} of the last {fit.span} answers"
            f" refused with {fit.limit} or more {COUNTED[fit.kind]})"
        )

    # -- counting -----------------------------------------------------------------------------

    def _counts(self, now: float) -> tuple[int, int, int, int]:
        alive = self._alive
        end = len(alive)
        one, ten, sixty = (end - bisect.bisect_right(alive, now - w) for w in WINDOWS)
        return one, ten, sixty, self._in_flight

    def _ramp_wait(self, now: float, counts: tuple[int, int, int, int]) -> float:
        """The opening: ``RAMP_FIRST`` sends, then twice as many every ``RAMP_DOUBLING`` s,
        until ``RAMP`` s after the first send or the first 429; after a first 429 that taught no
        limit, nothing until the requests in flight are answered."""
        if self._hold:
            settled = now - self._presume()
            unsettled = [s.at for s in self._samples if s.outcome is None and s.at > settled]
            if unsettled:
                return max(unsettled) - settled + 1e-6
            self._hold = False
            self._opened = True  # (the opening is judged once)
            self._after_opening(now)
            if self.limits:
                return self.admit(now)[0]
        if not self._ramping or math.isinf(self._started):
            return 0.0
        elapsed = now - self._started
        if elapsed >= RAMP:
            self._ramping = False
            return 0.0
        allowed = RAMP_FIRST * 2 ** math.floor(elapsed / RAMP_DOUBLING)
        if len(self._samples) < allowed:
            return 0.0
        return RAMP_DOUBLING * (math.floor(elapsed / RAMP_DOUBLING) + 1) - elapsed + 1e-6

    def _presume(self) -> float:
        """Seconds after which an unanswered request counts as admitted: twice the slowest
        recent 429's round trip (429s come back fast, generations slowly), within bounds."""
        return min(PRESUME_MOST, max(PRESUME_LEAST, 2 * max(self._refusal_times, default=0.0)))

    def _after_opening(self, now: float) -> None:
        """The opening met a limit and its requests are settled: when many were refused (not a
        few random 429s), what it admitted is the first estimate (it lasted under a second)."""
        opening = list(self._samples)
        refused = sum(1 for s in opening if s.outcome is False)
        if not opening or refused < OPENING_SHARE * len(opening):
            return
        self.limits[0] = max(1, len(opening) - refused)
        self._probing = _Probing(next_at=now + PROBE_FIRST)
        self._next_start = now
        self._say(
            f"429s in the opening: {refused} of {len(opening)} refused; limit taken as {self._describe()}"
        )

    def _forget(self, now: float) -> None:
        samples = self._samples
        while (
            samples
            and samples[0].outcome is not None
            and (samples[0].at < now - KEEP or len(samples) > KEEP_MOST)
        ):
            samples.popleft()
        cut = bisect.bisect_right(self._alive, now - 2 * WINDOWS[-1])
        if cut > 1024:  # noqa: PLR2004 - forget in batches: amortized O(1)
            del self._alive[:cut]

    def _describe(self) -> str:
        return ", ".join(
            f"{v} per {KINDS[k]}" if k < 3 else f"{v} in flight"  # noqa: PLR2004
            for k, v in sorted(self.limits.items())
        )

    def _say(self, reason: str) -> None:
        self.reason = reason
        log.info("%s", reason)
