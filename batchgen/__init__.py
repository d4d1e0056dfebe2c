"""batchgen: run large batches of image-generation requests against the AIML API.

Pipeline, one module each: ``jobfile`` (job file -> jobs) -> ``requests`` (typed bodies) ->
``client`` (HTTP) -> ``runner`` / ``attempts`` (job tasks, gates, retries) ->
``store`` (the output folder: images, manifest, durable state). Beside the pipeline: ``budget``
and ``metrics`` (gates a run composes), ``plan`` and ``report`` (read a folder, send nothing).
``simulator`` is a stand-in API.
"""

from batchgen.errors import BatchgenError
from batchgen.jobfile import Job, iter_jobs, scan_job_file
from batchgen.runner import RunReport, StopReason, run_batch
from batchgen.settings import Settings

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
