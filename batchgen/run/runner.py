"""The worker pool: run every job of a job file into an output folder, resumably.

``run_batch`` validates the whole file first (nothing is sent or written for an invalid one),
opens the output folder (lock, crash repair), then feeds the jobs, in chunks read off the event
loop and judged against the folder's state with one lookup per chunk, to one task per job in
one ``asyncio.TaskGroup``. At most ``concurrency`` jobs are at work at once; a job gives its
place back while it waits out a backoff, so one unlucky job never idles a place. Each job goes
through :class:`batchgen.run.job.JobRun` (generate -> record -> fetch -> save); every request
passes the run's gates (:mod:`batchgen.gates.chain`). Progress bar, metrics file and report
page observe the run (:mod:`batchgen.run.observers`).

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
import logging
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path

from batchgen.api.client import ApiClient, open_session
from batchgen.errors import (
    JobFileChanged,
    JobFileError,
    RequestError,
    StorageError,
    UsageError,
)
from batchgen.gates.chain import RunGates, run_gates
from batchgen.jobs.load import Job, JobFileSummary, iter_jobs, scan_job_file, still_as_scanned
from batchgen.outcome import JobState, Outcome, Tally
from batchgen.run.announce import log_start, warn_in_flight
from batchgen.run.claims import WorkerShare, worker_seat
from batchgen.run.control import RunControl, stop_signals
from batchgen.run.feed import chunks
from batchgen.run.job import JobRun
from batchgen.run.not_before import wait_out_retry_after
from batchgen.run.observers import MetricsFile, ProgressBar, ReportPage, RunObserver, RunView
from batchgen.run.retry import Interrupted, Place, RetryPolicy
from batchgen.run.selection import Verdict, judge
from batchgen.run.summary import RunReport
from batchgen.settings import Settings, load_api_key, resolve_base_url
from batchgen.store import Backends, JobRow, ManifestRecord, OutputFolder

__all__ = ["RunReport", "run_batch"]

log = logging.getLogger(__name__)

LIST_EVERY = 8192  # job ids noted at a time in the folder's listing of the file
_FINISHED = (JobState.SUCCEEDED, JobState.FAILED)


async def run_batch(
    job_file: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    settings: Settings | None = None,
    *,
    progress: bool = True,
    backends: Backends | None = None,
) -> RunReport:
    """Run every job of ``job_file`` into ``out_dir``; safe to call again to resume.

    ``settings``: how to run (default: ``Settings`` with the key from ``AIMLAPI_KEY``).
    ``backends``: where state and output live instead of a local folder (``out_dir`` then only
    names the run in logs; no report page is made). Returns the :class:`RunReport` (counts,
    money, why it stopped); ``out_dir`` then holds the images, the manifest and, for up to
    :data:`~batchgen.report.REPORT_AT_RUN_END` jobs, the report page. Raises
    :class:`~batchgen.errors.JobFileError` (nothing sent, nothing written),
    :class:`~batchgen.errors.UsageError` (ids of ``--only`` the file lacks; an output folder
    that can never be written), :class:`~batchgen.errors.OutputLockedError`, or
    :class:`~batchgen.errors.StorageError` when the folder cannot be opened. Everything else
    ends up in the returned report.
    """
    job_file, out_dir = Path(job_file), Path(out_dir)
    settings = settings or Settings(api_key=load_api_key(None), base_url=resolve_base_url(None))
    selection = settings.selection
    summary = await asyncio.to_thread(functools.partial(scan_job_file, job_file, only=selection.only))
    if summary.missing:
        raise UsageError(
            f"--only names job(s) that {job_file} does not hold: {', '.join(summary.missing[:20])}"
            + (f" and {len(summary.missing) - 20} more" if len(summary.missing) > 20 else "")  # noqa: PLR2004
        )
    observers: list[RunObserver] = [ProgressBar()] if progress else []
    if settings.metrics_file is not None:
        observers.append(MetricsFile(settings.metrics_file))
    if backends is None or (backends.database and not backends.name):  # (a local folder, state anywhere)
        observers.append(ReportPage(out_dir))
    source = str(await asyncio.to_thread(job_file.resolve))
    folder_open = OutputFolder.open(
        out_dir,
        max_pixels=settings.max_pixels,
        source=source,
        parents=settings.create_parents,
        backends=backends,
    )
    async with folder_open as folder, worker_seat(backends, settings) as seat:
        log_start(job_file, backends.name if backends and backends.name else out_dir, settings)
        await folder.run_started(summary.count)
        total = summary.count if summary.selected is None else summary.selected
        report = RunReport(total, Tally())
        before = dict(await folder.in_flight())  # to tell what this run leaves in flight
        if seat is None:  # (workers share the run: no one worker's pass lists the file)
            await folder.listing("begin")
        gates = await run_gates(settings, folder, report.tally, seat)
        async with open_session(settings) as session:
            pool = _Pool(settings, folder, ApiClient(session, settings), report, gates, observers, summary)
            if seat is not None:
                pool.share = WorkerShare(seat, folder, settings, pool.count, report.possibly_billed)
            ceiling = settings.rpm / 60 if settings.rpm else math.inf  # (--rpm, requests per second)
            view = RunView(total, report.tally, folder, gates.meter, lambda: min(gates.rate.rate, ceiling))
            for observer in observers:
                await observer.started(view)
            jobs = iter_jobs(job_file, scanned=summary)
            try:
                await pool.run(job for job in jobs if selection.includes(job.id))
            finally:
                for observer in observers:
                    observer.stopped(report)
        await pool.account(before, listed=selection.only is None)
        report.folder = await folder.counts()
        for observer in observers:
            await observer.closing(report)
        try:
            await folder.run_ended(report.ending())
        except StorageError as exc:  # (a full disk stopped the run: the report says so already)
            log.warning("how the run ended could not be recorded for `status`: %s", exc.message)
    warn_in_flight(report.cancelled, "were cancelled in flight by this run")
    for observer in observers:
        await observer.closed(report)
    return report


class _Pool:
    """One run's job tasks, places, stop event and signal handling."""

    def __init__(  # noqa: PLR0917 - the run's parts, built by run_batch
        self,
        settings: Settings,
        folder: OutputFolder,
        client: ApiClient,
        report: RunReport,
        gates: RunGates,
        observers: list[RunObserver],
        summary: JobFileSummary,
    ) -> None:
        self.settings = settings
        self.folder = folder
        self.client = client
        self.report = report
        self.gates = gates
        self.observers = observers
        self.summary = summary  # the file as checked: no job is sent once it changed
        self.judged_all = False  # every job of the file was judged (the run was not stopped first)
        self.share: WorkerShare | None = None  # a worker's claims, when workers share the run
        self.sent_here: set[str] = set()  # jobs this worker sent a request for (workers only)
        self._unlisted: list[str] = []  # ids read from the file, not yet noted in the folder
        self.control = RunControl(
            generation_gates=gates.generation,
            download_gates=gates.download,
            policy=RetryPolicy(settings.max_retries, settings.backoff_base, settings.backoff_cap),
            places=asyncio.Semaphore(settings.concurrency),
        )
        self._live: set[asyncio.Task[None]] = set()
        self._grace_timer: asyncio.TimerHandle | None = None

    async def run(self, jobs: Iterator[Job]) -> None:
        """Judge and run every job of ``jobs`` until done or stopped; signals stop it gracefully."""
        loop = asyncio.get_running_loop()
        signals = stop_signals()
        for signum in signals:
            loop.add_signal_handler(signum, self._on_signal)
        try:
            if await wait_out_retry_after(self.folder, self.settings, self.control, self.stop):
                async with asyncio.TaskGroup() as group:
                    feeder = group.create_task(self._feed(jobs, group))
                    self._live.add(feeder)
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)
            if self._grace_timer is not None:
                self._grace_timer.cancel()
            not_before = self.gates.retry_after.not_before
            if not_before > time.time():
                await self.folder.set_not_before(not_before)

    async def _feed(self, jobs: Iterator[Job], group: asyncio.TaskGroup) -> None:
        async with contextlib.aclosing(chunks(jobs)) as feed:
            try:
                async for chunk in feed:
                    if not await self._dispatch_all(chunk, group):
                        return
                await self._list([], every=0)
                self.judged_all = not self.control.stopping
                if self.share is not None and self.judged_all:
                    summary = self.summary
                    leftovers = self.share.leftovers(summary.path, summary, self.control.unless_stopped)
                    async with contextlib.aclosing(leftovers) as taken:
                        async for part in taken:
                            if not await self._dispatch_all(part, group):
                                return
            except JobFileChanged as exc:
                self.stop(exc)
            except JobFileError as exc:  # broken since it was validated
                note = "the job file changed during the run; the jobs not yet read are left for the next run"
                self.stop(JobFileError(exc.problems[:1], note=note))
            except StorageError as exc:  # (a worker cut off from the shared state)
                self.stop(exc)
            except Interrupted:
                pass

    async def _dispatch_all(self, chunk: list[Job], group: asyncio.TaskGroup) -> bool:
        """Dispatch a chunk (a worker: in batches, each claimed first); False once stopped."""
        share = self.share
        parts = (
            [chunk]
            if share is None
            else [chunk[i : i + share.batch] for i in range(0, len(chunk), share.batch)]
        )
        for part in parts:
            if self.control.stopping:
                return False
            mine = part if share is None else await share.mine(part)
            if not await self._dispatch(mine, group):
                return False
        return True

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
            place = Place(self.control.places)
            try:
                await place.take(self.control.unless_stopped)
            except Interrupted:
                return False
            if not still_as_scanned(self.summary):  # edited meanwhile
                place.give_back()
                self.stop(JobFileChanged(f"{self.summary.path} was modified during the run"))
                return False
            work = (
                self._restore(job, row, lost[job.id], place)
                if job.id in lost and row is not None
                else self._run_job(job, row, verdict, place)
            )
            task = group.create_task(work)
            self._live.add(task)
            task.add_done_callback(self._live.discard)
        return True

    async def _list(self, job_ids: list[str], *, every: int = LIST_EVERY) -> None:
        """Note ``job_ids`` as read from the file; committed in batches of ``every`` (a commit
        per chunk would cost a re-run of a finished folder an fsync per 256 jobs). Workers of
        a shared run list nothing."""
        if self.share is not None:
            return
        self._unlisted += job_ids
        if len(self._unlisted) >= every and self._unlisted:
            await self.folder.listing("ids", self._unlisted)
            self._unlisted = []

    def _judge(self, job: Job, row: JobRow | None) -> Verdict:
        if row is not None and row.state is JobState.DISPATCHED:  # sent by a run that stopped
            self.report.in_flight_before.append((job.id, row.client_request_ids))
            warn_in_flight([(job.id, row.client_request_ids)], "was in flight when an earlier run stopped")
        verdict = judge(row, job, self.settings.selection)
        if verdict.changed and verdict.skip:
            self.report.frozen.append(job.id)
        elif verdict.changed:
            log.info("job %s: its request changed since its record: generating it anew", job.id)
        return verdict

    async def _restore(
        self, job: Job, row: JobRow, missing: tuple[ManifestRecord, list[int]], place: Place
    ) -> None:
        try:
            attempt = JobRun(job, row, place, self.control, self.folder, self.client)
            record, indexes = missing
            try:
                restored = await attempt.restore(record, indexes)
            except (RequestError, StorageError) as exc:
                self.stop(exc)
                restored = False
            (self.report.restored if restored else self.report.missing).append(job.id)
            self._count(Outcome.ALREADY_DONE, 0.0)
        finally:
            place.give_back()

    async def _run_job(self, job: Job, row: JobRow | None, verdict: Verdict, place: Place) -> None:
        # (a changed or --redo job is reported as generated anew once its request went out)
        redo = verdict.fresh and job.id in self.settings.selection.redo
        anew = self.report.changed if verdict.changed else self.report.redone if redo else None
        try:
            attempt = JobRun(
                job,
                row,
                place,
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
                if attempt.sent and self.share is not None:  # (one worker's among many)
                    self.sent_here.add(job.id)
                if anew is not None and attempt.sent:
                    anew.append(job.id)
            if attempt.crashed:
                self.report.crashed.append(job.id)
            self.report.tally.images += attempt.images
            self._count(outcome, attempt.tokens_used)
        finally:
            place.give_back()

    async def account(self, before: dict[str, list[str]], *, listed: bool) -> None:
        """After the pool ran: count the jobs it never judged (not reached, or a worker's:
        the other workers'), end the folder's listing of the file (``listed``: the whole file
        was read), and note the requests this run left in flight (``before``: those an earlier
        run had)."""
        report, share = self.report, self.share
        left = max(0, report.total - report.tally.seen)
        if share is not None and self.judged_all:
            report.tally.other_worker += left
        else:
            report.tally.not_reached += left
        if self.judged_all and listed and share is None:  # the folder can tell which jobs the file lacks
            await self.folder.listing("done")
        report.cancelled = [
            (job, ids)
            for job, ids in await self.folder.in_flight()
            if before.get(job) != ids and (share is None or job in self.sent_here)
        ]

    def count(self, outcome: Outcome) -> None:
        """Count one job's ``outcome`` judged outside the pool (a worker's share)."""
        self._count(outcome, 0.0)

    def _count(self, outcome: Outcome, tokens: float) -> None:
        tally = self.report.tally
        tally.tokens_used += tokens
        tally.add(outcome)
        for observer in self.observers:
            observer.counted(tally)

    def stop(self, cause: BaseException | None = None) -> None:
        """Stop dispatching; record the first cause as the run's stop reason."""
        if self.report.stopped_by(cause):
            log.warning("stopping (%s): %s", self.report.stop_reason, self.report.stop_message)
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
