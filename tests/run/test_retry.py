"""Retry policy and budget: pure functions of (error, attempt)."""

from __future__ import annotations

import random

import pytest

from batchgen.errors import (
    AuthenticationError,
    CreditsExhausted,
    DownloadError,
    RateLimited,
    RequestRejected,
    RetryBudgetExhausted,
    ServerError,
    TransportError,
)
from batchgen.gates import Send
from batchgen.gates.quota import RetryQuota
from batchgen.run.retry import RetryPolicy

POLICY = RetryPolicy(max_retries=3, base=1.0, cap=8.0)


def test_transient_errors_retry_with_capped_full_jitter():
    rng = random.Random(1)
    for attempt in range(1, 4):
        for error in (ServerError("x"), TransportError("x"), RateLimited("x"), DownloadError("x")):
            decision = POLICY.decide(error, attempt, rng)
            assert decision.retry
            assert 0 <= decision.delay <= min(8.0, 2 ** (attempt - 1))


def test_attempts_are_capped():
    assert not POLICY.decide(ServerError("x"), 4).retry


def test_permanent_and_run_stopping_errors_never_retry():
    for error in (
        RequestRejected("x"),
        AuthenticationError("x"),
        CreditsExhausted("x"),
        RateLimited("x", long_wait=True),
        DownloadError("x", transient=False),
    ):
        assert not POLICY.decide(error, 1).retry


def test_retry_after_is_a_floor():
    decision = POLICY.decide(RateLimited("x", retry_after=30.0), 1, random.Random(0))
    assert decision.retry and decision.delay == 30.0


def test_zero_base_means_no_wait():
    assert RetryPolicy(base=0.0).decide(ServerError("x"), 5).delay == 0.0


async def test_quota_costs_more_after_timeouts_and_a_successful_retry_gives_its_cost_back():
    quota = RetryQuota(capacity=20)
    timeout_retry = Send(retry_of=TransportError("t"))
    await quota.enter(timeout_retry)  # 10
    server_retry = Send(retry_of=ServerError("s"))
    await quota.enter(server_retry)  # 5
    assert quota.tokens == 5
    with pytest.raises(RetryBudgetExhausted):
        await quota.enter(Send(retry_of=TransportError("t")))  # would need 10
    assert quota.tokens == 5
    quota.settle(server_retry, None)  # the retry worked: its 5 come back
    assert quota.tokens == 10
    quota.settle(timeout_retry, ServerError("again"))  # failed again: nothing back
    assert quota.tokens == 10
    first_try = Send(retry_of=None)
    await quota.enter(first_try)  # a first try costs nothing
    quota.settle(first_try, None)
    assert quota.tokens == 11
    for _ in range(100):
        quota.settle(first_try, None)
    assert quota.tokens == 20
