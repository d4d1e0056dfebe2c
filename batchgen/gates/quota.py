"""The run-wide retry quota (AWS SDKs' "standard" retry mode), as a gate: a dead API drains it
quickly and the run stops, instead of every job retrying into the outage."""

from __future__ import annotations

from dataclasses import dataclass, field

from batchgen.errors import RequestError, RetryBudgetExhausted, TransportError
from batchgen.gates import Send

__all__ = ["RetryQuota"]


@dataclass(slots=True)
class RetryQuota:
    """A run-wide retry quota, in tokens: AWS SDKs' standard retry mode, as a gate.

    A retry takes ``retry_cost`` tokens (``timeout_cost`` after a timeout or dropped
    connection) before it is sent; when it succeeds it gives them back; a first try that
    succeeds adds ``success_refund``. When a retry finds too few tokens, it raises
    :class:`RetryBudgetExhausted` and the run stops, resumable.
    """

    capacity: int = 500
    retry_cost: int = 5
    timeout_cost: int = 10
    success_refund: int = 1
    tokens: int = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = self.capacity

    async def enter(self, send: Send) -> None:
        """Take the cost of a retry (nothing for a first try)."""
        error = send.retry_of
        if error is None:
            return
        cost = self.timeout_cost if isinstance(error, TransportError) else self.retry_cost
        if cost > self.tokens:
            raise RetryBudgetExhausted(f"retry budget exhausted; last error: {error}") from error
        self.tokens -= cost
        send.quota_taken = cost

    def settle(self, send: Send, error: RequestError | None) -> None:
        """Give a successful retry's cost back (or ``success_refund`` for a first try)."""
        if error is None:
            self.tokens = min(self.capacity, self.tokens + (send.quota_taken or self.success_refund))
