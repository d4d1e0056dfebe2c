"""The summary of one run, :class:`RunReport`: what ``run_batch`` returns, and what the command
prints, writes to ``--summary-json`` and keeps for ``status``."""

from __future__ import annotations

from dataclasses import dataclass, field

from batchgen.errors import BatchgenError
from batchgen.outcome import StopReason, Tally
from batchgen.run.control import stop_reason
from batchgen.store import StateCounts, utc_now

__all__ = ["RunReport"]


@dataclass(slots=True)
class RunReport:
    """The outcome of one run: the tally over the job file, why it stopped early (if it did),
    the stop's message, the jobs an earlier run left in flight (possibly charged), and the jobs
    an unforeseen error failed (each contained to its job; the others ran on)."""

    total: int
    tally: Tally
    stop_reason: StopReason | None = None
    stop_message: str = ""
    stop_advice: str = ""  # the one thing to do about the stop
    in_flight_before: list[tuple[str, list[str]]] = field(default_factory=list)
    cancelled: list[tuple[str, list[str]]] = field(default_factory=list)  # sent by this run, no answer
    crashed: list[str] = field(default_factory=list)  # jobs failed by an unforeseen error (a bug)
    changed: list[str] = field(default_factory=list)  # request changed since its record: sent anew
    frozen: list[str] = field(default_factory=list)  # ... and not sent (--frozen)
    redone: list[str] = field(default_factory=list)  # named by --redo and generated anew
    restored: list[str] = field(default_factory=list)  # a missing image fetched again
    missing: list[str] = field(default_factory=list)  # a missing image not fetched again
    folder: StateCounts | None = None  # the folder's counts and spend, all runs, at the end
    possibly_billed: list[tuple[str, list[str]]] = field(default_factory=list)  # left sent by a dead worker

    def ending(self) -> dict[str, object]:
        """How the run ended, as ``status`` shows it: time, stop reason and message, counts, spend."""
        t = self.tally
        return {
            "ended_at": utc_now(),
            "stop_reason": self.stop_reason.value if self.stop_reason else None,
            "stop_message": self.stop_message or None,
            "succeeded": t.succeeded,
            "failed": t.failed_final + t.failed_retryable,
            "not_reached": t.not_reached,
            "usd": float(t.spent.usd),
            "credits": float(t.spent.credits),
        }

    @property
    def complete(self) -> bool:
        """Every job of the file has succeeded, in this run or an earlier one."""
        return self.tally.succeeded + self.tally.already_done == self.total

    def stopped_by(self, cause: BaseException | None) -> bool:
        """Record ``cause`` (None: a signal) as why the run stopped, unless a cause already was;
        True when this one is the run's."""
        if self.stop_reason is not None:
            return False
        self.stop_reason = stop_reason(cause)
        if isinstance(cause, BatchgenError):
            self.stop_message, advice = cause.message, cause.hint
        else:
            self.stop_message, advice = str(cause or "stopped by signal"), ""
        self.stop_advice = advice or "run the same command again to resume"
        return True
