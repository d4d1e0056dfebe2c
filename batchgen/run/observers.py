"""Run observers (s3transfer's subscribers): the progress bar, the metrics file and the report
page each subscribe to a run's events instead of being fed by hand from the runner.

Events, in order: :meth:`RunObserver.started` (the folder is open, nothing sent yet), then
:meth:`~RunObserver.counted` once per job of the file as its outcome is counted, then
:meth:`~RunObserver.stopped` (no job is at work any more), :meth:`~RunObserver.closing` (the
report is complete, the folder still open), then
:meth:`~RunObserver.closed` (the folder is closed and unlocked). An observer never stops a run:
what it cannot do it logs.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from batchgen.gates.meters import SendMeter
from batchgen.outcome import Tally
from batchgen.report import refresh_report
from batchgen.run.metrics import INTERVAL, write_metrics
from batchgen.run.progress import Progress
from batchgen.run.summary import RunReport
from batchgen.store import OutputFolder

__all__ = ["MetricsFile", "ProgressBar", "ReportPage", "RunObserver", "RunView", "describe_rate"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunView:
    """What observers may look at during a run: the jobs to judge (``total``), this run's
    tally, the open folder, the send meter, and the sending rate (requests per second; +inf
    before the first 429)."""

    total: int
    tally: Tally
    folder: OutputFolder
    meter: SendMeter
    sending_rate: Callable[[], float]


class RunObserver:
    """The events of a run; each does nothing unless overridden."""

    async def started(self, run: RunView) -> None:
        """The folder is open; nothing is sent yet."""

    def counted(self, tally: Tally) -> None:
        """A job's outcome was counted into ``tally``."""

    def stopped(self, report: RunReport) -> None:
        """No job is at work any more; jobs the run did not reach are not counted yet."""

    async def closing(self, report: RunReport) -> None:
        """The run is over (``report`` complete); the folder is still open."""

    async def closed(self, report: RunReport) -> None:
        """The folder is closed and unlocked."""


def describe_rate(rate: float) -> str:
    """A sending rate for progress lines: ``unlimited`` or ``N.N/s``."""
    return "unlimited" if rate == math.inf else f"{rate:.1f}/s"


class ProgressBar(RunObserver):
    """A live bar on a terminal, periodic log lines otherwise (:class:`Progress`)."""

    def __init__(self) -> None:
        self._progress: Progress | None = None

    async def started(self, run: RunView) -> None:
        """Open the bar."""
        self._progress = Progress(run.total, sending_rate=lambda: describe_rate(run.sending_rate()))

    def counted(self, tally: Tally) -> None:
        """Move the bar."""
        if self._progress is not None:
            self._progress.update(tally)

    def stopped(self, report: RunReport) -> None:
        """The final line ("stopped at" when the run stopped early)."""
        if self._progress is not None:
            self._progress.close(report.tally, stopped=report.stop_reason is not None)


class MetricsFile(RunObserver):
    """``--metrics-file``: a Prometheus textfile, every :data:`INTERVAL` seconds and at the end.
    A file that cannot be written is logged, never a reason to stop."""

    def __init__(self, path: Path, *, every: float = INTERVAL) -> None:
        self.path = path
        self.every = every  # seconds
        self._run: RunView | None = None
        self._task: asyncio.Task[None] | None = None

    async def started(self, run: RunView) -> None:
        """Write every ``every`` seconds from now on."""
        self._run = run
        self._task = asyncio.create_task(self._again_and_again())

    def stopped(self, report: RunReport) -> None:
        """No more periodic writes (called however the run ends)."""
        if self._task is not None:
            self._task.cancel()

    async def closing(self, report: RunReport) -> None:
        """Write the final figures."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        await self._write()

    async def _again_and_again(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            await self._write()

    async def _write(self) -> None:
        run = self._run
        assert run is not None
        counts = await run.folder.counts()
        try:
            await asyncio.to_thread(
                write_metrics, self.path, run.tally, counts, run.meter, run.sending_rate()
            )
        except OSError as exc:
            log.warning("cannot write the metrics file %s: %s", self.path, exc.strerror or exc)


class ReportPage(RunObserver):
    """``report.html`` refreshed at the end of a run (see :func:`~batchgen.report.refresh_report`)."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir

    async def closed(self, report: RunReport) -> None:
        """Refresh the page, up to the size a run refreshes."""
        if report.folder is not None:
            await asyncio.to_thread(refresh_report, self.out_dir, report.folder.total)
