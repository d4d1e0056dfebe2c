"""One job, from its durable state to its manifest record: generate, record, fetch, save.

The order is what makes a crash at any moment safe (see :mod:`batchgen.state`):

1. a job with a succeeded record is skipped (nothing is sent, ever again);
2. ``dispatched`` is committed before the request goes out;
3. the answer is committed before any image is fetched;
4. images are fetched (retried on their own: a failed download never re-runs the paid
   generation), verified and renamed into place;
5. the record is committed, then appended to ``manifest.jsonl``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from enum import Enum
from typing import TypeVar

from batchgen.client import ApiClient, client_request_id
from batchgen.errors import DownloadError, RateLimited, RequestError, RetryBudgetExhausted, StorageError
from batchgen.images import InvalidImage
from batchgen.jobfile import Job
from batchgen.manifest import ErrorInfo, ImageRecord, ManifestRecord, Status, utc_now
from batchgen.ratelimit import AdaptiveRateLimiter
from batchgen.responses import Answer
from batchgen.results import ResultStore, decode_b64_image
from batchgen.retry import RetryBudget, RetryPolicy
from batchgen.state import JobState

__all__ = ["JobAttempt", "Outcome", "RunControl"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class Outcome(Enum):
    """How one job ended in this run (values name the :class:`~batchgen.progress.Tally` counters)."""

    SUCCEEDED = "succeeded"
    ALREADY_DONE = "already_done"  # succeeded in an earlier run; nothing sent
    FAILED_FINAL = "failed_final"
    FAILED_RETRYABLE = "failed_retryable"
    INTERRUPTED = "interrupted"  # the run stopped before the job finished; it stays resumable


class RunControl:
    """What every job of a run shares: rate limiter, retry policy and budget, and the stop event."""

    def __init__(self, limiter: AdaptiveRateLimiter, policy: RetryPolicy, budget: RetryBudget) -> None:
        self.limiter = limiter
        self.policy = policy
        self.budget = budget
        self._stop = asyncio.Event()

    @property
    def stopping(self) -> bool:
        """True once the run has been told to stop dispatching."""
        return self._stop.is_set()

    def stop(self, cause: BaseException | None = None) -> None:
        """Stop dispatching new requests (``cause``: the error that stops the run, if any)."""
        del cause  # subclasses record it
        self._stop.set()

    async def unless_stopped(self, awaitable: Awaitable[T]) -> T | None:
        """Await ``awaitable`` unless the run stops first (then cancel it and return None)."""
        task = asyncio.ensure_future(awaitable)
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if task.done():
            return task.result()
        task.cancel()
        return None

    async def retry_wait(self, error: RequestError, tries: int, label: str) -> bool | None:
        """Judge a failed try by the policy and the budget; wait out the backoff.

        Returns True to try again now, False to give up (record ``error``), None when the run
        stopped during the wait. Raises :class:`RetryBudgetExhausted` when the run-wide quota is
        spent.
        """
        decision = self.policy.decide(error, tries)
        if not decision.retry:
            return False
        if not self.budget.spend(error):
            raise RetryBudgetExhausted(f"retry budget exhausted; last error: {error}") from error
        log.info("%s: %s; retry %d in %.1fs", label, error, tries, decision.delay)
        await self.unless_stopped(asyncio.sleep(decision.delay))
        return None if self.stopping else True


class JobAttempt:
    """Carries one job through this run; ``run`` returns its :class:`Outcome`.

    Raises a :class:`RequestError` whose ``stops_run`` is set (401, 403, hourly 429, exhausted
    retry budget) or :class:`~batchgen.errors.StorageError`: the run must stop; the job stays
    resumable.
    """

    def __init__(
        self, job: Job, control: RunControl, store: ResultStore, client: ApiClient, *, retry_failed: bool
    ) -> None:
        self.job = job
        self.tokens_used: float = 0
        self._control = control
        self._store = store
        self._client = client
        self._retry_failed = retry_failed
        self._attempts = 0
        self._client_ids: list[str] = []
        self._started = utc_now()

    async def run(self) -> Outcome:
        """Skip, resume or run the job."""
        row = await self._store.db.get(self.job.id)
        answer: Answer | None = None
        if row is not None:
            if row.state is JobState.SUCCEEDED:
                return Outcome.ALREADY_DONE
            if row.state is JobState.FAILED and row.final and not self._retry_failed:
                return Outcome.FAILED_FINAL
            self._attempts, self._client_ids = row.attempts, list(row.client_request_ids)
            self._started = row.started_at or self._started
            if not (row.final and self._retry_failed):
                answer = row.answer  # already paid for: fetch again, never generate again
        if answer is None:
            generated = await self._generate()
            if generated is None:
                return Outcome.INTERRUPTED
            if isinstance(generated, RequestError):
                return await self._fail(generated)
            answer = generated
        return await self._save(answer)

    async def _generate(self) -> Answer | RequestError | None:
        """Send the request until answered, retried per policy; None when stopped first."""
        control, tries = self._control, 0
        while True:
            sent_at = await control.unless_stopped(control.limiter.acquire())
            if sent_at is None or control.stopping:
                return None
            self._attempts += 1
            request_id = client_request_id(self.job.id, self._attempts)
            self._client_ids.append(request_id)
            await self._store.db.dispatched(self.job.id, self.job.model, request_id, utc_now())
            try:
                answer = await self._client.generate(self.job.body, client_request_id=request_id)
            except RequestError as error:
                await self._store.db.unanswered(self.job.id)
                error.job_id = self.job.id
                if isinstance(error, RateLimited):
                    control.limiter.on_throttled(sent_at)
                    if error.retry_after:
                        control.limiter.pause(error.retry_after)
                if error.stops_run:
                    raise
                tries += 1
                again = await control.retry_wait(error, tries, f"job {self.job.id}")
                if again:
                    continue
                return None if again is None else error
            try:
                await self._store.db.answered(self.job.id, answer)
            except StorageError:
                # Paid for but not recordable (disk full): the log is the last place to keep it.
                urls = [image.url for image in answer.images]
                log.error(  # noqa: TRY400 - the stop reports the error itself; no traceback needed
                    "job %s: answer not recorded: request_id=%s urls=%s", self.job.id, answer.request_id, urls
                )
                raise
            control.limiter.on_success()
            control.budget.refund()
            self.tokens_used = float(answer.tokens_used or 0)
            return answer

    async def _save(self, answer: Answer) -> Outcome:
        if answer.content_violation:
            error = RequestError("the API flagged a content violation; no image is kept", job_id=self.job.id)
            return await self._fail(error, answer, content_violation=True)
        if not answer.images:
            return await self._fail(RequestError("the API answered with no image"), answer)
        images: list[ImageRecord] = []
        for index, ref in enumerate(answer.images):
            saved = await self._save_image(index, ref.url, ref.b64_json)
            if not isinstance(saved, ImageRecord):
                return await self._fail(saved, answer) if saved else Outcome.INTERRUPTED
            images.append(saved)
        await self._store.finish(self._record(Status.SUCCEEDED, answer, images=images), final=False)
        return Outcome.SUCCEEDED

    async def _save_image(
        self, index: int, url: str | None, b64: str | None
    ) -> ImageRecord | RequestError | None:
        """Fetch (or decode) and save one image, retrying the download alone; None if stopped."""
        tries = 0
        while True:
            try:
                chunks = decode_b64_image(b64) if b64 else self._client.stream_image(url or "")
                record = await self._store.save_image(self.job.id, index, chunks)
                return record.model_copy(update={"url": url})
            except InvalidImage as exc:
                # Inline bytes stay the same bytes: only a fetched image may come out right next time.
                error: RequestError = DownloadError(f"not an acceptable image: {exc}", transient=not b64)
            except DownloadError as exc:
                error = exc
            tries += 1
            again = await self._control.retry_wait(error, tries, f"job {self.job.id}: image {index}")
            if not again:
                return None if again is None else error

    async def _fail(
        self, error: RequestError, answer: Answer | None = None, *, content_violation: bool = False
    ) -> Outcome:
        final = not error.transient
        info = ErrorInfo(
            message=error.message,
            kind=type(error).__name__,
            status=error.status,
            request_id=error.request_id,
            retryable=not final,
            body_excerpt=error.body_excerpt,
        )
        record = self._record(Status.FAILED, answer, error=info, content_violation=content_violation)
        await self._store.finish(record, final=final)
        log.warning(
            "job %s failed%s: %s", self.job.id, "" if final else " (a resume retries it)", info.message
        )
        return Outcome.FAILED_FINAL if final else Outcome.FAILED_RETRYABLE

    def _record(
        self,
        status: Status,
        answer: Answer | None,
        *,
        images: list[ImageRecord] | None = None,
        error: ErrorInfo | None = None,
        content_violation: bool = False,
    ) -> ManifestRecord:
        source = answer or Answer()
        return ManifestRecord(
            job_id=self.job.id,
            model=self.job.model,
            status=status,
            request_id=source.request_id,
            tokens_used=source.tokens_used,
            content_violation=content_violation or source.content_violation,
            images=images or [],
            attempts=self._attempts,
            client_request_ids=self._client_ids,
            inference_id=source.inference_id,
            credits_used=source.credits_used,
            usd_spent=source.usd_spent,
            seed=source.seed,
            error=error,
            started_at=self._started,
            finished_at=utc_now(),
        )
