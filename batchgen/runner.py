"""The worker pool: run every job of a job file into an output folder, resumably.

``run_batch`` validates the whole file first (nothing is sent or written for an invalid one),
opens the output folder (lock, crash repair), then feeds the jobs, in chunks read off the event
loop and judged against the folder's state with one lookup per chunk, to one task per job in
one ``asyncio.TaskGroup``. At most ``concurrency`` jobs are at work at once; a job gives its
place back while it waits out a backoff, so one unlucky job never idles a place. Each job goes
through :class:`batchgen.attempts.JobAttempt` (generate -> record -> fetch -> save); every
request passes the run's gates (retry quota, adaptive rate, optional ``--rpm`` ceiling:
:mod:`batchgen.gates`).

Stopping: SIGINT/SIGTERM/SIGHUP, a 401, a 403, an hourly 429, an exhausted retry budget or a full disk
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
import os
import signal
import time
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from importlib.metadata import version
from pathlib import Path

from batchgen.attempts import JobAttempt, RunControl, Verdict, judge
from batchgen.budget import Budget
from batchgen.client import MAX_RETRY_AFTER, ApiClient, open_session
from batchgen.errors import (
    LONG_RETRY_AFTER,
    AuthenticationError,
    BatchgenError,
    BudgetReached,
    CreditsExhausted,
    EndpointNotFound,
    JobFileChanged,
    JobFileError,
    RateLimited,
    RequestError,
    RetryBudgetExhausted,
    StorageError,
    Unreachable,
    UsageError,
)
from batchgen.gates import Gate, Gates, Send
from batchgen.jobfile import Job, JobFileSummary, iter_jobs, scan_job_file, still_as_scanned
from batchgen.metrics import INTERVAL, SendMeter, write_metrics
from batchgen.money import Spend
from batchgen.progress import Outcome, Progress, Tally
from batchgen.ratelimit import AdaptiveRate, RateCeiling
from batchgen.report import refresh_report
from batchgen.retry import Interrupted, RetryPolicy, RetryQuota, Seat
from batchgen.settings import Settings, load_api_key, resolve_base_url
from batchgen.store import JobRow, JobState, ManifestRecord, OutputFolder, StateCounts, utc_now

__all__ = ["RunReport", "StopReason", "run_batch"]

log = logging.getLogger(__name__)

FEED_CHUNK = 256  # jobs read and looked up per hop off the event loop ...
LIST_EVERY = 8192  # job ids noted at a time in the folder's listing of the file
FEED_CHARS = 32 * 1024 * 1024  # ... or fewer, when their bodies (inline images) reach this size
DAILY_CAP = "max_usd_per_day"  # folder meta: --max-usd-per-day as last given ("off": none)
NOT_BEFORE = "not_before"  # folder meta: a Retry-After's end (Unix time) that outlives the run
_FINISHED = (JobState.SUCCEEDED, JobState.FAILED)


def _stop_signals() -> tuple[signal.Signals, ...]:
    """The signals that stop a run gracefully: ^C, a service manager's stop, a closed terminal
    or ssh session (SIGHUP would otherwise kill the process with its answers in flight), unless
    the run was started to ignore it (``nohup``)."""
    hangup = () if signal.getsignal(signal.SIGHUP) is signal.SIG_IGN else (signal.SIGHUP,)
    return (signal.SIGINT, signal.SIGTERM, *hangup)


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


async def run_batch(
    job_file: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    settings: Settings | None = None,
    *,
    progress: bool = True,
) -> RunReport:
    """Run every job of ``job_file`` into ``out_dir``; safe to call again to resume.

    ``settings``: how to run (default: ``Settings`` with the key from ``AIMLAPI_KEY``).
    Returns the :class:`RunReport` (counts, money, why it stopped); ``out_dir`` then holds the
    images, ``manifest.jsonl`` and, for up to :data:`~batchgen.report.REPORT_AT_RUN_END` jobs,
    ``report.html``. Raises :class:`~batchgen.errors.JobFileError` (nothing sent, nothing
    written), :class:`~batchgen.errors.UsageError` (ids of ``settings.only`` the file lacks;
    an output folder that can never be written), :class:`~batchgen.errors.OutputLockedError`,
    or :class:`~batchgen.errors.StorageError` when the folder cannot be opened. Everything else
    ends up in the returned report.
    """
    job_file, out_dir = Path(job_file), Path(out_dir)
    settings = settings or Settings(api_key=load_api_key(None), base_url=resolve_base_url(None))
    summary = await asyncio.to_thread(functools.partial(scan_job_file, job_file, only=settings.only))
    if summary.missing:
        raise UsageError(
            f"--only names job(s) that {job_file} does not hold: {', '.join(summary.missing[:20])}"
            + (f" and {len(summary.missing) - 20} more" if len(summary.missing) > 20 else "")  # noqa: PLR2004
        )
    source = str(await asyncio.to_thread(job_file.resolve))
    folder_open = OutputFolder.open(
        out_dir, max_pixels=settings.max_pixels, source=source, parents=settings.create_parents
    )
    async with folder_open as folder:
        _log_start(job_file, out_dir, settings)
        await folder.set_meta("job_file", source)
        await folder.set_meta("total_jobs", str(summary.count))
        total = summary.count if summary.selected is None else summary.selected
        report = RunReport(total, Tally())
        before = dict(await folder.in_flight())  # to tell what this run leaves in flight
        await folder.listing("begin")
        async with open_session(settings) as session:
            pool = _Pool(
                settings, folder, ApiClient(session, settings), report, await _budgets(settings, folder)
            )
            pool.summary = summary
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
        if pool.judged_all and only is None:  # now the folder can tell which jobs the file lacks
            await folder.listing("done")
        report.cancelled = [(job, ids) for job, ids in await folder.in_flight() if before.get(job) != ids]
        report.folder = await folder.counts()
        if settings.metrics_file is not None:
            await pool.write_metrics()
        try:
            await folder.set_meta("last_run", json.dumps(report.ending()))
        except StorageError as exc:  # (a full disk stopped the run: the report says so already)
            log.warning("how the run ended could not be recorded for `status`: %s", exc.message)
    _warn_in_flight(report.cancelled, "were cancelled in flight by this run")
    await asyncio.to_thread(refresh_report, out_dir, report.folder.total)
    return report


def _log_start(job_file: Path, out_dir: Path, settings: Settings) -> None:
    """The log's first line of a run: what runs, where, and with which settings."""
    chosen = {
        "concurrency": settings.concurrency,
        "rpm": settings.rpm,
        "max_usd": settings.max_usd,
        "max_credits": settings.max_credits,
        "max_usd_per_day": settings.max_usd_per_day,
        "only": len(settings.only) if settings.only is not None else None,
        "retry_failed": ",".join(sorted(settings.retry_failed)) or None,
        "frozen": settings.frozen or None,
        "redo": len(settings.redo) or None,
    }
    log.info(
        "run started: batchgen %s, job file %s, output folder %s, API %s; %s",
        version("batchgen"),
        job_file,
        out_dir,
        settings.base_url,
        ", ".join(f"{k}={v}" for k, v in chosen.items() if v is not None),
    )


