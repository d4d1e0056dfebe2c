"""The adaptive rate limiter: smooth ceiling from the start, AIMD under 429s."""

from __future__ import annotations

import asyncio
import itertools

from batchgen.ratelimit import AdaptiveRateLimiter


async def test_ceiling_spaces_starts_evenly_with_no_initial_burst():
    limiter = AdaptiveRateLimiter(rpm=1200)  # one start every 50 ms
    loop = asyncio.get_running_loop()
    starts = []
    for _ in range(8):
        await limiter.acquire()
        starts.append(loop.time())
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 0.045


async def test_concurrent_waiters_share_the_same_ceiling():
    limiter = AdaptiveRateLimiter(rpm=1200)
    loop = asyncio.get_running_loop()
    starts: list[float] = []

    async def one() -> None:
        await limiter.acquire()
        starts.append(loop.time())

    async with asyncio.TaskGroup() as group:
        for _ in range(6):
            group.create_task(one())
    starts.sort()
    assert min(b - a for a, b in itertools.pairwise(starts)) >= 0.045


def test_throttling_halves_once_per_burst_and_successes_add_back():
    now = [100.0]
    limiter = AdaptiveRateLimiter(rpm=600, clock=lambda: now[0])
    limiter.on_throttled(sent_at=99.0)
    assert limiter.rate == 300
    limiter.on_throttled(sent_at=99.5)  # sent before the decrease: same burst
    assert limiter.rate == 300
    now[0] = 101.0
    limiter.on_throttled(sent_at=100.5)  # sent after it: the lower rate is still too high
    assert limiter.rate == 150
    for _ in range(10):
        limiter.on_success()
    assert limiter.rate == 150 + 10 * 12  # 2% of the ceiling per success
    for _ in range(1000):
        limiter.on_success()
    assert limiter.rate == 600


def test_rate_never_goes_below_the_floor():
    now = [0.0]
    limiter = AdaptiveRateLimiter(rpm=60, floor=5, clock=lambda: now[0])
    for step in range(20):
        now[0] = float(step + 1)
        limiter.on_throttled(sent_at=now[0])
    assert limiter.rate == 5


async def test_pause_delays_the_next_start():
    limiter = AdaptiveRateLimiter(rpm=60_000)
    loop = asyncio.get_running_loop()
    await limiter.acquire()
    limiter.pause(0.2)
    before = loop.time()
    await limiter.acquire()
    assert loop.time() - before >= 0.19
