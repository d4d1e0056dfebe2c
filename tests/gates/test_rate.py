"""The sending rate: free until the first 429, then CUBIC; the --rpm ceiling.

The limiter runs on a clock the tests move by hand (``reserve`` books a start without sleeping).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import random

import pytest

from batchgen.errors import RateLimited, ServerError
from batchgen.gates import Send
from batchgen.gates.rate import BETA, MIN_RATE, AdaptiveRate, RateCeiling


class Clock:
    """A clock the test moves by hand (seconds)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def send_at(limiter: AdaptiveRate, clock: Clock) -> Send:
    """Book the next start, move the clock there, and return the request as sent."""
    clock.now = limiter.reserve(clock.now)
    return Send(retry_of=None, sent_at=clock.now)


def run(limiter: AdaptiveRate, clock: Clock, seconds: float, answer) -> tuple[int, int]:
    """Send as fast as the limiter allows for ``seconds``; ``answer(send)`` -> error or None.
    Returns (requests sent, 429s)."""
    sent = throttled = 0
    end = clock.now + seconds
    while clock.now < end:  # bounded: the limiter spaces starts at least 1/rate apart
        send = send_at(limiter, clock)
        clock.now += 0.001  # answered at once
        error = answer(send)
        limiter.settle(send, error)
        sent += 1
        throttled += isinstance(error, RateLimited)
        if limiter.rate == math.inf:
            clock.now += 0.01  # 100/s before any 429: only the concurrency would bound it
    return sent, throttled


def sliding_window_limit(clock: Clock, per_second: int):
    """A server admitting ``per_second`` requests in any sliding second; 429 for the rest."""
    admitted: list[float] = []

    def answer(send: Send) -> RateLimited | None:
        recent = [t for t in admitted[-per_second:] if t > clock.now - 1.0]
        if len(recent) >= per_second:
            return RateLimited("429")
        admitted.append(clock.now)
        return None

    return answer


def test_no_client_side_limit_until_the_first_429():
    clock = Clock()
    limiter = AdaptiveRate(clock=clock)
    sent, _ = run(limiter, clock, 1.0, lambda send: None)
    assert limiter.rate == math.inf and sent > 90
    limiter.settle(Send(retry_of=None, sent_at=clock.now), ServerError("500"))
    assert limiter.rate == math.inf  # only 429s teach the rate


def test_a_hidden_limit_is_found_and_held_with_few_429s():
    clock = Clock()
    limiter = AdaptiveRate(clock=clock)
    server = sliding_window_limit(clock, 5)
    run(limiter, clock, 5.0, server)  # learning
    sent, throttled = run(limiter, clock, 60.0, server)  # held
    admitted = sent - throttled
    assert admitted / 60.0 >= 0.8 * 5
    assert throttled / sent <= 0.2
    assert "lowered" in limiter.reason


def test_far_above_the_limit_one_cut_lands_near_what_the_server_accepts():
    clock = Clock()
    limiter = AdaptiveRate(clock=clock)
    server = sliding_window_limit(clock, 5)
    run(limiter, clock, 2.0, server)
    assert limiter.rate < 10  # from 100/s, not 0.7 x 0.7 x ... one burst at a time


def test_429s_at_the_same_share_whatever_the_rate_do_not_starve_the_run():
    clock = Clock()
    limiter = AdaptiveRate(clock=clock)
    rng = random.Random(4)
    noise = lambda send: RateLimited("429") if rng.random() < 0.15 else None  # noqa: E731
    run(limiter, clock, 30.0, noise)
    assert limiter.rate >= 100 * BETA  # back to where it was, and not cut again and again


def test_the_rate_grows_back_in_time_not_per_success():
    clock = Clock()
    limiter = AdaptiveRate(clock=clock)
    run(limiter, clock, 1.0, lambda send: None)
    limiter.settle(Send(retry_of=None, sent_at=clock.now), RateLimited("429"))
    cut = limiter.rate
    for _ in range(100):  # many successes at the same moment: no growth
        limiter.settle(Send(retry_of=None, sent_at=clock.now), None)
    assert limiter.rate <= cut * 1.01
    run(limiter, clock, 5.0, lambda send: None)
    assert limiter.rate > cut


