"""Where everything lives in an output folder, and the names of its run-level values: the one
module that names them (nothing outside :mod:`batchgen.store` does).

Layout of ``DIR``::

    manifest.jsonl            one record per finished job attempt (store.manifest)
    images/<name>.<ext>       the images, named from the job id (store.files.safe_name)
    report.html               the report page (batchgen.report), and its thumbnails/
    .batchgen/state.sqlite3   write-ahead job state (store.sqlite)
    .batchgen/lock            held by the live run (flock)

Layout of an object-store output ``s3://BUCKET/PREFIX`` (keys under the prefix)::

    manifest/part-<n>.jsonl   the manifest in immutable parts, read in order (store.objects)
    .batchgen/lease.json      the live run's lease (store.lease)
    images/<name>.<ext>       the images, put once
    report.html, thumbnails/  the report page

and of its local state folder (``--state``, by default :func:`default_state_root` of the URL)::

    .batchgen/state.sqlite3   write-ahead job state
    .batchgen/lock            held by the live run
    .batchgen/holder          the random id its runs hold the output's lease by
    .batchgen/scratch/        downloads too large for memory, before their upload
"""

from __future__ import annotations

import hashlib
import os
import re
from enum import StrEnum
from pathlib import Path

__all__ = [
    "HOLDER",
    "IMAGES",
    "LEASE",
    "LOCK",
    "MANIFEST",
    "MANIFEST_PARTS",
    "PRIVATE",
    "REPORT",
    "SCRATCH",
    "STATE",
    "STATE_URL",
    "THUMBNAILS",
    "Meta",
    "default_state_root",
    "has_state",
    "keep_state_url",
    "manifest_part",
    "manifest_path",
    "report_path",
    "state_url",
    "thumbnails_path",
]

MANIFEST = "manifest.jsonl"
IMAGES = "images"
REPORT = "report.html"
THUMBNAILS = "thumbnails"
PRIVATE = ".batchgen"
STATE = f"{PRIVATE}/state.sqlite3"
LOCK = f"{PRIVATE}/lock"
SCRATCH = f"{PRIVATE}/scratch"
STATE_URL = f"{PRIVATE}/state-url"  # where the state is when not here: a PostgreSQL URL, no password
LEASE = f"{PRIVATE}/lease.json"
HOLDER = f"{PRIVATE}/holder"  # in a state folder: the random id its runs hold an output's lease by
MANIFEST_PARTS = "manifest"


def manifest_part(number: int) -> str:
    """The key of the manifest's part ``number`` (0, 1, ...): names sort in order."""
    return f"{MANIFEST_PARTS}/part-{number:08d}.jsonl"


def default_state_root(url: str) -> Path:
    """The local state folder of an object-store output ``url`` when ``--state`` is not given:
    ``$XDG_STATE_HOME/batchgen/<scheme>-<bucket>-<12 hex of the URL's SHA-256>`` (``XDG_STATE_HOME``
    defaults to ``~/.local/state``), so each output URL has its own."""
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    normalized = url.rstrip("/")
    scheme, _, rest = normalized.partition("://")
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{scheme}-{rest.split('/', 1)[0]}").strip("-")
    return base / "batchgen" / f"{readable}-{hashlib.sha256(normalized.encode()).hexdigest()[:12]}"


class Meta(StrEnum):
    """The run-level values a folder keeps (the state's ``meta`` table), by key."""

    JOB_FILE = "job_file"  # the resolved path of the job file last run into the folder
    TOTAL_JOBS = "total_jobs"  # how many jobs that file holds
    LAST_RUN = "last_run"  # how the last run ended (JSON, as `status` shows it)
    DAILY_CAP = "max_usd_per_day"  # --max-usd-per-day as last given ("off": none)
    NOT_BEFORE = "not_before"  # a Retry-After's end (Unix time) that outlives the run
    LISTED = "listed"  # the job file whose run last judged every one of its jobs


def has_state(root: Path) -> bool:
    """Whether ``root`` holds a batchgen run's state, or says where it is (a folder some run
    has opened)."""
    return (root / STATE).is_file() or (root / STATE_URL).is_file()


def state_url(root: Path) -> str | None:
    """The PostgreSQL URL a run with ``--state postgresql://...`` left in ``root`` (its
    password is not kept: libpq reads ``PGPASSWORD`` or ``~/.pgpass``), or None."""
    try:
        return (root / STATE_URL).read_text().strip() or None
    except OSError:  # (none there; or --out is not a folder at all, which the run then says)
        return None


def keep_state_url(root: Path, url: str) -> None:
    """Note in ``root`` where its state lives (see :func:`state_url`)."""
    (root / STATE_URL).write_text(url + "\n")


def manifest_path(root: Path) -> Path:
    """The manifest of the output folder ``root``."""
    return root / MANIFEST


def report_path(root: Path) -> Path:
    """The report page of the output folder ``root``."""
    return root / REPORT


def thumbnails_path(root: Path) -> Path:
    """The report's thumbnails folder in the output folder ``root``."""
    return root / THUMBNAILS