def _warn_in_flight(jobs: list[tuple[str, list[str]]], what: str) -> None:
    """Say, before anything is sent again, which requests may have been charged without an
    answer recorded, with the X-Client-Request-Ids the usage logs settle them by."""
    if jobs:
        log.warning(
            "%d job(s) %s; each may have been charged once, and a run sends it again. Match the"
            " X-Client-Request-Ids in the API's usage logs (GET /v2/logs): %s",
            len(jobs),
            what,
            "; ".join(f"{job}: {ids[-1]}" for job, ids in jobs[:20] if ids),
        )


_STOPS: list[tuple[type[BaseException], StopReason]] = [
    (AuthenticationError, StopReason.BAD_KEY),
    (EndpointNotFound, StopReason.ENDPOINT),
    (Unreachable, StopReason.ENDPOINT),
    (JobFileError, StopReason.JOB_FILE),
    (JobFileChanged, StopReason.JOB_FILE),
    (CreditsExhausted, StopReason.NO_CREDITS),
    (RateLimited, StopReason.HOURLY_LIMIT),
    (StorageError, StopReason.STORAGE),
    (RetryBudgetExhausted, StopReason.RETRY_BUDGET),
    (BudgetReached, StopReason.BUDGET),
]


async def _budgets(settings: Settings, folder: OutputFolder) -> list[Budget]:
    """The run's spend budgets (``--max-usd``/``--max-credits``, and the folder's daily cap,
    kept in the folder by ``--max-usd-per-day`` so that every later run respects it), knowing
    what each model cost before."""
    if settings.max_usd_per_day is not None:
        await folder.set_meta(DAILY_CAP, str(settings.max_usd_per_day))
    stored = await folder.get_meta(DAILY_CAP)
    daily = Decimal(stored) if stored and stored != "off" else None
    if settings.max_usd is None and settings.max_credits is None and daily is None:
        return []
    known = {
        model: Spend(max(c.usd for c in costs), max(c.credits for c in costs))
        for model, costs in (await folder.request_costs()).items()
    }
    assumed = settings.assumed_cost
    budgets = []
    if settings.max_usd is not None or settings.max_credits is not None:
        budgets.append(
            Budget(max_usd=settings.max_usd, max_credits=settings.max_credits, known=known, assumed=assumed)
        )
    if daily is not None:
        today = datetime.now(UTC).date().isoformat()
        budgets.append(
            Budget(
                max_usd=daily,
                known=known,
                assumed=assumed,
                before=await folder.spent(day=today),
                scope=f"of {today} (UTC) in this folder, all runs",
            )
        )
    return budgets


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
        budgets: list[Budget],
    ) -> None:
        self.settings = settings
        self.folder = folder
        self.client = client
        self.report = report
        self.progress: Progress | None = None
        self.rate = AdaptiveRate()
        self.retry_after = _RetryAfterMemo()
        quota = RetryQuota(settings.retry_budget)
        self.meter = SendMeter(report.tally)
        self.judged_all = False  # every job of the file was judged (the run was not stopped first)
        self.summary: JobFileSummary | None = None  # the file as checked: no job is sent once it changed
        self._unlisted: list[str] = []  # ids read from the file, not yet noted in the folder
        gates: list[Gate] = [quota, self.rate]
        if settings.rpm is not None:
            gates.append(RateCeiling(settings.rpm))
        gates += budgets  # last: nothing is set aside while a request waits for its rate
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
        stop_signals = _stop_signals()
        for signum in stop_signals:
            loop.add_signal_handler(signum, self._on_signal)
        try:
            if await self._wait_out_retry_after():
                async with asyncio.TaskGroup() as group:
                    feeder = group.create_task(self._feed(jobs, group))
                    self._live.add(feeder)
        finally:
            for signum in stop_signals:
                loop.remove_signal_handler(signum)
            if self._grace_timer is not None:
                self._grace_timer.cancel()
            if self.retry_after.not_before > time.time():
                await self.folder.set_meta(NOT_BEFORE, repr(self.retry_after.not_before))
            if self.progress is not None:
                self.progress.close(self.report.tally, stopped=self.report.stop_reason is not None)

    async def _wait_out_retry_after(self) -> bool:
        """Honour a Retry-After an earlier run was given (at most :data:`MAX_RETRY_AFTER` from
        now, whatever the folder holds; ``--ignore-retry-after`` clears it); False when the run
        must not start."""
        if self.settings.ignore_retry_after:
            await self.folder.set_meta(NOT_BEFORE, "0")
            return True
        try:
            not_before = float(await self.folder.get_meta(NOT_BEFORE) or 0)
        except ValueError:
            not_before = 0.0
        wait = min(not_before - time.time(), MAX_RETRY_AFTER) if math.isfinite(not_before) else 0.0
        if wait <= 0:
            return True
        if wait > LONG_RETRY_AFTER:
            until = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() + wait))
            self.stop(
                RateLimited(
                    f"the API asked an earlier run to wait until {until} (Retry-After);"
                    " --ignore-retry-after starts now",
                    long_wait=True,
                )
            )
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
                await self._list([], every=0)
                self.judged_all = not self.control.stopping
            except JobFileChanged as exc:
                self.stop(exc)
            except JobFileError as exc:  # broken since it was validated
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
        # What this file asks of its finished, unchanged jobs (a job still to send or finish has
        # it recorded by its dispatch: until then, an edit of it is still news); one group commit.
        asked = [
            (job.id, job.fingerprint)
            for job, row, v in verdicts
            if row and row.state in _FINISHED and not v.changed and row.asked != job.fingerprint
        ]
        if asked:
            await self.folder.asked(asked)
        await self._list([job.id for job in chunk])
        for job, row, verdict in verdicts:
            if verdict.skip is not None and job.id not in lost:
                self._count(verdict.skip, 0.0)
                continue
            seat = Seat(self.control.places)
            try:
                await seat.take(self.control.unless_stopped)
            except Interrupted:
                return False
            if self.summary is not None and not still_as_scanned(self.summary):  # edited meanwhile
                seat.give_back()
                self.stop(JobFileChanged(f"{self.summary.path} was modified during the run"))
                return False
            work = (
                self._restore(job, row, lost[job.id], seat)
                if job.id in lost and row is not None
                else self._run_job(job, row, verdict, seat)
            )
            task = group.create_task(work)
            self._live.add(task)
            task.add_done_callback(self._live.discard)
        return True

    async def _list(self, job_ids: list[str], *, every: int = LIST_EVERY) -> None:
        """Note ``job_ids`` as read from the file; committed in batches of ``every`` (a commit
        per chunk would cost a re-run of a finished folder an fsync per 256 jobs)."""
        self._unlisted += job_ids
        if len(self._unlisted) >= every and self._unlisted:
            await self.folder.listing("ids", self._unlisted)
            self._unlisted = []

    def _judge(self, job: Job, row: JobRow | None) -> Verdict:
        if row is not None and row.state is JobState.DISPATCHED:  # sent by a run that stopped
            self.report.in_flight_before.append((job.id, row.client_request_ids))
            _warn_in_flight([(job.id, row.client_request_ids)], "was in flight when an earlier run stopped")
        redo = job.id in self.settings.redo
        verdict = judge(
            row,
            job,
            retry_failed=self.settings.retry_failed,
            frozen=self.settings.frozen,
            redo=redo,
        )
        if verdict.changed and verdict.skip:
            self.report.frozen.append(job.id)
        elif verdict.changed:
            log.info("job %s: its request changed since its record: generating it anew", job.id)
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

    async def _run_job(self, job: Job, row: JobRow | None, verdict: Verdict, seat: Seat) -> None:
        # (a changed or --redo job is reported as generated anew once its request went out)
        redo = verdict.fresh and job.id in self.settings.redo
        anew = self.report.changed if verdict.changed else self.report.redone if redo else None
        try:
            attempt = JobAttempt(
                job,
                row,
                seat,
                self.control,
                self.folder,
                self.client,
                fresh=verdict.fresh,
            )
            try:
                outcome = await attempt.run()
            except (RequestError, StorageError) as exc:
                self.stop(exc)
                return  # left resumable; counted as not reached
            finally:
                if anew is not None and attempt.sent:
                    anew.append(job.id)
            if attempt.crashed:
                self.report.crashed.append(job.id)
            self.report.tally.images += attempt.images
            self._count(outcome, attempt.tokens_used)
        finally:
            seat.give_back()

    def _count(self, outcome: Outcome, tokens: float) -> None:
        tally = self.report.tally
        tally.tokens_used += tokens
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
