"""The sending rate: free until the first 429, then CUBIC; the --rpm ceiling; Retry-After pauses."""

from __future__ import annotations

import asyncio
import itertools
import math

from batchgen.errors import RateLimited, ServerError
from batchgen.gates import Send
from batchgen.ratelimit import BETA, AdaptiveRate, RateCeiling


class Clock:
    """A clock the test moves by hand (seconds)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def send_many(limiter: AdaptiveRate, clock: Clock, count: int, spacing: float) -> list[Send]:
    sends = []
    for _ in range(count):
        send = Send(retry_of=None)
        await limiter.enter(send)
        send.sent_at = clock.now
        sends.append(send)
        clock.now += spacing
    return sends


async def test_no_limit_until_the_first_429_then_cubic_from_the_measured_rate():
    clock = Clock()
    limiter = AdaptiveRate(clock=clock)
    sends = await send_many(limiter, clock, 20, 0.05)  # 20 requests per second
    assert limiter.rate == math.inf
    limiter.settle(sends[-1], RateLimited("429"))
    assert limiter.rate == round(20 * BETA, 6) or abs(limiter.rate - 20 * BETA) < 0.5
    assert "lowered" in limiter.reason
    cut = limiter.rate
    # Growing back is a matter of time, not of how many successes arrive.
    later = Send(retry_of=None, sent_at=clock.now)
    for _ in range(50):
        limiter.settle(later, None)
    assert limiter.rate <= 20 * 2  # never ahead of twice the measured sending rate
    clock.now += 0.01
    limiter.settle(later, None)
    soon = limiter.rate
    assert cut <= soon < 20
    await send_many(limiter, clock, 20, 0.05)  # keep the measured rate up
    clock.now += 2.0  # past K = cbrt(20 * 0.3 / 0.4) ~ 2.47 s after the cut
    limiter.settle(Send(retry_of=None, sent_at=clock.now), None)
    assert limiter.rate > soon


async def test_a_burst_of_429s_cuts_once_and_429s_at_a_steady_share_do_not_starve_the_run():
    clock = Clock()
    limiter = AdaptiveRate(clock=clock)
    sends = await send_many(limiter, clock, 40, 0.025)  # 40/s
    for send in sends[-10:]:  # ten answers of one burst, all 429
        limiter.settle(send, RateLimited("429"))
    after_first = limiter.rate
    assert abs(after_first - 40 * BETA) < 2
    # After the cut, 15% of answers are 429 (random, no real limit): below 1 - beta, before K.
    sends = await send_many(limiter, clock, 20, 1 / after_first)
    for i, send in enumerate(sends):
        limiter.settle(send, RateLimited("429") if i % 7 == 0 else None)
    assert limiter.rate >= after_first * 0.99


async def test_a_share_of_429s_above_one_minus_beta_cuts_again_at_once():
    clock = Clock()
    limiter = AdaptiveRate(clock=clock)
    sends = await send_many(limiter, clock, 100, 0.001)  # far above any limit
    limiter.settle(sends[-1], RateLimited("429"))
    first = limiter.rate
    sends = await send_many(limiter, clock, 10, 1 / first)
    for send in sends:
        limiter.settle(send, RateLimited("429"))
    assert limiter.rate < first * 0.8


async def test_other_errors_do_not_cut_the_rate():
    clock = Clock()
    limiter = AdaptiveRate(clock=clock)
    (send,) = await send_many(limiter, clock, 1, 0.1)
    limiter.settle(send, ServerError("500"))
    assert limiter.rate == math.inf


async def test_paced_starts_are_evenly_spaced_on_the_loops_clock():
    limiter = AdaptiveRate()
    loop = asyncio.get_running_loop()
    limiter.rate = 20.0  # as after a cut: one start every 50 ms
    starts = []
    for _ in range(6):
        await limiter.enter(Send(retry_of=None))
        starts.append(loop.time())
    assert min(b - a for a, b in itertools.pairwise(starts)) >= 0.045


async def test_retry_after_pauses_the_next_start():
    limiter = AdaptiveRate()
    loop = asyncio.get_running_loop()
    await limiter.enter(Send(retry_of=None))
    limiter.settle(Send(retry_of=None, sent_at=loop.time()), RateLimited("429", retry_after=0.2))
    before = loop.time()
    await limiter.enter(Send(retry_of=None))
    assert loop.time() - before >= 0.19


async def test_ceiling_spaces_starts_evenly_with_no_initial_burst():
    ceiling = RateCeiling(rpm=1200)  # one start every 50 ms
    loop = asyncio.get_running_loop()
    starts: list[float] = []

    async def one() -> None:
        await ceiling.enter(Send(retry_of=None))
        starts.append(loop.time())

    async with asyncio.TaskGroup() as group:
        for _ in range(6):
            group.create_task(one())
    starts.sort()
    assert min(b - a for a, b in itertools.pairwise(starts)) >= 0.045
