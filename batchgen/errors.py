"""Every error batchgen raises, rooted in one :class:`BatchgenError`.

The tree::

    BatchgenError                    .hint: what the user can do about it
    ├── UsageError                   bad command line or settings (exit 2)
    │   ├── OutputFolderError        an output folder that can never be written as named (exit 2)
    │   └── OutputStoreError         an object-store output with no bucket or no access (exit 2)
    ├── JobFileError                 one or more problems in a job file (exit 2)
    ├── JobFileChanged               the job file was edited during a run (the run stops, exit 75)
    ├── OutputLockedError            another live run holds the output folder (exit 73)
    ├── StorageError                 the output folder cannot be written (disk full...) (exit 75)
    │   ├── LeaseLost                an object-store output's lease taken over or not renewed (exit 75)
    │   └── StateDatabaseError       a PostgreSQL state unreachable, or lost mid-commit (exit 75)
    └── RequestError                 one job's request failed; .transient, .stops_run, .kind
        ├── ApiError                 the API answered with an HTTP error status
        │   ├── RequestRejected      400/422 and other 4xx: the job itself is wrong (permanent)
        │   ├── EndpointNotFound     404/405: the base URL is not the API (stops the run)
        │   ├── AuthenticationError  401: key missing, expired or invalid (stops the run)
        │   ├── CreditsExhausted     403: out of credits or plan limit (stops the run)
        │   ├── RateLimited          429: back off; a long wait (hourly limit) stops the run
        │   └── ServerError          5xx: transient
        ├── TransportError           timeout or connection error (transient)
        │   └── Unreachable          DNS or TLS failure: no request can succeed (stops the run)
        ├── MalformedResponse        a 2xx body that is not the documented JSON (transient)
        │   └── UnrecognizedAnswer   JSON with no images where any model puts them (final: paid)
        ├── ContentViolation         the API flagged the request's content (permanent)
        ├── DownloadError            a generated image could not be fetched or is not an image
        ├── RetryBudgetExhausted     the run-wide retry quota ran out (stops the run)
        ├── BudgetReached            --max-usd / --max-credits would be passed (stops the run)
        │   └── RequestCapReached    --max-requests were sent (stops the run)
        └── JobCrashed               an unforeseen error while handling one job (kind "internal")

Status meanings come from ``../shared/api-docs/NOTES.md`` (the API's "Errors with status code
4xx" page): 401 is a bad key, 403 is exhausted credits or a plan limit ("paying fixes it, waiting
does not"), 429 is a rate or concurrency limit sent without ``Retry-After``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from batchgen.money import Spend

__all__ = [
    "FAILURE_KINDS",
    "ApiError",
    "AuthenticationError",
    "BatchgenError",
    "BudgetReached",
    "ContentViolation",
    "CreditsExhausted",
    "DownloadError",
    "EndpointNotFound",
    "JobCrashed",
    "JobFileChanged",
    "JobFileError",
    "JobFileProblem",
    "LeaseLost",
    "MalformedResponse",
    "OutputFolderError",
    "OutputLockedError",
    "OutputStoreError",
    "RateLimited",
    "RequestCapReached",
    "RequestError",
    "RequestRejected",
    "RetryBudgetExhausted",
    "ServerError",
    "StateDatabaseError",
    "StorageError",
    "TransportError",
    "Unreachable",
    "UnrecognizedAnswer",
    "UsageError",
    "failure_kind",
]


class BatchgenError(Exception):
    """Root of every batchgen error; ``hint`` says what the user can do about it."""

    hint = ""

    @property
    def message(self) -> str:
        """What went wrong, without the hint."""
        return super().__str__()

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(BatchgenError):
    """The command line or the settings are invalid; nothing was sent."""

    hint = "see `batchgen --help`"


class OutputStoreError(UsageError):
    """An object-store output cannot be used as named, and waiting will not change that: no such
    bucket, or access refused. Nothing was sent or written."""

    hint = (
        "check --out, that the bucket exists, and the store's credentials in the environment"
        " (AWS_*, GOOGLE_*, AZURE_*)"
    )


class OutputFolderError(UsageError):
    """The output folder cannot be used as named, and waiting will not change that: a read-only
    filesystem, no permission, not a folder, or a parent folder that does not exist. Nothing was
    sent or written."""

    hint = "choose another --out folder or fix its permissions; --parents creates missing parent folders"


@dataclass(frozen=True)
class JobFileProblem:
    """One problem in a job file: where it is (file, 1-based line, job id, field) and what."""

    file: str
    line: int | None
    job_id: str | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        parts = [where]
        if self.job_id is not None:
            parts.append(f"job {self.job_id!r}")
        if self.field:
            parts.append(f"field {self.field!r}")
        return f"{', '.join(parts)}: {self.message}"


class JobFileChanged(BatchgenError):
    """The job file was modified while a run used it: the jobs not yet sent are left for the
    next run (nothing is wrong with the file itself)."""

    hint = "run the same command again: the next run checks the file as it is now and resumes"


class JobFileError(BatchgenError):
    """A job file has problems; all of them are in ``problems``. Nothing was sent."""

    hint = "fix the job file and run again; `batchgen validate FILE` checks it without sending"
    shown = 20  # more than a screenful of errors stops helping

    def __init__(self, problems: list[JobFileProblem], *, note: str = "") -> None:
        self.problems = problems
        lines = [str(p) for p in problems[: self.shown]]
        if len(problems) > self.shown:
            lines.append(f"... and {len(problems) - self.shown} more problems")
        heading = note or f"{len(problems)} problem(s) in the job file"
        super().__init__(f"{heading}:\n  " + "\n  ".join(lines))

    def __str__(self) -> str:
        return f"{self.args[0]}\n{self.hint}"


class OutputLockedError(BatchgenError):
    """Another live batchgen run holds the output folder's lock."""

    hint = "wait for the other run to finish, or use another --out folder"


