"""Gates that only watch: what a run sent and what it was charged (:class:`SendMeter`, read by
the metrics file, the progress line and the summary), and the latest ``Retry-After``
(:class:`RetryAfterMemo`, handed on to the next run)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from batchgen.errors import RateLimited, RequestError
from batchgen.gates import Send
from batchgen.outcome import Tally

__all__ = ["RetryAfterMemo", "SendMeter"]


@dataclass(slots=True)
class SendMeter:
    """A gate that only counts: requests, 429s, retries, when the last one succeeded, and into
    ``tally.spent`` what every answer's cost headers said it was charged, as it arrives (so
    the run's figure holds however the run then ends)."""

    tally: Tally
    requests: int = 0
    throttled: int = 0
    retries: int = 0
    last_success: float | None = None  # Unix time
    started: float = field(default_factory=time.time)

    async def enter(self, send: Send) -> None:
        """Count the request (a retry when it retries an error)."""
        self.requests += 1
        self.retries += send.retry_of is not None

    def settle(self, send: Send, error: RequestError | None) -> None:
        """Count a 429, or note the time of a success; count what the answer was charged."""
        if send.cost is not None:
            self.tally.spent += send.cost
        if error is None:
            self.last_success = time.time()
        elif isinstance(error, RateLimited):
            self.throttled += 1


class RetryAfterMemo:
    """A gate that remembers the latest ``Retry-After`` end, to hand it on to the next run."""

    def __init__(self) -> None:
        self.not_before = 0.0  # Unix time

    async def enter(self, send: Send) -> None:
        del send

    def settle(self, send: Send, error: RequestError | None) -> None:
        del send
        if isinstance(error, RateLimited) and error.retry_after:
            self.not_before = max(self.not_before, time.time() + error.retry_after)
