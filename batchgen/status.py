"""``batchgen status DIR``: what an output folder holds, read without disturbing a live run."""

from __future__ import annotations

from pathlib import Path

from batchgen.errors import UsageError
from batchgen.state import StateDB

__all__ = ["read_status"]


async def read_status(out_dir: Path) -> dict[str, str | int | float]:
    """Counts of an output folder: total jobs of its last job file, succeeded, failed (final and
    retryable), in progress, pending (never finished), and tokens used.

    Raises :class:`UsageError` when ``out_dir`` holds no batchgen state.
    """
    path = out_dir / ".batchgen" / "state.sqlite3"
    if not path.is_file():
        raise UsageError(f"{out_dir} holds no batchgen run (no {path})")
    db = await StateDB.open(path)
    try:
        counts = await db.counts()
        total = int(await db.get_meta("total_jobs") or 0)
        job_file = await db.get_meta("job_file") or "?"
    finally:
        await db.close()
    finished = counts.succeeded + counts.failed_final + counts.failed_retryable + counts.in_progress
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