class StorageError(BatchgenError):
    """The output folder could not be written (disk full, permissions, planted symlink)."""

    hint = "free space or fix the folder, then run the same command again to resume"


class LeaseLost(StorageError):
    """This run may no longer write its object-store output: another run took its lease over,
    or the lease could not be renewed in time."""

    hint = (
        "another run may hold the output now (`.batchgen/lease.json` names it): let it finish, then run again"
    )


class StateDatabaseError(StorageError):
    """The PostgreSQL state (``--state postgresql://...``) could not be reached or written."""

    hint = "check that the database server is up and --state's URL; then run the same command again to resume"


class RequestError(BatchgenError):
    """A job's request failed.

    ``transient``: trying the same request again later may succeed.
    ``stops_run``: no further request should be sent in this run (bad key, no credits, hourly
    limit); the run ends resumable.
    """

    transient = False
    stops_run = False
    kind_name = ""  # the manifest's error kind; the class name unless set
    retry_limit: int | None = None  # at most this many retries, whatever --max-retries says

    @property
    def kind(self) -> str:
        """The error's kind as the manifest records it (``ServerError``, ``expired``...)."""
        return self.kind_name or type(self).__name__

    def __init__(
        self,
        message: str,
        *,
        job_id: str | None = None,
        status: int | None = None,
        request_id: str | None = None,
        body_excerpt: str | None = None,
        cost: Spend | None = None,
    ) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.status = status
        self.request_id = request_id
        self.body_excerpt = body_excerpt
        self.cost = cost  # what the answer's cost headers say it was charged, whatever its status


class ApiError(RequestError):
    """The API answered with an error status; carries the body's ``message`` and ``requestId``."""


class RequestRejected(ApiError):
    """400/422 (body validation) or another 4xx: the job itself is wrong; retrying cannot help."""

    hint = "fix the job; it is re-sent only with --retry-failed"


class EndpointNotFound(ApiError):
    """404/405 or a redirect (3xx) from the generation endpoint: the base URL does not point at
    the API (a POST is never followed to another address: the key would go with it)."""

    stops_run = True
    transient = True
    hint = "check --base-url / AIMLAPI_BASE_URL (e.g. https://api.aimlapi.com); every job stays resumable"


class AuthenticationError(ApiError):
    """401: the API key is missing, expired or invalid (API docs, NOTES.md)."""

    stops_run = True
    hint = "set a valid key in AIMLAPI_KEY or --api-key-file, then run again to resume"


class CreditsExhausted(ApiError):
    """403: credits or a plan/resource limit are exhausted; paying fixes it, waiting does not."""

    stops_run = True
    transient = True
    hint = "top up credits or raise the key's spend cap, then run again to resume"


LONG_RETRY_AFTER = 300.0
"""Seconds: a 429 asking to wait longer than this ends the run resumable rather than idling it."""
_HOURLY = re.compile(r"\bhour(ly)?\b", re.IGNORECASE)  # "...your free limit for the hour" (NOTES.md)


class RateLimited(ApiError):
    """429: a rate or concurrency limit. ``long_wait`` marks one not worth waiting out (the "limit for
    the hour" of NOTES.md, or a ``Retry-After`` over :data:`LONG_RETRY_AFTER`): the run stops
    resumable. ``retry_after``: the server's ``Retry-After`` in seconds, if it sent one."""

    transient = True

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        long_wait: bool | None = None,
        **context: str | int | None,
    ) -> None:
        super().__init__(message, **context)  # type: ignore[arg-type]
        self.retry_after = retry_after
        if long_wait is None:
            long_wait = bool(_HOURLY.search(message)) or (retry_after or 0) > LONG_RETRY_AFTER
        self.long_wait = long_wait
        self.stops_run = long_wait
        if long_wait:
            self.hint = "the limit resets later (the hourly one within the hour): run again then to resume"


