"""One job, from its durable state to its manifest record: generate, record, fetch, save.

The order is what makes a crash at any moment safe (see :mod:`batchgen.store.events`):

1. a job with a succeeded record is skipped (nothing is sent again for the same request; a
   changed request, or ``--redo``, is generated anew under new image names);
2. ``dispatched`` is committed before the request goes out;
3. the answer is committed before any image is fetched;
4. images are fetched (retried on their own: a failed download never re-runs the paid
   generation), verified and renamed into place;
5. the record is committed, then appended to ``manifest.jsonl``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from batchgen.api.answers import Answer
from batchgen.api.client import ApiClient, client_request_id
from batchgen.errors import (
    BatchgenError,
    ContentViolation,
    DownloadError,
    JobCrashed,
    RequestError,
    StorageError,
)
from batchgen.images import InvalidImage, decode_b64_image
from batchgen.jobs.load import Job
from batchgen.outcome import JobState, Outcome, Status
from batchgen.run.control import RunControl
from batchgen.run.retry import Interrupted, Place, retrying
from batchgen.store import ErrorInfo, ImageRecord, JobRow, ManifestRecord, OutputFolder, StagedImage, utc_now

__all__ = ["JobRun"]

log = logging.getLogger(__name__)
T = TypeVar("T")


async def _finish_anyway(awaitable: Awaitable[T]) -> T:
    return await awaitable


def _all_inline(answer: Answer) -> bool:
    """Every image of the answer came inline (b64_json), and there is something to save."""
    return bool(answer.images) and not answer.content_violation and all(ref.b64_json for ref in answer.images)


class JobRun:
    """Carries one job through this run; ``run`` returns its :class:`Outcome`.

    ``row``: its durable state from an earlier run, or None; ``fresh``: generate anew instead
    of reusing the row's answer (see :func:`~batchgen.run.selection.judge`); ``place``: its
    place among the jobs at work, taken by the caller and given back during backoffs. Raises a
    :class:`RequestError` whose ``stops_run`` is set (401, 403, hourly 429, exhausted retry
    budget) or
    :class:`StorageError`: the run must stop; the job stays resumable.
    """

    def __init__(  # noqa: PLR0917 - the job, its state and what it runs with
        self,
        job: Job,
        row: JobRow | None,
        place: Place,
        control: RunControl,
        folder: OutputFolder,
        client: ApiClient,
        *,
        fresh: bool = False,
    ) -> None:
        self.job = job
        self.tokens_used: float = 0
        self._unusable_paid = 0  # answers charged for that could not be read, in this run
        self.images = 0  # images this run saved for it
        self.crashed = False  # an unforeseen error was contained to this job
        self._row = row
        self._place = place
        self._control = control
        self._folder = folder
        self._client = client
        self._fresh = fresh
        # The request a recorded answer answers is the one last sent; a folder older than
        # schema 2 did not keep it, and the job's own stands in (it was judged unchanged).
        self._fingerprint = (row.fingerprint if row else None) or job.fingerprint
        # A succeeded job generated anew is a new generation: its images get new names.
        self._generation = (row.generation if row else 0) + (
            fresh and row is not None and row.state is JobState.SUCCEEDED
        )
        self._attempts = row.attempts if row else 0
        self._client_ids = list(row.client_request_ids) if row else []
        self._started = (row.started_at if row else None) or utc_now()

    @property
    def sent(self) -> bool:
        """Whether this run sent a generation request for the job."""
        return self._attempts > (self._row.attempts if self._row else 0)

    async def run(self) -> Outcome:
        """Resume or run the job (one :func:`~batchgen.run.selection.judge` found work for)."""
        # An answer already paid for is fetched again, never generated again (unless the job
        # is to be generated anew: changed, --redo, or a final failure named by --retry-failed).
        reuse = self._row is not None and not self._fresh
        answer = self._row.answer if self._row and reuse else None
        try:
            if self._row and reuse and self._row.damaged:
                raise RuntimeError(self._row.damaged)
            if answer is None:
                answer = await self._generate()
                if _all_inline(answer):
                    return await self._record_inline(answer)
                await self._keep(self._folder.answered(self.job.id, answer), answer)
            return await self._save(answer)
        except Interrupted:
            return Outcome.NOT_REACHED
        except RequestError as error:
            if error.stops_run:
                raise
            return await self._fail(error, answer)
        except BatchgenError:
            raise  # the folder (StorageError...): the run stops
        except Exception as exc:
            # Contained: whatever this job's answer or images did, only this job fails, for good,
            # so that no later run replays it into the same error.
            log.exception(
                "job %s: unexpected error; the job is recorded as failed (kind internal)", self.job.id
            )
            self.crashed = True
            crashed = JobCrashed(f"unexpected error: {type(exc).__name__}: {exc}", job_id=self.job.id)
            return await self._fail(crashed, answer)

    async def _generate(self) -> Answer:
        """Send the request until answered, retried per policy."""
        control = self._control
        fingerprint = self.job.fingerprint
        async for attempt in retrying(
            control.policy,
            control.generation_gates,
            self._place,
            control.unless_stopped,
            label=f"job {self.job.id}",
            model=self.job.model,
        ):
            async with attempt:
                self._attempts += 1
                request_id = client_request_id(self.job.id, self._attempts)
                self._client_ids.append(request_id)
                self._fingerprint = fingerprint
                await self._folder.dispatched(
                    self.job.id, self.job.model, request_id, utc_now(), fingerprint=self._fingerprint
                )
                try:
                    answer = await self._client.generate(self.job.body, client_request_id=request_id)
                    attempt.send.cost = answer.cost
                except RequestError as error:
                    error.job_id = self.job.id
                    attempt.send.cost = error.cost
                    await self._folder.unanswered(self.job.id, charged=error.cost)
                    self._charged_unusable(error)
                    raise
        self.tokens_used = float(answer.tokens_used or 0)
        return answer

    def _charged_unusable(self, error: RequestError) -> None:
        """An answer the API says it charged for but that cannot be used (a body of an unknown
        shape, too large, cut short) is retried once: a second one fails the job for good, so
        that a broken answer is not paid for over and over."""
        if not error.cost or error.stops_run:
            return
        self._unusable_paid += 1
        if self._unusable_paid > 1:
            error.transient = False
            log.warning(
                "job %s: a second answer charged (%s) that cannot be read; not retried",
                self.job.id,
                error.cost.describe(),
            )

    async def _keep(self, recording: Awaitable[None], answer: Answer) -> None:
        """Await the commit that records a paid answer; if the folder refuses it, log the answer."""
        try:
            await recording
        except StorageError:
            # Paid for but not recordable (disk full): the log is the last place to keep it.
            urls = [image.url for image in answer.images]
            log.error(  # noqa: TRY400 - the stop reports the error itself; no traceback needed
                "job %s: answer not recorded: request_id=%s urls=%s", self.job.id, answer.request_id, urls
            )
            raise

    async def _record_inline(self, answer: Answer) -> Outcome:
        """An answer whose images came inline: answer, images and record in one group commit.

        Inline bytes stay the same bytes: an unacceptable image fails the job for good.
        """
        try:
            images: list[bytes | StagedImage] = [
                decode_b64_image(ref.b64_json or "") for ref in answer.images
            ]
        except InvalidImage as exc:
            await self._keep(self._folder.answered(self.job.id, answer), answer)
            raise DownloadError(f"not an acceptable image: {exc}", transient=False) from exc
        try:
            await self._keep(
                self._folder.finish_with_images(
                    self.job.id, images, self._succeeded(answer), answer=answer, generation=self._generation
                ),
                answer,
            )
        except InvalidImage as exc:  # the answer is recorded all the same
            raise DownloadError(f"not an acceptable image: {exc}", transient=False) from exc
        self.images = len(images)
        return Outcome.SUCCEEDED

    async def _save(self, answer: Answer) -> Outcome:
        """Fetch (or decode) a recorded answer's images and commit them with the record.

        The images are fetched again (never generated again) when one fails to download or
        turns out not to be an acceptable image; inline bytes that are not one fail for good.
        """
        if answer.content_violation:
            raise ContentViolation(
                "the API flagged a content violation; no image is kept", job_id=self.job.id
            )
        if not answer.images:
            raise RequestError("the API answered with no image", job_id=self.job.id)
        try:
            inline = {
                i: decode_b64_image(ref.b64_json) for i, ref in enumerate(answer.images) if ref.b64_json
            }
        except InvalidImage as exc:  # inline bytes stay the same bytes: no retry can help
            raise DownloadError(f"not an acceptable image: {exc}", transient=False) from exc
        control = self._control
        async for attempt in retrying(
            control.policy,
            control.download_gates,
            self._place,
            _finish_anyway,  # a paid answer's images are fetched even while the run stops (grace)
            label=f"job {self.job.id}: images",
        ):
            async with attempt:
                try:
                    images: list[bytes | StagedImage] = []
                    for i, ref in enumerate(answer.images):
                        if i in inline:
                            images.append(inline[i])
                        else:
                            images.append(await self._folder.stage(self._client.stream_image(ref.url or "")))
                    await self._folder.finish_with_images(
                        self.job.id, images, self._succeeded(answer), generation=self._generation
                    )
                except InvalidImage as exc:
                    # Only fetched images may come out right next time.
                    raise DownloadError(
                        f"not an acceptable image: {exc}", transient=len(inline) < len(answer.images)
                    ) from exc
        self.images = len(answer.images)
        return Outcome.SUCCEEDED

    def _succeeded(self, answer: Answer) -> Callable[[list[ImageRecord]], ManifestRecord]:
        """Builds the succeeded record from the saved images (each with the URL it came from)."""

        def build(saved: list[ImageRecord]) -> ManifestRecord:
            images = [
                image.model_copy(update={"url": ref.url, "revised_prompt": ref.revised_prompt})
                for image, ref in zip(saved, answer.images, strict=True)
            ]
            return self._record(Status.SUCCEEDED, answer, images=images)

        return build

    async def _fail(self, error: RequestError, answer: Answer | None) -> Outcome:
        if error.kind == "expired" and self._row is not None and self._row.error_kind == "expired":
            error.transient = False  # refused through the retries of two runs: the URL has expired
        final = not error.transient
        info = ErrorInfo(
            message=error.message,
            kind=error.kind,
            status=error.status,
            request_id=error.request_id,
            retryable=not final,
            body_excerpt=error.body_excerpt,
        )
        violation = isinstance(error, ContentViolation)
        await self._folder.finish(
            self._record(Status.FAILED, answer, error=info, content_violation=violation), final=final
        )
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
            usage=source.usage,
            error=error,
            started_at=self._started,
            finished_at=utc_now(),
            request_fingerprint=self._fingerprint,
            request=self.job.request,
        )

    async def restore(self, record: ManifestRecord, missing: list[int]) -> bool:
        """Fetch again the ``missing`` images (indexes into ``record.images``) of a succeeded job
        from the URLs its record keeps: free, nothing is generated. True when all came back.

        An image that came inline, or whose URL no longer serves it, is reported, not generated
        again (``--redo`` does that, paid); the job's record stands as it is.
        """
        lost = [record.images[i].path for i in missing if not record.images[i].url]
        if lost:
            log.warning(
                "job %s: %s missing and came inline (no URL to fetch it from); --redo %s generates it again",
                self.job.id,
                ", ".join(lost),
                self.job.id,
            )
            return False
        control = self._control
        try:
            async for attempt in retrying(
                control.policy,
                control.download_gates,
                self._place,
                control.unless_stopped,
                label=f"job {self.job.id}: restore",
            ):
                async with attempt:
                    staged = [
                        await self._folder.stage(self._client.stream_image(record.images[i].url or ""))
                        for i in missing
                    ]
                    await self._folder.restore_images(record, dict(zip(missing, staged, strict=True)))
        except Interrupted:
            return False
        except (RequestError, InvalidImage) as exc:
            if isinstance(exc, RequestError) and exc.stops_run:
                raise
            log.warning(
                "job %s: a missing image could not be fetched again (%s); --redo %s generates it again",
                self.job.id,
                exc,
                self.job.id,
            )
            return False
        log.info("job %s: missing image(s) fetched again from the recorded URL", self.job.id)
        return True
