"""The job file fed to a run in chunks, each read off the event loop (reading a chunk may read
local images): one state lookup per chunk instead of one per job."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterator

from batchgen.jobs.load import Job

__all__ = ["FEED_CHARS", "FEED_CHUNK", "chunks"]

FEED_CHUNK = 256  # jobs read and looked up per hop off the event loop ...
FEED_CHARS = 32 * 1024 * 1024  # ... or fewer, when their bodies (inline images) reach this size


async def chunks(jobs: Iterator[Job]) -> AsyncGenerator[list[Job], None]:
    """The job file in chunks, each read off the event loop (it may read local images).
    Raises JobFileError as ``jobs`` does."""
    while chunk := await asyncio.to_thread(_take, jobs):
        yield chunk


def _take(jobs: Iterator[Job]) -> list[Job]:
    """The next jobs of the file: up to FEED_CHUNK of them, or FEED_CHARS of request bodies."""
    chunk: list[Job] = []
    chars = 0
    for job in jobs:
        chunk.append(job)
        chars += sum(len(v) if isinstance(v, str) else sum(map(len, v)) for v in job.images())
        if len(chunk) >= FEED_CHUNK or chars >= FEED_CHARS:
            break
    return chunk