class ServerError(ApiError):
    """5xx or another unexpected status: the API failed; trying again later may work."""

    transient = True
    hint = "batchgen retries it; if the run gives up, run the same command later to resume"


class TransportError(RequestError):
    """A timeout or connection error; the request may or may not have reached the API."""

    transient = True
    hint = "check the network, --base-url and the proxy settings; a later run resumes"


class Unreachable(TransportError):
    """The API's name does not resolve or its TLS certificate is refused: nothing can be sent."""

    stops_run = True
    hint = "check --base-url, DNS and --ca-bundle; every job stays resumable"


class MalformedResponse(RequestError):
    """A 2xx answer whose body is not the documented JSON shape (excerpt in ``body_excerpt``)."""

    transient = True
    hint = "batchgen retries it; the manifest keeps an excerpt of the body"


class UnrecognizedAnswer(MalformedResponse):
    """A 2xx answer that is JSON but holds no images where any model's page puts them (``data``
    or ``images``): it was paid for, so it is not sent again blindly (excerpt in the manifest)."""

    transient = False
    hint = (
        "its shape is new to batchgen (see the excerpt); `--retry-failed unrecognized` sends it again (paid)"
    )


class ContentViolation(RequestError):
    """The API answered, but flagged the content (reve ``content_violation``, flux
    ``has_nsfw_concepts``): no image is kept and re-sending the same request cannot help."""

    hint = "change the prompt or reference image; it is re-sent only with --retry-failed"


class DownloadError(RequestError):
    """A generated image could not be fetched or verified; the paid generation is kept.

    Transient by default (CDN hiccups); a URL batchgen refuses to fetch is permanent. One the
    CDN refuses (403/404/410, kind ``expired``) is retried like a hiccup (a fresh image may be
    served a moment later) and becomes permanent when a second run's retries fail too (signed
    URLs expire): ``--retry-failed`` then generates the job again.
    """

    hint = "the paid generation is kept: the image is fetched again (retries, then a later run)"

    def __init__(
        self, message: str, *, transient: bool = True, kind: str = "", **context: str | int | None
    ) -> None:
        super().__init__(message, **context)  # type: ignore[arg-type]
        self.transient = transient
        self.kind_name = kind
        if kind == "expired":  # a URL not served yet is served within seconds, or never
            self.retry_limit = EXPIRED_RETRIES


EXPIRED_RETRIES = 3
"""Retries of a download the CDN refused (403/404/410) in one run: about 7 s of backoff."""


class RetryBudgetExhausted(RequestError):
    """The run-wide retry quota ran out: the API keeps failing, so the run stops resumable."""

    transient = True
    stops_run = True
    hint = "the API keeps failing; run again later to resume"


class BudgetReached(RequestError):
    """The run's spend budget (``--max-usd`` / ``--max-credits``) would be passed by the next
    request: dispatching stops, every job left stays resumable."""

    transient = True
    stops_run = True
    hint = (
        "run again to go on: --max-usd/--max-credits count one run's spend; a --max-usd-per-day cap"
        " counts all runs of the UTC day in this folder (a new value replaces it, `off` drops it)"
    )


class RequestCapReached(BudgetReached):
    """``--max-requests`` generation requests were sent in this run: dispatching stops, every job
    left stays resumable."""

    hint = "run again to send the rest: --max-requests counts one run's requests"


class JobCrashed(RequestError):
    """Handling one job raised an error nothing foresaw (a bug, or an answer of a new shape).

    The job alone fails, for good (kind ``internal``): later runs skip it unless it is named
    (``--retry-failed``), so one bad answer can never stop a batch twice.
    """

    kind_name = "internal"
    hint = "please report it with the log; the other jobs go on"


FAILURE_KINDS = {  # recorded error kind -> the name --retry-failed takes
    "ContentViolation": "violation",
    "RequestRejected": "rejected",
    "expired": "expired",
    "internal": "internal",
    "DownloadError": "download",
    "RequestError": "empty",
    "MalformedResponse": "malformed",
    "UnrecognizedAnswer": "unrecognized",
}
"""What a final failure is, in ``--retry-failed``'s words: ``violation`` (content flagged),
``rejected`` (400/422: the body), ``expired`` (the CDN refused the image URL for good),
``internal`` (a contained bug), ``download`` (not an acceptable image), ``empty`` (no image),
``malformed`` (answers the API charged for twice that could not be read), ``unrecognized`` (an
answer of a shape no model's page shows)."""


def failure_kind(recorded: str | None) -> str:
    """The ``--retry-failed`` name of a recorded error kind (others: lower-cased)."""
    return FAILURE_KINDS.get(recorded or "", (recorded or "unknown").lower())
