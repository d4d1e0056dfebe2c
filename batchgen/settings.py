"""Run settings: from command-line flags and the ``AIMLAPI_*`` environment, with defaults that
suit image generation (a request can take tens of seconds).

The API key is read from ``AIMLAPI_KEY`` or ``--api-key-file``, never from a command-line value
(which would show in ``ps`` and shell history), and is kept out of every ``repr``.
"""

from __future__ import annotations

import logging
import math
import os
import stat
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

from batchgen.errors import UsageError
from batchgen.money import Spend

__all__ = ["DEFAULT_BASE_URL", "Selection", "Settings", "Timeouts", "load_api_key", "resolve_base_url"]

DEFAULT_BASE_URL = "https://api.aimlapi.com"
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Selection:
    """Which jobs of the file a run sends, besides those with work left.

    ``only``: just these job ids (None: all); ``redo``: ids to generate anew (paid) even if
    done; ``retry_failed``: final failures of these kinds (:func:`~batchgen.errors.failure_kind`),
    or ``all``; ``frozen``: a job whose request changed since its record is not sent.
    """

    only: frozenset[str] | None = None
    redo: frozenset[str] = frozenset()
    retry_failed: frozenset[str] = frozenset()
    frozen: bool = False

    def includes(self, job_id: str) -> bool:
        """Whether ``--only`` lets the job through."""
        return self.only is None or job_id in self.only


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Timeouts in seconds for one HTTP exchange: connecting, between reads, and in all."""

    connect: float
    read: float
    total: float


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything one run needs besides the job file and the output folder.

    Units: ``rpm`` requests per minute (an optional hard ceiling of the sending rate; None: the
    rate is learned from 429s and only ``concurrency`` bounds it); ``backoff_*`` and
    ``grace`` seconds; ``max_*_bytes`` bytes. ``retry_budget`` is the AWS SDK "standard" retry
    quota: a retry costs 5 tokens (10 after a timeout), a success refunds 1.
    """

    api_key: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    concurrency: int = 4
    rpm: float | None = None
    max_retries: int = 8
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    retry_budget: int = 500
    generation_timeout: Timeouts = Timeouts(connect=10, read=240, total=300)
    download_timeout: Timeouts = Timeouts(connect=10, read=60, total=300)
    max_json_bytes: int = 64 * 1024 * 1024
    max_image_bytes: int = 50 * 1024 * 1024
    max_pixels: int = 64 * 1024 * 1024
    max_redirects: int = 5
    grace: float = 30.0
    selection: Selection = Selection()  # --only, --redo, --retry-failed, --frozen: which jobs to send
    max_usd: Decimal | None = None  # --max-usd: this run's spend budget, USD
    max_credits: Decimal | None = None  # --max-credits: ... in AIML API credits
    max_requests: int | None = None  # --max-requests: generation requests this run may send
    max_usd_per_day: Decimal | str | None = None  # --max-usd-per-day: the folder's daily cap, or "off"
    assumed_cost: Spend | None = None  # --assume-usd/--assume-credits: one request's worst case
    ignore_retry_after: bool = False  # --ignore-retry-after: clear a wait an earlier run was given
    create_parents: bool = False  # --parents: create the output folder's missing parents
    metrics_file: Path | None = None  # --metrics-file: a Prometheus textfile, every 30 s and at the end
    ca_bundle: Path | None = None
    debug_http: bool = False
    worker_lease: float = 30.0  # --worker-lease: seconds a worker's claims outlive its last heartbeat
    resend_possibly_billed: bool = False  # --resend-possibly-billed: send again what dead workers left sent

    def __post_init__(self) -> None:
        for name in ("max_usd", "max_credits", "max_usd_per_day"):  # (a library caller's floats)
            value = getattr(self, name)
            if isinstance(value, float | int):
                object.__setattr__(self, name, Decimal(str(value)))
        checks = {
            "--concurrency": self.concurrency >= 1,
            "--rpm": self.rpm is None or (math.isfinite(self.rpm) and self.rpm > 0),
            "--max-retries": self.max_retries >= 0,
            "--max-requests": self.max_requests is None or self.max_requests >= 1,
            "--grace": self.grace >= 0,
            "--worker-lease": math.isfinite(self.worker_lease) and self.worker_lease >= 1,
            "--timeout": self.generation_timeout.total > 0,
            "--max-usd": self.max_usd is None or (math.isfinite(self.max_usd) and self.max_usd >= 0),
            "--max-credits": self.max_credits is None
            or (math.isfinite(self.max_credits) and self.max_credits >= 0),
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise UsageError(f"{', '.join(bad)} out of range (counts >= 1, rates and seconds > 0 and finite)")


def resolve_base_url(flag: str | None) -> str:
    """The API's base URL: ``--base-url``, else ``AIMLAPI_BASE_URL``, else the public API.

    A trailing ``/v1`` (the form the API documents for OpenAI-style SDKs) is accepted and
    dropped. Raises :class:`UsageError` unless it is an absolute http(s) URL without a user or
    password in it.
    """
    url = (flag or os.environ.get("AIMLAPI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
    try:
        parts = urlsplit(url)
        credentials = parts.username is not None or parts.password is not None
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise UsageError("the base URL is not a valid URL") from None
    if credentials:  # never echoed: the password would land in logs
        raise UsageError("the base URL must not hold a user or password; use AIMLAPI_KEY for the key")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"base URL {url!r} must be an absolute http(s) URL")
    # The API documents ".../v1" as the base URL for OpenAI-style SDKs; batchgen adds /v1 itself.
    return url.removesuffix("/v1")


def load_api_key(key_file: Path | None) -> str:
    """Read the API key from ``key_file`` (first line) or else ``AIMLAPI_KEY``.

    Warns when the file is readable by group or others. Raises :class:`UsageError` when no key
    is found; the message never contains the key.
    """
    if key_file is not None:
        try:
            mode = key_file.stat().st_mode
            text = key_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read --api-key-file {str(key_file)!r}: {exc}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("%s is readable by other users; run `chmod 600 %s`", key_file, key_file)
        key = text.strip().splitlines()[0].strip() if text.strip() else ""
        if not key:
            raise UsageError(f"--api-key-file {str(key_file)!r} is empty")
        return _checked(key, f"--api-key-file {str(key_file)!r}")
    key = os.environ.get("AIMLAPI_KEY", "").strip()
    if not key:
        raise UsageError("no API key: set AIMLAPI_KEY or pass --api-key-file (or use --simulate)")
    return _checked(key, "AIMLAPI_KEY")


def _checked(key: str, source: str) -> str:
    # A key goes into an HTTP header: spaces or control characters there mean a pasting mistake.
    if not key.isascii() or not key.isprintable() or " " in key:
        raise UsageError(f"the API key in {source} has spaces or unprintable characters")
    return key
