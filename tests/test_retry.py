"""Retry policy and budget: pure functions of (error, attempt)."""

from __future__ import annotations

import random

from batchgen.errors import (
    AuthenticationError,
    CreditsExhausted,
    DownloadError,
    RateLimited,
    RequestRejected,
    ServerError,
    TransportError,
)
from batchgen.retry import RetryBudget, RetryPolicy

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


def test_budget_costs_more_after_timeouts_and_refunds_on_success():
    budget = RetryBudget(capacity=20)
    assert budget.spend(TransportError("t"))  # 10
    assert budget.spend(ServerError("s"))  # 5
    assert budget.tokens == 5
    assert not budget.spend(TransportError("t"))  # would need 10
    assert budget.tokens == 5
    budget.refund()
    assert budget.tokens == 6
    for _ in range(100):
        budget.refund()
    assert budget.tokens == 20
