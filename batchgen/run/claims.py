"""A worker's share of a run whose state is shared through PostgreSQL (issue 22): which jobs of
the file are its own to run, and, once its pass over the file is done, the jobs of workers
that died or left, until no live worker has any left.

The pool hands each batch of jobs to :meth:`WorkerShare.mine` before judging it: jobs with work
left are claimed (``SKIP LOCKED``; see :mod:`batchgen.store.workers`), and only those claimed go
on. A job another live worker holds is counted as the other worker's; one a dead worker left
dispatched is counted *possibly billed* and not sent (``--resend-possibly-billed`` sends it).
After the pass, :meth:`WorkerShare.leftovers` takes over what dead workers left unsent, and
waits while live workers still hold unfinished jobs (one of them may die), so every worker
exits once no job is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from pathlib import Path

from batchgen.errors import StorageError
from batchgen.jobs.load import Job, JobFileSummary, iter_jobs
from batchgen.outcome import JobState, Outcome
from batchgen.run.selection import judge
from batchgen.settings import Settings
from batchgen.store import Backends, OutputFolder
from batchgen.store.coordinator import Coordinator

__all__ = ["POLL_SECONDS", "WorkerShare", "worker_seat"]

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0  # how often a worker done with its pass looks for jobs left by dead workers


def worker_seat(
    backends: Backends | None, settings: Settings
) -> contextlib.AbstractAsyncContextManager[Coordinator | None]:
    """A worker's seat in the run when its state is shared (PostgreSQL), else nothing."""
    if backends is None or backends.database is None:
        return contextlib.nullcontext()
    return Coordinator.open(backends.database, lease=settings.worker_lease, worker_id=backends.worker_id)


class WorkerShare:
    """One worker's claims on the run (``seat``), for the pool of :mod:`batchgen.run.runner`.

    ``count`` counts a job's outcome in the run's tally; ``possibly_billed`` collects the jobs a
    dead worker left sent, with their X-Client-Request-Ids.
    """

    def __init__(
        self,
        seat: Coordinator,
        folder: OutputFolder,
        settings: Settings,
        count: Callable[[Outcome], None],
        possibly_billed: list[tuple[str, list[str]]],
    ) -> None:
        self._seat = seat
        self._folder = folder
        self._settings = settings
        self._count = count
        self._possibly_billed = possibly_billed
        self._seen_billed: set[str] = set()

    @property
    def batch(self) -> int:
        """Jobs claimed at a time: a few more than the places, so a worker holds little unsent."""
        return max(8, self._settings.concurrency)

    async def mine(self, jobs: list[Job]) -> list[Job]:
        """The jobs of ``jobs`` this worker runs: those already finished (judged as usual) and
        those with work left that it could claim. Raises :class:`StorageError` when its lease
        may have passed to others (its heartbeat failed for too long)."""
        if not self._seat.lease_held:
            raise StorageError(
                f"worker {self._seat.worker_id} could not renew its lease for"
                f" {self._seat.lease * 2 / 3:.0f} s: it stops before the others take its jobs over"
            )
        rows = await self._folder.rows(job.id for job in jobs)
        selection = self._settings.selection
        work = [job.id for job in jobs if judge(rows.get(job.id), job, selection).skip is None]
        if not work:
            return jobs
        claimed = await self._seat.claim(work, resend=self._settings.resend_possibly_billed)
        await self._note_billed(claimed.possibly_billed)
        # (jobs another live worker holds are counted once the pass is done: the rest of the file)
        skipped = set(work) - set(claimed.mine)
        return [job for job in jobs if job.id not in skipped]

    async def leftovers(
        self, job_file: Path, summary: JobFileSummary, pause: Callable[[Awaitable[None]], Awaitable[None]]
    ) -> AsyncGenerator[list[Job], None]:
        """After the pass: batches of jobs taken over from workers that died or left, read again
        from ``job_file``; ends once no live worker holds an unfinished job. ``pause`` waits out
        each look's interval (and raises when the run stops)."""
        foreign: list[str] = []  # jobs this worker's job file lacks (another file's worker claimed them)
        while True:
            taken = await self._seat.take_over(self.batch, foreign=foreign)
            if taken:
                log.info("taking over %d job(s) of a worker that died or left", len(taken))
                jobs = await asyncio.to_thread(_read_jobs, job_file, summary, set(taken))
                lacking = sorted(set(taken) - {job.id for job in jobs})
                if lacking:
                    log.warning("%d job(s) left by a worker are not in %s: left to a worker of their file",
                                len(lacking), job_file)  # fmt: skip
                    foreign += lacking
                    await self._seat.release(lacking)
                yield jobs
                continue
            if not await self._seat.others_busy():
                if not self._settings.resend_possibly_billed:  # (what dead workers left sent)
                    await self._note_billed(await self._seat.possibly_billed())
                return
            await pause(asyncio.sleep(POLL_SECONDS))

    async def _note_billed(self, job_ids: Iterable[str]) -> None:
        new = [job for job in job_ids if job not in self._seen_billed]
        if not new:
            return
        rows = await self._folder.rows(new)
        for job in new:
            self._seen_billed.add(job)
            row = rows.get(job)
            if row is not None and row.state is JobState.DISPATCHED:
                self._possibly_billed.append((job, row.client_request_ids))
                self._count(Outcome.POSSIBLY_BILLED)
                log.warning(
                    "job %s was sent by a worker that died (X-Client-Request-Id %s): possibly billed, not"
                    " sent again (--resend-possibly-billed sends it)",
                    job,
                    (row.client_request_ids or ["?"])[-1],
                )


def _read_jobs(job_file: Path, summary: JobFileSummary, wanted: set[str]) -> list[Job]:
    """The jobs of ``wanted`` (ids), read from the job file again."""
    return [job for job in iter_jobs(job_file, scanned=summary) if job.id in wanted]
