"""The learned limit: a count the client rebuilds, learned from labelled answers, paced under.

The limiter runs on a clock the tests move by hand: ``admit`` says how long a send must wait,
``sent`` notes it, ``answered`` gives the label. A small event loop below plays a server with a
hidden limit, ``concurrency`` places and a latency of +-20% (429s come back at once).
"""

from __future__ import annotations

import asyncio
import heapq
import math
import random
from collections import deque
from collections.abc import Callable

from batchgen.errors import RateLimited
from batchgen.gates import Send
from batchgen.gates.learned import KINDS, LearnedLimit


class Clock:
    """A clock the test moves by hand (seconds)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def sliding(per_window: int, window: float = 1.0) -> Callable[[float], bool]:
    """A server admitting ``per_window`` requests in any sliding window (arrival times)."""
    admitted: deque[float] = deque()

    def admit(at: float) -> bool:
        while admitted and admitted[0] <= at - window:
            admitted.popleft()
        if len(admitted) >= per_window:
            return False
        admitted.append(at)
        return True

    return admit


def drive(
    limiter: LearnedLimit,
    clock: Clock,
    admit: Callable[[float], bool],
    *,
    seconds: float,
    concurrency: int = 16,
    latency: float = 0.1,
    in_flight_cap: int | None = None,
) -> list[tuple[float, bool]]:
    """Send through ``limiter`` for ``seconds``; returns (send time, refused) per POST."""
    rng = random.Random(7)
    events: list[tuple[float, int, object]] = []
    busy = [0]
    posts: list[tuple[float, bool]] = []
    free = concurrency
    order = 0
    next_look = 0.0
    while clock.now < seconds:  # bounded: the clock moves forward every turn
        while free and clock.now >= next_look:
            wait, probe = limiter.admit(clock.now)
            if wait > 0:
                next_look = clock.now + (0.01 if math.isinf(wait) else wait)
                break
            sample = limiter.sent(clock.now, probe=probe)
            arrival = clock.now + rng.uniform(0.001, 0.003)
            ok = admit(arrival) and (in_flight_cap is None or busy[0] < in_flight_cap)
            busy[0] += ok
            posts.append((clock.now, not ok))
            order += 1
            took = latency * rng.uniform(0.8, 1.2) if ok else 0.002  # (generations vary; 429s are quick)
            heapq.heappush(events, (arrival + took, order, (sample, ok)))
            free -= 1
        upcoming = [events[0][0]] if events else []
        if free:
            upcoming.append(next_look)
        clock.now = max(clock.now + 1e-6, min(upcoming))
        while events and events[0][0] <= clock.now:
            _, _, (sample, ok) = heapq.heappop(events)
            busy[0] -= ok
            limiter.answered(sample, refused=not ok)
            free += 1
            next_look = min(next_look, clock.now)
    return posts


def test_before_any_429_nothing_is_held_back_but_the_opening_is_spread():
    limiter = LearnedLimit(clock=Clock())
    for _ in range(4):
        assert limiter.admit(0.0) == (0.0, False)
        limiter.sent(0.0)
    wait, _ = limiter.admit(0.0)
    assert 0 < wait <= 0.051  # the 5th send of the opening waits for the next doubling
    assert limiter.admit(0.5) == (0.0, False)  # after the ramp: no client-side limit
    assert limiter.rate == math.inf and limiter.limits == {}


def test_a_hidden_5_per_second_is_learned_and_paced_under_with_few_429s():
    clock = Clock()
    limiter = LearnedLimit(clock=clock)
    posts = drive(limiter, clock, sliding(5), seconds=60)
    assert limiter.limits == {KINDS.index("1s"): 5}
    steady = [refused for at, refused in posts if at >= 10]
    admitted = len(steady) - sum(steady)
    assert admitted / 50 >= 0.93 * 5  # about 5/s admitted from 10 s to 60 s
    assert sum(steady) / len(steady) <= 0.05  # the probes' 429s only
    assert sum(refused for at, refused in posts if at < 2) <= 10  # a gentle opening


def test_random_429s_with_no_limit_behind_them_teach_no_limit():
    clock = Clock()
    limiter = LearnedLimit(clock=clock)
    rng = random.Random(3)
    posts = drive(limiter, clock, lambda at: rng.random() >= 0.15, seconds=20, latency=0.2)
    assert limiter.limits == {}
    assert len(posts) > 20 * 16 / 0.2 * 0.9  # the run kept its concurrency's pace


def test_a_limit_on_requests_in_flight_is_told_from_a_rate():
    clock = Clock()
    limiter = LearnedLimit(clock=clock)
    posts = drive(limiter, clock, lambda at: True, seconds=40, latency=1.0, in_flight_cap=8)
    assert limiter.limits == {KINDS.index("in_flight"): 8}
    steady = [refused for at, refused in posts if at >= 10]
    assert sum(steady) / len(steady) <= 0.05


def test_a_10_second_window_is_learned_as_such():
    clock = Clock()
    limiter = LearnedLimit(clock=clock)
    drive(limiter, clock, sliding(50, 10.0), seconds=40)
    assert limiter.limits.get(KINDS.index("10s")) in (50, 51)
    assert KINDS.index("1s") not in limiter.limits  # the opening's tie was dropped


def test_a_rise_is_found_by_probes_and_a_drop_by_the_refusals():
    clock = Clock()
    limiter = LearnedLimit(clock=clock)
    drive(limiter, clock, sliding(2), seconds=15)
    assert limiter.limits == {0: 2}
    drive(limiter, clock, sliding(8), seconds=40)
    assert limiter.limits[0] >= 7  # found within the 25 s, probe by probe
    drive(limiter, clock, sliding(3), seconds=50)
    assert limiter.limits[0] <= 3


async def test_a_send_held_by_the_in_flight_limit_goes_when_an_answer_arrives():
    limiter = LearnedLimit()
    limiter.limits = {KINDS.index("in_flight"): 1}
    first = Send(None)
    await limiter.enter(first)
    second = Send(None)
    waiting = asyncio.create_task(limiter.enter(second))
    await asyncio.sleep(0)
    assert not waiting.done()
    limiter.settle(first, RateLimited("429"))
    await asyncio.wait_for(waiting, timeout=5)
    assert second.ticket is not None
