"""The output folder as one component: layout and lock, state database, manifest, atomic files.

Everything outside this package goes through :class:`OutputFolder` (a run) or
:func:`read_status` and :func:`verify_folder` (``status``, ``verify``); nothing else touches the
database or the files.

    folder.py     the facade: open (lock, repair), group commit, images
    database.py   SQLite write-ahead state; the job states and their allowed transitions
    manifest.py   manifest records and the append-only file
    files.py      safe names, temporary files, folder sync, the lock
    status.py     read-only views: ``status`` (counts), ``verify`` (images), ``plan`` (rows, costs)
"""

from batchgen.store.database import TRANSITIONS, JobRow, JobState, StateCounts, TransitionError
from batchgen.store.folder import OutputFolder, StagedImage
from batchgen.store.manifest import ErrorInfo, ImageRecord, ManifestRecord, Status, utc_now
from batchgen.store.status import (
    FolderReader,
    ImageProblem,
    ReportView,
    failed_records,
    read_records,
    read_report_view,
    read_status,
    verify_folder,
)

__all__ = [
    "TRANSITIONS",
    "ErrorInfo",
    "FolderReader",
    "ImageProblem",
    "ImageRecord",
    "JobRow",
    "JobState",
    "ManifestRecord",
    "OutputFolder",
    "ReportView",
    "StagedImage",
    "StateCounts",
    "Status",
    "TransitionError",
    "failed_records",
    "read_records",
    "read_report_view",
    "read_status",
    "utc_now",
    "verify_folder",
]
