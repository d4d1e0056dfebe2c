"""Where everything lives in an output folder, and the names of its run-level values: the one
module that names them (nothing outside :mod:`batchgen.store` does).

Layout of ``DIR``::

    manifest.jsonl            one record per finished job attempt (store.manifest)
    images/<name>.<ext>       the images, named from the job id (store.files.safe_name)
    report.html               the report page (batchgen.report), and its thumbnails/
    .batchgen/state.sqlite3   write-ahead job state (store.sqlite)
    .batchgen/lock            held by the live run (flock)
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

__all__ = [
    "IMAGES",
    "LOCK",
    "MANIFEST",
    "PRIVATE",
    "REPORT",
    "STATE",
    "THUMBNAILS",
    "Meta",
    "has_state",
    "manifest_path",
    "report_path",
    "thumbnails_path",
]

MANIFEST = "manifest.jsonl"
IMAGES = "images"
REPORT = "report.html"
THUMBNAILS = "thumbnails"
PRIVATE = ".batchgen"
STATE = f"{PRIVATE}/state.sqlite3"
LOCK = f"{PRIVATE}/lock"


class Meta(StrEnum):
    """The run-level values a folder keeps (the state's ``meta`` table), by key."""

    JOB_FILE = "job_file"  # the resolved path of the job file last run into the folder
    TOTAL_JOBS = "total_jobs"  # how many jobs that file holds
    LAST_RUN = "last_run"  # how the last run ended (JSON, as `status` shows it)
    DAILY_CAP = "max_usd_per_day"  # --max-usd-per-day as last given ("off": none)
    NOT_BEFORE = "not_before"  # a Retry-After's end (Unix time) that outlives the run
    LISTED = "listed"  # the job file whose run last judged every one of its jobs


def has_state(root: Path) -> bool:
    """Whether ``root`` holds a batchgen run's state (a folder some run has opened)."""
    return (root / STATE).is_file()


def manifest_path(root: Path) -> Path:
    """The manifest of the output folder ``root``."""
    return root / MANIFEST


def report_path(root: Path) -> Path:
    """The report page of the output folder ``root``."""
    return root / REPORT


def thumbnails_path(root: Path) -> Path:
    """The report's thumbnails folder in the output folder ``root``."""
    return root / THUMBNAILS
