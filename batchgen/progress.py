"""Progress of a run: a live bar (tqdm) on a terminal, plain periodic log lines otherwise (cron)."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from typing import TextIO

from tqdm import tqdm

__all__ = ["Progress", "Tally"]

log = logging.getLogger("batchgen.progress")


@dataclass(slots=True)
class Tally:
    """What this run has seen of the job file's jobs so far."""

    succeeded: int = 0  # in this run
    already_done: int = 0  # succeeded in an earlier run: skipped, nothing sent
    failed_final: int = 0  # failed for good (now or earlier); re-sent only with --retry-failed
    failed_retryable: int = 0  # failed transiently; a resume re-sends or re-downloads them
    not_reached: int = 0  # left untouched because the run stopped
    tokens_used: float = 0.0  # reported by the API for this run's generations

    @property
    def seen(self) -> int:
        """Jobs finished or judged so far."""
        return (
            self.succeeded + self.already_done + self.failed_final + self.failed_retryable + self.not_reached
        )


class Progress:
    """Reports a :class:`Tally` as jobs finish: every job on a terminal, every ``interval``
    seconds (and at the end) as a log line elsewhere. ``total`` is the job count of the file."""

    def __init__(self, total: int, *, stream: TextIO | None = None, interval: float = 30.0) -> None:
        self.total = total
        self._stream = stream or sys.stderr
        self._interval = interval
        self._started = time.monotonic()
        self._last_log = self._started
        interactive = self._stream.isatty()
        self._bar = (
            tqdm(total=total, file=self._stream, unit="job", dynamic_ncols=True) if interactive else None
        )

    def update(self, tally: Tally) -> None:
        """Show the tally after a job changed state."""
        if self._bar is not None:
            # update() lets tqdm throttle redraws (mininterval); forcing one per job is slow on resume.
            self._bar.set_postfix_str(self._summary(tally), refresh=False)
            self._bar.update(tally.seen - self._bar.n)
        elif time.monotonic() - self._last_log >= self._interval:
            self._last_log = time.monotonic()
            log.info("progress %d/%d: %s", tally.seen, self.total, self._summary(tally))

    def close(self, tally: Tally) -> None:
        """Final line; closes the bar."""
        if self._bar is not None:
            self.update(tally)
            self._bar.refresh()
            self._bar.close()
        log.info("finished %d/%d: %s", tally.seen, self.total, self._summary(tally))

    def _summary(self, tally: Tally) -> str:
        minutes = max(time.monotonic() - self._started, 1e-9) / 60
        done = tally.succeeded + tally.already_done
        failed = tally.failed_final + tally.failed_retryable
        rate = tally.succeeded / minutes
        return f"done={done} failed={failed} rate={rate:.1f}/min tokens={tally.tokens_used:g}"
