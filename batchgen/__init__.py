"""batchgen: run large batches of image-generation requests against the AIML API.

Pipeline, one module each: ``jobfile`` (job file -> jobs) -> ``requests`` (typed bodies) ->
``client`` (HTTP) -> ``runner`` / ``attempts`` (job tasks, gates, retries) ->
``store`` (the output folder: images, manifest, durable state). Beside the pipeline: ``budget``
and ``metrics`` (gates a run composes), ``plan`` and ``report`` (read a folder, send nothing).
``simulator`` is a stand-in API.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchgen.errors import BatchgenError
    from batchgen.jobs.load import Job, iter_jobs, scan_job_file
    from batchgen.outcome import StopReason
    from batchgen.run.runner import RunReport, run_batch
    from batchgen.settings import Settings

# Each name is imported on first use (PEP 562): `import batchgen.jobs.load` (and so `batchgen
# validate` or `status`) then does not import the runner, aiohttp and the rest.
_HOME = {
    "BatchgenError": "batchgen.errors",
    "Job": "batchgen.jobs.load",
    "iter_jobs": "batchgen.jobs.load",
    "scan_job_file": "batchgen.jobs.load",
    "RunReport": "batchgen.run.runner",
    "StopReason": "batchgen.run.runner",
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
    "RunReport",
    "Settings",
    "StopReason",
    "iter_jobs",
    "run_batch",
    "scan_job_file",
]
__version__ = "0.1.0"
