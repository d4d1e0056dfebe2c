"""The worker pool: run every job of a job file into an output folder, resumably.

``run_batch`` validates the whole file first (nothing is sent or written for an invalid one),
opens the output folder (lock, crash repair), then feeds the jobs through a bounded queue to
``concurrency`` workers in one ``asyncio.TaskGroup``. Each job goes through
:class:`batchgen.attempts.JobAttempt` (generate -> record -> fetch -> save).

Stopping: SIGINT/SIGTERM, a 401, a 403, an hourly 429, an exhausted retry budget or a full disk
set one stop event: nothing more is dispatched, in-flight requests finish (a second signal, or
``grace`` seconds, cancels them), and every record written so far stays valid for a resume.

Example::

    report = asyncio.run(run_batch(Path("sample_jobs/quickstart.yaml"), Path("out"), settings))
    print(report.tally.succeeded, report.stop_reason)
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from batchgen.attempts import JobAttempt, Outcome, RunControl
from batchgen.client import ApiClient, open_session
from batchgen.errors import (
    AuthenticationError,
    CreditsExhausted,
    RateLimited,
    RequestError,
    RetryBudgetExhausted,
    StorageError,
)
from batchgen.jobfile import Job, iter_jobs, scan_job_file
from batchgen.progress import Progress, Tally
from batchgen.ratelimit import AdaptiveRateLimiter
from batchgen.results import ResultStore
from batchgen.retry import RetryBudget, RetryPolicy
from batchgen.settings import Settings

__all__ = ["RunReport", "StopReason", "run_batch"]

log = logging.getLogger(__name__)


class StopReason(StrEnum):
    """Why a run stopped before trying every job; each leaves the folder resumable."""

    SIGNAL = "signal"  # SIGINT or SIGTERM
    BAD_KEY = "bad_key"  # 401: fix the key
    NO_CREDITS = "no_credits"  # 403: top up credits or raise the spend cap
    HOURLY_LIMIT = "hourly_limit"  # 429 "limit for the hour": run again later
    RETRY_BUDGET = "retry_budget"  # the API kept failing: the run-wide retry quota ran out
    STORAGE = "storage"  # the output folder could not be written (disk full...)


@dataclass(slots=True)
class RunReport:
    """The outcome of one run: the tally over the job file, why it stopped early (if it did),
    the stop's message, and the jobs an earlier run left in flight (possibly charged)."""

    total: int
    tally: Tally
    stop_reason: StopReason | None = None
    stop_message: str = ""
    in_flight_before: list[tuple[str, list[str]]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every job of the file has succeeded, in this run or an earlier one."""
        return self.tally.succeeded + self.tally.already_done == self.total


async def run_batch(job_file: Path, out_dir: Path, settings: Settings, *, progress: bool = True) -> RunReport:
    """Run every job of ``job_file`` into ``out_dir``; safe to call again to resume.

    Raises :class:`~batchgen.errors.JobFileError` (nothing sent, nothing written),
    :class:`~batchgen.errors.OutputLockedError`, or :class:`~batchgen.errors.StorageError`
    when the folder cannot be opened. Everything else ends up in the returned report.
    """
    summary = await asyncio.to_thread(scan_job_file, job_file)
    job_file_path = await asyncio.to_thread(job_file.resolve)
    async with ResultStore.open(out_dir, max_pixels=settings.max_pixels) as store:
        await store.db.set_meta("total_jobs", str(summary.count))
        await store.db.set_meta("job_file", str(job_file_path))
        in_flight = await store.db.in_flight()
        if in_flight:
            log.warning(
                "%d job(s) were in flight when the last run stopped; each may have been charged once. "
                "Their X-Client-Request-Ids can be matched in the API's usage logs (GET /v2/logs): %s",
                len(in_flight),
                "; ".join(f"{job}: {ids[-1]}" for job, ids in in_flight[:20] if ids),
            )
        report = RunReport(summary.count, Tally(), in_flight_before=in_flight)
        async with open_session(settings) as session:
            pool = _Pool(settings, store, ApiClient(session, settings), report)
            pool.progress = Progress(summary.count) if progress else None
            await pool.run(iter_jobs(job_file))
        report.tally.not_reached = summary.count - report.tally.seen
    return report


_STOPS: list[tuple[type[BaseException], StopReason]] = [
    (AuthenticationError, StopReason.BAD_KEY),
    (CreditsExhausted, StopReason.NO_CREDITS),
    (RateLimited, StopReason.HOURLY_LIMIT),
    (StorageError, StopReason.STORAGE),
    (RetryBudgetExhausted, StopReason.RETRY_BUDGET),
]


class _Pool(RunControl):
    """One run's workers, queue, stop event and signal handling."""

    def __init__(self, settings: Settings, store: ResultStore, client: ApiClient, report: RunReport) -> None:
        super().__init__(
            limiter=AdaptiveRateLimiter(settings.rpm),
            policy=RetryPolicy(settings.max_retries, settings.backoff_base, settings.backoff_cap),
            budget=RetryBudget(settings.retry_budget),
        )
        self.settings = settings
        self.store = store
        self.client = client
        self.report = report
        self.progress: Progress | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._grace_timer: asyncio.TimerHandle | None = None

    async def run(self, jobs: Iterator[Job]) -> None:
        queue: asyncio.Queue[Job | None] = asyncio.Queue(maxsize=self.settings.concurrency * 2)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._on_signal)
        try:
            async with asyncio.TaskGroup() as group:
                self._tasks = [group.create_task(self._produce(jobs, queue))]
                self._tasks += [
                    group.create_task(self._work(queue)) for _ in range(self.settings.concurrency)
                ]
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            if self._grace_timer is not None:
                self._grace_timer.cancel()
            if self.progress is not None:
                self.progress.close(self.report.tally)

    async def _produce(self, jobs: Iterator[Job], queue: asyncio.Queue[Job | None]) -> None:
        while not self.stopping:
            # Reading the next job may read a local image: keep it off the event loop.
            job = await asyncio.to_thread(next, jobs, None)
            if job is None:
                break
            await queue.put(job)
        # Not in a `finally`: when cancelled, the workers are cancelled too and nobody would
        # drain the queue these sentinels wait on.
        for _ in range(self.settings.concurrency):
            await queue.put(None)

    async def _work(self, queue: asyncio.Queue[Job | None]) -> None:
        while (job := await queue.get()) is not None:
            if self.stopping:
                continue  # left pending; counted as not reached
            attempt = JobAttempt(job, self, self.store, self.client, retry_failed=self.settings.retry_failed)
            try:
                outcome = await attempt.run()
            except (RequestError, StorageError) as exc:
                self.stop(exc)
                continue
            self._count(outcome, attempt.tokens_used)

    def _count(self, outcome: Outcome, tokens: float) -> None:
        tally = self.report.tally
        tally.tokens_used += tokens
        if outcome is Outcome.INTERRUPTED:
            return  # counted as not reached at the end
        setattr(tally, outcome.value, getattr(tally, outcome.value) + 1)  # values name Tally fields
        if self.progress is not None:
            self.progress.update(tally)

    def stop(self, cause: BaseException | None = None) -> None:
        """Stop dispatching; record the first cause as the run's stop reason."""
        if self.report.stop_reason is None:
            reason = next((r for kind, r in _STOPS if isinstance(cause, kind)), StopReason.SIGNAL)
            self.report.stop_reason = reason
            self.report.stop_message = str(cause) if cause is not None else "stopped by signal"
            log.warning("stopping (%s): %s", reason, self.report.stop_message)
        super().stop(cause)

    def _on_signal(self) -> None:
        if self.stopping:
            log.warning("second signal: cancelling in-flight requests")
            self._cancel_workers()
            return
        log.warning(
            "signal received: no new requests; waiting up to %gs for in-flight ones (signal again to cancel)",
            self.settings.grace,
        )
        self.stop()
        self._grace_timer = asyncio.get_running_loop().call_later(self.settings.grace, self._cancel_workers)

    def _cancel_workers(self) -> None:
        for task in self._tasks:  # the producer too: it may wait on a queue nobody drains now
            task.cancel()
