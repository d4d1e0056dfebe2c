"""The store: where every result lands, durably, and where a resume starts from.

Everything outside this package goes through :class:`OutputFolder` (a run), an
:class:`~batchgen.store.location.OutputLocation`, or the read-only views (``status``, ``verify``,
``plan``, ``report``); nothing else touches the state or the
files, or names a path or a run-level value of the folder.

    layout.py         every path of the folder and every run-level value's key
    events.py         one class per state change, and the table of job state moves
    state.py          the state backend seam (Protocol), and the rows it answers with
    sqlite.py         ... SQLite beside the folder (sqlite_schema.py: tables, upgrades)
    postgres.py       ... PostgreSQL, --state postgresql://... (postgres_effects.py: tables, statements)
    output.py         the output backend seam (Protocol)
    local.py          ... a local folder (files.py: names, durable writes, the lock)
    objects.py        ... an object store through obstore (lease.py: one run per output URL)
    location.py       --out and --state resolved: which backends, where the state is
    manifest.py       manifest records and the append-only file
    writer.py         group commit: many jobs' events, images and records in one transaction
    folder.py         the facade of a run: OutputFolder
    status.py         read-only views: ``status``, ``verify``, ``failed``, ``report``, ``plan``
"""

from batchgen.store.events import TRANSITIONS, TransitionError
from batchgen.store.folder import Backends, OutputFolder, StagedImage
from batchgen.store.layout import has_state, manifest_path, report_path, thumbnails_path
from batchgen.store.manifest import ErrorInfo, ImageRecord, ManifestRecord, utc_now
from batchgen.store.output import OutputBackend
from batchgen.store.state import JobRow, StateBackend, StateCounts
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
    "Backends",
    "ErrorInfo",
    "FolderReader",
    "ImageProblem",
    "ImageRecord",
    "JobRow",
    "ManifestRecord",
    "OutputBackend",
    "OutputFolder",
    "ReportView",
    "StagedImage",
    "StateBackend",
    "StateCounts",
    "TransitionError",
    "failed_records",
    "has_state",
    "manifest_path",
    "read_records",
    "read_report_view",
    "read_status",
    "report_path",
    "thumbnails_path",
    "utc_now",
    "verify_folder",
]
