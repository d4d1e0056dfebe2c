"""Progress of a run: a live bar (tqdm) on a terminal, plain periodic log lines otherwise (cron)."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable
from typing import TextIO

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from batchgen.money import usd
from batchgen.outcome import Tally

__all__ = ["Progress"]

log = logging.getLogger("batchgen.progress")  # (the name logs and filters have always used)


class Progress:
    """Reports a :class:`Tally` as jobs finish: every job on a terminal, every ``interval``
    seconds (and at the end) as a log line elsewhere. ``total`` is the job count of the file;
    ``sending_rate`` describes the current sending rate and why (shown with the counts)."""

    def __init__(
        self,
        total: int,
        *,
        stream: TextIO | None = None,
        interval: float = 30.0,
        sending_rate: Callable[[], str] | None = None,
    ) -> None:
        self.total = total
        self._sending_rate = sending_rate
        self._stream = stream or sys.stderr
        self._interval = interval
        self._started = time.monotonic()
        self._last_log = self._started
        interactive = self._stream.isatty()
        self._bar = (
            tqdm(total=total, file=self._stream, unit="job", dynamic_ncols=True) if interactive else None
        )
        # Log lines go above the bar, not through it (tqdm's own handler while it is shown).
        self._redirect: contextlib.AbstractContextManager[object] = (
            logging_redirect_tqdm() if interactive else contextlib.nullcontext()
        )
        self._redirect.__enter__()

    def update(self, tally: Tally) -> None:
        """Show the tally after a job changed state."""
        if self._bar is not None:
            # update() lets tqdm throttle redraws (mininterval); forcing one per job is slow on resume.
            self._bar.set_postfix_str(self._summary(tally), refresh=False)
            self._bar.update(tally.seen - self._bar.n)
        elif time.monotonic() - self._last_log >= self._interval:
            self._last_log = time.monotonic()
            log.info("progress %d/%d: %s%s", tally.seen, self.total, self._summary(tally), self._eta(tally))

    def close(self, tally: Tally, *, stopped: bool = False) -> None:
        """Final line ("stopped at" when the run stopped early); closes the bar."""
        if self._bar is not None:
            self.update(tally)
            self._bar.refresh()
            self._bar.close()
        self._redirect.__exit__(None, None, None)
        ended = "stopped at" if stopped else "finished"
        log.info("%s %d/%d: %s", ended, tally.seen, self.total, self._summary(tally))

    def _eta(self, tally: Tally) -> str:
        """The time left at this run's pace so far (bars show their own)."""
        elapsed = time.monotonic() - self._started
        newly = tally.seen - tally.already_done  # jobs skipped as done say nothing of the pace
        left = self.total - tally.seen
        if newly <= 0 or left <= 0:
            return ""
        return f" eta={time.strftime('%H:%M:%S', time.gmtime(left * elapsed / newly))}"

    def _summary(self, tally: Tally) -> str:
        minutes = max(time.monotonic() - self._started, 1e-9) / 60
        done = tally.succeeded + tally.already_done
        failed = tally.failed_final + tally.failed_retryable
        rate = tally.succeeded / minutes
        sending = f" sending={self._sending_rate()}" if self._sending_rate else ""
        money = f" spent={usd(tally.spent.usd)}" if tally.spent.usd else ""
        return (
            f"done={done} failed={failed} rate={rate:.1f}/min tokens={tally.tokens_used:.0f}{money}{sending}"
        )
