"""Which jobs a run sends: the user's :class:`Selection` (``--only``, ``--redo``,
``--retry-failed``, ``--frozen``) and :func:`judge`, which weighs one job of the file against its
durable state. ``run`` and ``plan`` share it, so the plan shows what the run will do; it sends
nothing and imports no HTTP stack.
"""

from __future__ import annotations

from dataclasses import dataclass

from batchgen.errors import failure_kind
from batchgen.jobs.load import Job
from batchgen.outcome import JobState, Outcome
from batchgen.settings import Selection
from batchgen.store import JobRow

__all__ = ["Verdict", "judge"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a job's durable state says before anything is sent.

    ``skip``: the outcome of a job with nothing to send (done, failed for good, changed but
    ``--frozen``), or None when it has work left; ``fresh``: generate anew rather than reuse a
    recorded answer; ``changed``: its request differs from the one its record answers.
    """

    skip: Outcome | None = None
    fresh: bool = False
    changed: bool = False


def judge(row: JobRow | None, job: Job, selection: Selection) -> Verdict:
    """Judge a job of the file against its durable ``row``, for a run of ``selection``.

    Like a build tool's rebuild of changed inputs: a finished job whose request changed (see
    :func:`_changed`) is generated anew (unless ``selection.frozen``); so is one named by ``--redo``.
    A row without a fingerprint (a folder older than schema 2) is taken as unchanged. A job that
    failed for good is sent again when its kind is among ``selection.retry_failed`` (see
    :func:`~batchgen.errors.failure_kind`; ``all`` is every kind but ``violation``, which is sent
    again only when named).
    """
    if row is None:
        return Verdict()
    finished = row.state in (JobState.SUCCEEDED, JobState.FAILED)
    changed = finished and row.fingerprint is not None and _changed(row, job.fingerprint)
    if changed and selection.frozen:
        return Verdict(Outcome.CHANGED_FROZEN, changed=True)
    if changed or (job.id in selection.redo and finished):
        return Verdict(fresh=True, changed=changed)
    if row.state is JobState.SUCCEEDED:
        return Verdict(Outcome.ALREADY_DONE)
    if row.state is JobState.FAILED and row.final:
        kind = failure_kind(row.error_kind)
        again = kind in selection.retry_failed or ("all" in selection.retry_failed and kind != "violation")
        return Verdict(None, fresh=True) if again else Verdict(Outcome.FAILED_FINAL)
    return Verdict()


def _changed(row: JobRow, fingerprint: str) -> bool:
    """Whether the job file asks something new of a finished job: not what its record answers,
    and not what this file asked of it last time; a file the folder has not seen before (moved,
    renamed, new) asks nothing new when any file asked the same before. So files that name the
    same job differently (a file of retries from ``batchgen failed``, then the nightly file)
    never pay for it again and again, and an edit of either file is generated anew."""
    if fingerprint == row.fingerprint:
        return False
    if row.asked is not None:
        return fingerprint != row.asked
    return fingerprint not in row.others
