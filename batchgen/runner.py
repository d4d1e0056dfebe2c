"""The worker pool: run every job of a job file into an output folder, resumably.

``run_batch`` validates the whole file first (nothing is sent or written for an invalid one),
opens the output folder (lock, crash repair), then feeds the jobs, in chunks read off the event
loop and judged against the folder's state with one lookup per chunk, to one task per job in
one ``asyncio.TaskGroup``. At most ``concurrency`` jobs are at work at once; a job gives its
place back while it waits out a backoff, so one unlucky job never idles a place. Each job goes
through :class:`batchgen.attempts.JobAttempt` (generate -> record -> fetch -> save); every
request passes the run's gates (retry quota, adaptive rate, optional ``--rpm`` ceiling:
:mod:`batchgen.gates`).

Stopping: SIGINT/SIGTERM, a 401, a 403, an hourly 429, an exhausted retry budget or a full disk
set one stop event: nothing more is dispatched, in-flight requests finish (a second signal, or
``grace`` seconds, cancels them), and every record written so far stays valid for a resume.

Example::

    report = asyncio.run(run_batch(Path("sample_jobs/quickstart.yaml"), Path("out"), settings))
    print(report.tally.succeeded, report.stop_reason)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import signal
import time
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from batchgen.attempts import JobAttempt, RunControl, Verdict, judge
from batchgen.budget import Budget
from batchgen.client import ApiClient, open_session
from batchgen.errors import (
    LONG_RETRY_AFTER,
    AuthenticationError,
    BatchgenError,
    BudgetReached,
    CreditsExhausted,
    EndpointNotFound,
    JobFileError,
    RateLimited,
    RequestError,
    RetryBudgetExhausted,
    StorageError,
    Unreachable,
    UsageError,
)
from batchgen.gates import Gate, Gates, Send
from batchgen.jobfile import Job, iter_jobs, scan_job_file
from batchgen.metrics import INTERVAL, SendMeter, write_metrics
from batchgen.progress import Outcome, Progress, Tally
from batchgen.ratelimit import AdaptiveRate, RateCeiling
from batchgen.responses import Spend
from batchgen.retry import Interrupted, RetryPolicy, RetryQuota, Seat
from batchgen.settings import Settings
from batchgen.store import JobRow, JobState, ManifestRecord, OutputFolder, StateCounts, utc_now

__all__ = ["RunReport", "StopReason", "run_batch"]

log = logging.getLogger(__name__)

FEED_CHUNK = 256  # jobs read and looked up per hop off the event loop ...
FEED_CHARS = 32 * 1024 * 1024  # ... or fewer, when their bodies (inline images) reach this size
NOT_BEFORE = "not_before"  # folder meta: a Retry-After's end (Unix time) that outlives the run


class StopReason(StrEnum):
    """Why a run stopped before trying every job; each leaves the folder resumable."""

    SIGNAL = "signal"  # SIGINT or SIGTERM
    BAD_KEY = "bad_key"  # 401: fix the key
    NO_CREDITS = "no_credits"  # 403: top up credits or raise the spend cap
    HOURLY_LIMIT = "hourly_limit"  # 429 "limit for the hour", or a long Retry-After: run again later
    RETRY_BUDGET = "retry_budget"  # the API kept failing: the run-wide retry quota ran out
    STORAGE = "storage"  # the output folder could not be written (disk full...)
    ENDPOINT = "endpoint"  # 404/405, DNS or TLS: the base URL does not reach the API
    JOB_FILE = "job_file"  # the job file changed or broke during the run
    BUDGET = "budget"  # --max-usd / --max-credits: the next request would pass the spend budget


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
    crashed: list[str] = field(default_factory=list)  # jobs failed by an unforeseen error (a bug)
    changed: list[str] = field(default_factory=list)  # request changed since its record: sent anew
    frozen: list[str] = field(default_factory=list)  # ... and not sent (--frozen)
    redone: list[str] = field(default_factory=list)  # named by --redo and generated anew
    restored: list[str] = field(default_factory=list)  # a missing image fetched again
    missing: list[str] = field(default_factory=list)  # a missing image not fetched again
    folder: StateCounts | None = None  # the folder's counts and spend, all runs, at the end

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
            "usd": round(t.spent.usd, 6),
            "credits": round(t.spent.credits, 3),
        }

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
    summary = await asyncio.to_thread(functools.partial(scan_job_file, job_file, only=settings.only))
    if summary.missing:
        log.warning("not in %s, so not run: %s", job_file, ", ".join(summary.missing[:20]))
    job_file_path = await asyncio.to_thread(job_file.resolve)
    async with OutputFolder.open(out_dir, max_pixels=settings.max_pixels) as folder:
        await _claim(folder, out_dir, job_file_path, summary.count, add=settings.add_job_file)
        total = summary.count if summary.selected is None else summary.selected
        report = RunReport(total, Tally())
        async with open_session(settings) as session:
            pool = _Pool(
                settings, folder, ApiClient(session, settings), report, await _budget(settings, folder)
            )
            if progress:
                pool.progress = Progress(total, sending_rate=pool.describe_rate)
            jobs = iter_jobs(job_file, scanned=summary)
            only = settings.only
            writer = (
                asyncio.create_task(pool.write_metrics(every=INTERVAL)) if settings.metrics_file else None
            )
            try:
                await pool.run(jobs if only is None else (job for job in jobs if job.id in only))
            finally:
                if writer is not None:
                    writer.cancel()
                    await asyncio.gather(writer, return_exceptions=True)
        report.tally.not_reached += total - report.tally.seen
        report.folder = await folder.counts()
        if settings.metrics_file is not None:
            await pool.write_metrics()
        try:
            await folder.set_meta("last_run", json.dumps(report.ending()))
        except StorageError as exc:  # (a full disk stopped the run: the report says so already)
            log.warning("how the run ended could not be recorded for `status`: %s", exc.message)
    if report.in_flight_before:
        log.warning(
            "%d job(s) of this file were in flight when an earlier run stopped; each may have been charged "
            "once. Their X-Client-Request-Ids can be matched in the API's usage logs (GET /v2/logs): %s",
            len(report.in_flight_before),
            "; ".join(f"{job}: {ids[-1]}" for job, ids in report.in_flight_before[:20] if ids),
        )
    return report


async def _claim(folder: OutputFolder, out_dir: Path, job_file: Path, count: int, *, add: bool) -> None:
    """Record which job file the folder serves (and how many jobs it holds).

    A folder serves one job file: its counts (``status``) are that file's. Running another file
    into it is refused unless ``add`` (``--add-job-file``): then the folder serves both and its
    total is the sum. Raises :class:`UsageError` (nothing sent, nothing written).
    """
    known = await folder.get_meta("job_file")
    files = json.loads(await folder.get_meta("job_files") or "{}") or ({known: None} if known else {})
    if files and str(job_file) not in files and not add:
        raise UsageError(
            f"{out_dir} holds the results of {', '.join(files)}; use another --out folder for "
            f"{job_file}, or --add-job-file to add its jobs to this folder"
        )
    files[str(job_file)] = count
    await folder.set_meta("job_files", json.dumps(files))
    await folder.set_meta("job_file", str(job_file))
    await folder.set_meta("total_jobs", str(sum(n or 0 for n in files.values())))


_STOPS: list[tuple[type[BaseException], StopReason]] = [
    (AuthenticationError, StopReason.BAD_KEY),
    (EndpointNotFound, StopReason.ENDPOINT),
    (Unreachable, StopReason.ENDPOINT),
    (JobFileError, StopReason.JOB_FILE),
    (CreditsExhausted, StopReason.NO_CREDITS),
    (RateLimited, StopReason.HOURLY_LIMIT),
    (StorageError, StopReason.STORAGE),
    (RetryBudgetExhausted, StopReason.RETRY_BUDGET),
    (BudgetReached, StopReason.BUDGET),
]


async def _budget(settings: Settings, folder: OutputFolder) -> Budget | None:
    """The run's spend budget, if one was asked for, knowing what each model cost before."""
    if settings.max_usd is None and settings.max_credits is None:
        return None
    known = {
        model: Spend(max(c.usd for c in costs), max(c.credits for c in costs))
        for model, costs in (await folder.request_costs()).items()
    }
    return Budget(max_usd=settings.max_usd, max_credits=settings.max_credits, known=known)


