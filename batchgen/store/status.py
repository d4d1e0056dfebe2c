"""``batchgen status DIR``: what an output folder holds, read without disturbing a live run.

The database is opened read-only: ``status`` works on a read-only mount and beside a live run.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from batchgen.errors import UsageError
from batchgen.store.database import StateDatabase

__all__ = ["read_status"]


def _read(out_dir: Path) -> dict[str, str | int | float]:
    path = out_dir / ".batchgen" / "state.sqlite3"
    if not path.is_file():
        raise UsageError(f"{out_dir} holds no batchgen run (no {path})")
    db = StateDatabase.open(path, read_only=True)
    try:
        counts = db.counts()
        total = int(db.get_meta("total_jobs") or 0)
        job_file = db.get_meta("job_file") or "?"
    finally:
        db.close()
    finished = counts.succeeded + counts.failed_final + counts.failed_retryable + counts.in_progress
    total = max(total, finished)  # a folder from before job files were counted per folder
    return {
        "job_file": job_file,
        "total": total,
        "succeeded": counts.succeeded,
        "failed": counts.failed_final,
        "failed_retryable": counts.failed_retryable,
        "in_progress": counts.in_progress,
        "pending": max(0, total - finished),
        "tokens_used": int(counts.tokens_used) if counts.tokens_used.is_integer() else counts.tokens_used,
    }


async def read_status(out_dir: Path) -> dict[str, str | int | float]:
    """Counts of an output folder: total jobs of its last job file, succeeded, failed (final and
    retryable), in progress, pending (never finished), and tokens used.

    Raises :class:`UsageError` when ``out_dir`` holds no batchgen state, and
    :class:`~batchgen.errors.StorageError` when it cannot be read.
    """
    return await asyncio.to_thread(_read, out_dir)
