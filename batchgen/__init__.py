"""batchgen: run large batches of image-generation requests against the AIML API.

The pipeline, one package each: ``jobs`` (job file -> validated jobs, ``models`` their bodies)
-> ``run`` (job tasks, retries, stops; ``gates`` each request passes) -> ``api`` (HTTP) ->
``store`` (the output folder: images, manifest, write-ahead state). ``commands`` is the command
line; ``plan`` and ``report`` read a folder and send nothing; ``simulator`` is a stand-in API.
The shared vocabulary sits at the bottom: ``money``, ``outcome``, ``errors``, ``settings``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchgen.errors import BatchgenError, JobFileError, OutputLockedError, StorageError, UsageError
    from batchgen.jobs.load import Job, iter_jobs, scan_job_file
    from batchgen.outcome import StopReason
    from batchgen.run.runner import RunReport, run_batch
    from batchgen.settings import Settings

# Each name is imported on first use (PEP 562): `import batchgen.jobs.load` (and so `batchgen
# validate` or `status`) then does not import the runner, aiohttp and the rest.
_HOME = {
    "BatchgenError": "batchgen.errors",
    "JobFileError": "batchgen.errors",
    "OutputLockedError": "batchgen.errors",
    "StorageError": "batchgen.errors",
    "UsageError": "batchgen.errors",
    "Job": "batchgen.jobs.load",
    "iter_jobs": "batchgen.jobs.load",
    "scan_job_file": "batchgen.jobs.load",
    "RunReport": "batchgen.run.runner",
    "StopReason": "batchgen.outcome",
    "run_batch": "batchgen.run.runner",
    "Settings": "batchgen.settings",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'batchgen' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME[name]), name)


__all__ = [
    "BatchgenError",
    "Job",
    "JobFileError",
    "OutputLockedError",
    "RunReport",
    "Settings",
    "StopReason",
    "StorageError",
    "UsageError",
    "iter_jobs",
    "run_batch",
    "scan_job_file",
]
__version__ = "0.1.0"