async def _chunks(jobs: Iterator[Job]) -> AsyncGenerator[list[Job], None]:
    """The job file in chunks, each read off the event loop (it may read local images).
    Raises JobFileError as ``jobs`` does."""
    while chunk := await asyncio.to_thread(_take, jobs):
        yield chunk


def _take(jobs: Iterator[Job]) -> list[Job]:
    """The next jobs of the file: up to FEED_CHUNK of them, or FEED_CHARS of request bodies."""
    chunk: list[Job] = []
    chars = 0
    for job in jobs:
        chunk.append(job)
        chars += sum(len(v) if isinstance(v, str) else sum(map(len, v)) for v in job.images())
        if len(chunk) >= FEED_CHUNK or chars >= FEED_CHARS:
            break
    return chunk


class _RetryAfterMemo:
    """A gate that remembers the latest ``Retry-After`` end, to hand it on to the next run."""

    def __init__(self) -> None:
        self.not_before = 0.0  # Unix time

    async def enter(self, send: Send) -> None:
        del send

    def settle(self, send: Send, error: RequestError | None) -> None:
        del send
        if isinstance(error, RateLimited) and error.retry_after:
            self.not_before = max(self.not_before, time.time() + error.retry_after)


class _Pool:
    """One run's job tasks, gates, slots, stop event and signal handling."""

    def __init__(
        self,
        settings: Settings,
        folder: OutputFolder,
        client: ApiClient,
        report: RunReport,
        budget: Budget | None,
    ) -> None:
        self.settings = settings
        self.folder = folder
        self.client = client
        self.report = report
        self.progress: Progress | None = None
        self.rate = AdaptiveRate()
        self.retry_after = _RetryAfterMemo()
        quota = RetryQuota(settings.retry_budget)
        self.meter = SendMeter()
        gates: list[Gate] = [quota, self.rate]
        if settings.rpm is not None:
            gates.append(RateCeiling(settings.rpm))
        if budget is not None:
            gates.append(budget)  # last: nothing is set aside while a request waits for its rate
        gates += [self.retry_after, self.meter]
        self.control = RunControl(
            generation_gates=Gates(*gates),
            download_gates=Gates(quota),
            policy=RetryPolicy(settings.max_retries, settings.backoff_base, settings.backoff_cap),
            places=asyncio.Semaphore(settings.concurrency),
        )
        self._live: set[asyncio.Task[None]] = set()
        self._grace_timer: asyncio.TimerHandle | None = None

    async def write_metrics(self, *, every: float | None = None) -> None:
        """Write ``--metrics-file`` now, or (``every``: seconds) again and again until cancelled.
        A file that cannot be written is logged, never a reason to stop."""
        path = self.settings.metrics_file
        assert path is not None
        while True:
            if every is not None:
                await asyncio.sleep(every)
            counts = await self.folder.counts()
            try:
                await asyncio.to_thread(
                    write_metrics, path, self.report.tally, counts, self.meter, self.rate.rate
                )
            except OSError as exc:
                log.warning("cannot write the metrics file %s: %s", path, exc.strerror or exc)
            if every is None:
                return

    def describe_rate(self) -> str:
        """The current sending rate, for progress lines."""
        return "unlimited" if self.rate.rate == math.inf else f"{self.rate.rate:.1f}/s"

    async def run(self, jobs: Iterator[Job]) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._on_signal)
        try:
            if await self._wait_out_retry_after():
                async with asyncio.TaskGroup() as group:
                    feeder = group.create_task(self._feed(jobs, group))
                    self._live.add(feeder)
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            if self._grace_timer is not None:
                self._grace_timer.cancel()
            if self.retry_after.not_before > time.time():
                await self.folder.set_meta(NOT_BEFORE, repr(self.retry_after.not_before))
            if self.progress is not None:
                self.progress.close(self.report.tally, stopped=self.report.stop_reason is not None)

    async def _wait_out_retry_after(self) -> bool:
        """Honour a Retry-After an earlier run was given; False when the run must not start."""
        not_before = float(await self.folder.get_meta(NOT_BEFORE) or 0)
        wait = not_before - time.time()
        if wait <= 0:
            return True
        if wait > LONG_RETRY_AFTER:
            self.stop(RateLimited(f"the API asked to wait until {time.ctime(not_before)}", long_wait=True))
            return False
        log.info("an earlier run was asked to wait (Retry-After): starting in %.1fs", wait)
        try:
            await self.control.unless_stopped(asyncio.sleep(wait))
        except Interrupted:
            return False
        return True

    async def _feed(self, jobs: Iterator[Job], group: asyncio.TaskGroup) -> None:
        async with contextlib.aclosing(_chunks(jobs)) as chunks:
            try:
                async for chunk in chunks:
                    if self.control.stopping or not await self._dispatch(chunk, group):
                        return
            except JobFileError as exc:  # edited or broken since it was validated
                note = "the job file changed during the run; the jobs not yet read are left for the next run"
                self.stop(JobFileError(exc.problems[:1], note=note))

    async def _dispatch(self, chunk: list[Job], group: asyncio.TaskGroup) -> bool:
        """Judge a chunk of jobs against the folder and start a task for each with work left.
        False when the run stopped while a job waited for its place."""
        rows = await self.folder.rows(job.id for job in chunk)
        verdicts = [(job, rows.get(job.id), self._judge(job, rows.get(job.id))) for job in chunk]
        lost = await self.folder.missing_images(
            [row for _, row, v in verdicts if row and v.skip is Outcome.ALREADY_DONE]
        )
        old = [(job.id, job.fingerprint) for job, row, _ in verdicts if row and row.fingerprint is None]
        if old:  # a folder from before schema 2: what its finished jobs answered, from now on
            await self.folder.adopt_fingerprints(old)
        for job, row, verdict in verdicts:
            if verdict.skip is not None and job.id not in lost:
                self._count(verdict.skip, 0.0)
                continue
            seat = Seat(self.control.places)
            try:
                await seat.take(self.control.unless_stopped)
            except Interrupted:
                return False
            work = (
                self._restore(job, row, lost[job.id], seat)
                if job.id in lost and row is not None
                else self._run_job(job, row, verdict.fresh, seat)
            )
            task = group.create_task(work)
            self._live.add(task)
            task.add_done_callback(self._live.discard)
        return True

    def _judge(self, job: Job, row: JobRow | None) -> Verdict:
        if row is not None and row.state is JobState.DISPATCHED:  # sent by a run that died
            self.report.in_flight_before.append((job.id, row.client_request_ids))
        redo = job.id in self.settings.redo
        verdict = judge(
            row,
            job,
            retry_failed=self.settings.retry_failed,
            frozen=self.settings.frozen,
            redo=redo,
        )
        if verdict.changed:
            (self.report.frozen if verdict.skip else self.report.changed).append(job.id)
            if not verdict.skip:
                log.info("job %s: its request changed since its record: generating it anew", job.id)
        elif verdict.fresh and redo:
            self.report.redone.append(job.id)
        return verdict

    async def _restore(
        self, job: Job, row: JobRow, missing: tuple[ManifestRecord, list[int]], seat: Seat
    ) -> None:
        try:
            attempt = JobAttempt(job, row, seat, self.control, self.folder, self.client)
            record, indexes = missing
            try:
                restored = await attempt.restore(record, indexes)
            except (RequestError, StorageError) as exc:
                self.stop(exc)
                restored = False
            (self.report.restored if restored else self.report.missing).append(job.id)
            self._count(Outcome.ALREADY_DONE, 0.0)
        finally:
            seat.give_back()

    async def _run_job(self, job: Job, row: JobRow | None, fresh: bool, seat: Seat) -> None:
        try:
            attempt = JobAttempt(
                job,
                row,
                seat,
                self.control,
                self.folder,
                self.client,
                fresh=fresh,
            )
            try:
                outcome = await attempt.run()
            except (RequestError, StorageError) as exc:
                self.stop(exc)
                return  # left resumable; counted as not reached
            if attempt.crashed:
                self.report.crashed.append(job.id)
            self.report.tally.images += attempt.images
            self._count(outcome, attempt.tokens_used, attempt.spent)
        finally:
            seat.give_back()

    def _count(self, outcome: Outcome, tokens: float, spent: Spend | None = None) -> None:
        tally = self.report.tally
        tally.tokens_used += tokens
        if spent:
            tally.spent += spent
        tally.add(outcome)
        if self.progress is not None:
            self.progress.update(tally)

    def stop(self, cause: BaseException | None = None) -> None:
        """Stop dispatching; record the first cause as the run's stop reason."""
        if self.report.stop_reason is None:
            reason = next((r for kind, r in _STOPS if isinstance(cause, kind)), StopReason.SIGNAL)
            self.report.stop_reason = reason
            if isinstance(cause, BatchgenError):
                self.report.stop_message, advice = cause.message, cause.hint
            else:
                self.report.stop_message, advice = str(cause or "stopped by signal"), ""
            self.report.stop_advice = advice or "run the same command again to resume"
            log.warning("stopping (%s): %s", reason, self.report.stop_message)
        self.control.stop(cause)

    def _on_signal(self) -> None:
        if self.control.stopping:
            log.warning("second signal: cancelling in-flight requests")
            self._cancel_all()
            return
        log.warning(
            "signal received: no new requests; waiting up to %gs for in-flight ones (signal again to cancel)",
            self.settings.grace,
        )
        self.stop()
        self._grace_timer = asyncio.get_running_loop().call_later(self.settings.grace, self._cancel_all)

    def _cancel_all(self) -> None:
        for task in list(self._live):
            task.cancel()