def test_a_burst_of_429s_cuts_once_to_what_the_server_admitted(caplog):
    clock = Clock()
    limiter = AdaptiveRate(clock=clock)
    sends = []
    for _ in range(10):  # no limit yet: sent 1 ms apart, the first answered after the last left
        sends.append(send_at(limiter, clock))
        clock.now += 0.001
    answers = [RateLimited("429")] * 3 + [None] * 3 + [RateLimited("429")] * 4  # 3 admitted
    with caplog.at_level(logging.INFO, logger="batchgen.gates.rate"):
        for send, error in zip(sends, answers, strict=True):
            limiter.settle(send, error)
    assert [r.message for r in caplog.records] == [  # one cut, and where it lands on the way
        "429s: sending rate lowered to 63.0/s (was sending 100.0/s, 1 of 10 refused)",
        "429s: sending rate lowered to 4.2/s (was sending 100.0/s, 4 of 10 refused)",
    ]
    assert limiter.rate == pytest.approx(BETA * 3)  # all refusals known: 3 admitted a second
    assert limiter.reason.startswith("429s: sending rate lowered to 2.1/s")
    round_trip = clock.now - sends[0].sent_at
    # the burst's second passes at the server first: its requests arrived up to a round trip late
    assert limiter.reserve(clock.now) == pytest.approx(sends[0].sent_at + 1.0 + round_trip)


def test_refusals_below_the_far_above_share_lower_the_rate_by_beta_from_what_was_sent():
    clock = Clock()
    limiter = AdaptiveRate(clock=clock)
    sends = [send_at(limiter, clock) for _ in range(10)]
    clock.now += 0.001
    for send in sends:
        limiter.settle(send, RateLimited("429") if send is sends[0] else None)
    assert limiter.rate == pytest.approx(BETA * 90)  # 9 of 10 admitted, sent within 0.1 s
    assert limiter.reserve(clock.now) < sends[0].sent_at + 0.1  # no wait for the second to pass


def test_answers_that_come_long_after_the_request_are_judged_on_the_recent_sending_rate():
    clock = Clock()
    limiter = AdaptiveRate(clock=clock)
    latency = 30.0  # image generation can take this long
    sends = [send_at(limiter, clock)]
    while clock.now < 100.0 + latency:  # 10 requests/s for 30 s, none answered yet
        clock.now += 0.1
        sends.append(send_at(limiter, clock))
    limiter.settle(sends[0], RateLimited("429"))  # the first answer, 30 s after it left
    assert limiter.rate == pytest.approx(BETA * 10, rel=0.1)  # the rate sent at, not 30 s of it


def test_a_rate_at_its_minimum_grows_back_when_answers_come_slowly():
    clock = Clock()
    limiter = AdaptiveRate(clock=clock)
    latency = 5.5  # longer than the 2 s between requests at the lowest rate, and out of step
    first = send_at(limiter, clock)
    clock.now += latency
    limiter.settle(first, RateLimited("429"))  # one request in 5.5 s: the lowest rate
    assert limiter.rate == MIN_RATE
    in_flight: list[Send] = []
    while clock.now < 160.0 and limiter.rate <= 4 * MIN_RATE:  # bounded: 1 / MIN_RATE apart at most
        slot = limiter.reserve(clock.now)
        while in_flight and in_flight[0].sent_at + latency <= slot:  # answered in between
            clock.now = in_flight[0].sent_at + latency
            limiter.settle(in_flight.pop(0), None)
        clock.now = slot
        in_flight.append(Send(retry_of=None, sent_at=slot))
    assert limiter.rate > 4 * MIN_RATE  # a second holding no request is not a rate of 0


async def test_paced_starts_are_evenly_spaced_on_the_loops_clock():
    limiter = AdaptiveRate()
    loop = asyncio.get_running_loop()
    limiter.rate = 20.0  # as after a cut: one start every 50 ms
    starts = []
    for _ in range(6):
        await limiter.enter(Send(retry_of=None))
        starts.append(loop.time())
    assert min(b - a for a, b in itertools.pairwise(starts)) >= 0.045


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
