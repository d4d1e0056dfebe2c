"""The shared vocabulary of how a job stands and how a run ends, one enum each, at the bottom
of the package (every stage imports it; it imports only :mod:`batchgen.money`):

- :class:`JobState`: a job's durable state in the store (the write-ahead state machine);
- :class:`Status`: a finished job's record in the manifest (succeeded or failed);
- :class:`Outcome` and :class:`Tally`: how each job of the file ended in this run, and the counts;
- :class:`StopReason`: why a run stopped before trying every job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from batchgen.money import Spend

__all__ = ["JobState", "Outcome", "Status", "StopReason", "Tally"]


class JobState(StrEnum):
    """Where a job stands."""

    PENDING = "pending"  # not sent, or sent and refused without an answer (not billed)
    DISPATCHED = "dispatched"  # committed as sent; no answer recorded yet (maybe billed)
    ANSWERED = "answered"  # generation answered and recorded; images not all saved yet
    SUCCEEDED = "succeeded"  # record committed; never sent again
    FAILED = "failed"  # record committed; ``final`` says whether a plain resume retries it


class Status(StrEnum):
    """A finished job's outcome."""

    SUCCEEDED = "succeeded"  # every image saved and verified
    FAILED = "failed"  # see ``error``; ``error.retryable`` says whether a plain resume re-sends it


class Outcome(StrEnum):
    """How one job of the file ended in this run; each value names its :class:`Tally` counter."""

    SUCCEEDED = "succeeded"  # every image saved in this run
    ALREADY_DONE = "already_done"  # succeeded in an earlier run; nothing sent
    FAILED_FINAL = "failed_final"  # failed for good (now or earlier); re-sent only with --retry-failed
    FAILED_RETRYABLE = "failed_retryable"  # failed transiently; a resume re-sends or re-downloads it
    NOT_REACHED = "not_reached"  # the run stopped first; it stays resumable
    CHANGED_FROZEN = "changed_frozen"  # its request changed since its record; --frozen: not sent
    OTHER_WORKER = "other_worker"  # a live worker of the same run holds it (PostgreSQL state)
    POSSIBLY_BILLED = "possibly_billed"  # a worker that died left it sent: not re-sent unasked


@dataclass(slots=True)
class Tally:
    """What this run has seen of the job file's jobs so far: a count per :class:`Outcome`."""

    succeeded: int = 0  # in this run
    already_done: int = 0  # succeeded in an earlier run: skipped, nothing sent
    failed_final: int = 0  # failed for good (now or earlier); re-sent only with --retry-failed
    failed_retryable: int = 0  # failed transiently; a resume re-sends or re-downloads them
    not_reached: int = 0  # left untouched because the run stopped
    changed_frozen: int = 0  # changed since their record, not sent (--frozen)
    other_worker: int = 0  # held by another live worker of the run
    possibly_billed: int = 0  # left sent by a worker that died: --resend-possibly-billed sends them
    tokens_used: float = 0.0  # reported by the API for this run's generations
    images: int = 0  # saved by this run
    spent: Spend = field(default_factory=Spend)  # what this run's generations cost (cost headers)

    def add(self, outcome: Outcome) -> None:
        """Count one job's outcome."""
        setattr(self, outcome.value, getattr(self, outcome.value) + 1)

    @property
    def seen(self) -> int:
        """Jobs finished or judged so far."""
        return (
            self.succeeded
            + self.already_done
            + self.failed_final
            + self.failed_retryable
            + self.not_reached
            + self.changed_frozen
            + self.other_worker
            + self.possibly_billed
        )


class StopReason(StrEnum):
    """Why a run stopped before trying every job; each leaves the folder resumable."""

    SIGNAL = "signal"  # SIGINT, SIGTERM or SIGHUP
    BAD_KEY = "bad_key"  # 401: fix the key
    NO_CREDITS = "no_credits"  # 403: top up credits or raise the spend cap
    HOURLY_LIMIT = "hourly_limit"  # 429 "limit for the hour", or a long Retry-After: run again later
    RETRY_BUDGET = "retry_budget"  # the API kept failing: the run-wide retry quota ran out
    STORAGE = "storage"  # the output folder could not be written (disk full...)
    ENDPOINT = "endpoint"  # 404/405, DNS or TLS: the base URL does not reach the API
    JOB_FILE = "job_file"  # the job file changed or broke during the run
    BUDGET = "budget"  # --max-usd / --max-credits: the next request would pass the spend budget
