"""Retry policy, pure: given an error and the attempt number, retry or stop, and after how long.

Backoff is "full jitter" exponential (AWS Architecture Blog, "Exponential Backoff And Jitter"):
the delay is drawn uniformly from ``[0, min(cap, base * 2**(attempt-1))]``, so clients that failed
together do not retry together. A ``Retry-After`` the server sends is a floor on the delay
(the AIML API has not been seen to send one, NOTES.md, but a proxy in front of it may).

The whole run shares a :class:`RetryBudget` (AWS SDKs' "standard" retry quota): a dead API
drains it quickly and the run stops, instead of every job retrying into the outage.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from batchgen.errors import RateLimited, RequestError, TransportError

__all__ = ["Decision", "RetryBudget", "RetryPolicy"]


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do after a failure: ``retry`` or not, and ``delay`` seconds before the retry."""

    retry: bool
    delay: float = 0.0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When a failed request is tried again.

    ``max_retries``: retries per job and step (generation or download) after the first attempt.
    ``base`` and ``cap``: backoff scale and ceiling, seconds (0 turns backoff off, for tests).
    """

    max_retries: int = 5
    base: float = 1.0
    cap: float = 60.0

    def decide(self, error: RequestError, attempt: int, rng: random.Random | None = None) -> Decision:
        """Judge ``error`` raised by try number ``attempt`` (1-based).

        Permanent errors and errors that stop the run are never retried here.
        """
        if error.stops_run:
            return Decision(False, reason="stops the run")
        if not error.transient:
            return Decision(False, reason="permanent")
        if attempt > self.max_retries:
            return Decision(False, reason=f"gave up after {attempt} attempts")
        ceiling = min(self.cap, self.base * 2 ** (attempt - 1))
        delay = (rng or random).uniform(0, ceiling)
        if isinstance(error, RateLimited) and error.retry_after is not None:
            delay = max(delay, error.retry_after)
        return Decision(True, delay)


@dataclass(slots=True)
class RetryBudget:
    """A run-wide retry quota, in tokens: AWS SDKs' standard retry mode.

    Each retry costs ``retry_cost`` tokens (``timeout_cost`` after a timeout or dropped
    connection), each success refunds ``success_refund``; when the tokens run out no job may
    retry and the run stops resumable.
    """

    capacity: int = 500
    retry_cost: int = 5
    timeout_cost: int = 10
    success_refund: int = 1
    tokens: int = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = self.capacity

    def spend(self, error: RequestError) -> bool:
        """Take the cost of retrying after ``error``; False (nothing taken) when it is not there."""
        cost = self.timeout_cost if isinstance(error, TransportError) else self.retry_cost
        if cost > self.tokens:
            return False
        self.tokens -= cost
        return True

    def refund(self) -> None:
        """Give back ``success_refund`` tokens after a success, up to ``capacity``."""
        self.tokens = min(self.capacity, self.tokens + self.success_refund)
