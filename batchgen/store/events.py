"""The changes of a folder's write-ahead state: one class per event, and the table of the job
state moves they make (as dask's worker state machine lists its transitions).

A state backend applies a group of events in one transaction. Every event that moves a job
names the state it moves it to; the backend moves it only from a state :data:`TRANSITIONS`
allows (SQLite: ``UPDATE ... WHERE state IN (...)``), and one that finds the job elsewhere raises
:class:`TransitionError` (a bug, never a silent no-op). The effects, event by event:

===================  ==========================  =============================================
event                moves the job to            and also
===================  ==========================  =============================================
Dispatched           dispatched (row created)    attempts + 1; the X-Client-Request-Id kept;
                                                 its fingerprint; generation + 1 if it had
                                                 succeeded; what this job file asked of it
Unanswered           pending                     a charge, when the refusal carried a cost
Answered             answered                    the answer kept; tokens; its charge
Finished             succeeded / failed          the record appended; ``final``; (with an
                                                 ``answer``: Answered first, same transaction)
Imported             succeeded / failed (as is)  a record of a lost state rebuilt from the
                                                 manifest; one charge per answer, on its day
FingerprintsAdopted  (no move)                   fingerprints for rows older than schema 2
Asked                (no move)                   what this job file asks of finished jobs
Listed               (no move)                   the job file's pass: begin / ids / done
MetaSet              (no move)                   a run-level value (:class:`~.layout.Meta`)
===================  ==========================  =============================================
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from batchgen.api.answers import Answer
from batchgen.errors import BatchgenError, StorageError
from batchgen.money import Spend
from batchgen.outcome import JobState, Status
from batchgen.store.manifest import ManifestRecord

__all__ = [
    "TRANSITIONS",
    "Answered",
    "Asked",
    "ClaimLost",
    "Dispatched",
    "Event",
    "FingerprintsAdopted",
    "Finished",
    "Imported",
    "Listed",
    "MetaSet",
    "TransitionError",
    "Unanswered",
    "sources",
]

_S = JobState
TRANSITIONS: frozenset[tuple[JobState, JobState]] = frozenset(
    {
        (_S.PENDING, _S.DISPATCHED),  # first send
        (_S.DISPATCHED, _S.DISPATCHED),  # re-send of a job in flight when a run died
        (_S.FAILED, _S.DISPATCHED),  # a retryable failure re-sent, or --retry-failed
        (_S.DISPATCHED, _S.PENDING),  # refused or lost without an answer: not billed
        (_S.DISPATCHED, _S.ANSWERED),  # the paid answer, made durable before any fetch
        (_S.ANSWERED, _S.SUCCEEDED),  # every image saved
        (_S.ANSWERED, _S.FAILED),  # content violation, no image, a download that gave up
        (_S.PENDING, _S.FAILED),  # refused for good (400), or retries spent without an answer
        (_S.DISPATCHED, _S.FAILED),  # an unforeseen error between send and answer (kind internal)
        (_S.FAILED, _S.SUCCEEDED),  # a recorded answer fetched again by a resume
        (_S.FAILED, _S.FAILED),  # ... and failed again
        (_S.SUCCEEDED, _S.DISPATCHED),  # generated anew: its request changed, or --redo
        (_S.SUCCEEDED, _S.SUCCEEDED),  # a missing image fetched again from its recorded URL
    }
)
"""Every allowed ``(from, to)`` move of a job."""


@functools.cache  # (three moves per job: the table is walked once per target, not per move)
def sources(target: JobState) -> tuple[str, ...]:
    """The states a job may be moved to ``target`` from, sorted (for a ``WHERE state IN``)."""
    return tuple(sorted(source.value for source, to in TRANSITIONS if to is target))


class TransitionError(BatchgenError):
    """A state update found the job in a state it may not leave that way: a bug in batchgen."""

    hint = "please report it with the log; the output folder stays resumable"


class ClaimLost(TransitionError, StorageError):
    """A worker's dispatch found its job claimed by another worker: its lease ran out while it
    could not reach the state database, and the job was taken over. Nothing was sent."""

    hint = "this worker stops; the others go on (run it again to rejoin the run)"


@dataclass(frozen=True, slots=True)
class Dispatched:
    """Attempt ``client_request_id`` of the job goes out (committed before it is sent);
    ``fingerprint``: of its request; ``source``: the job file asking it (resolved path)."""

    job_id: str
    model: str
    client_request_id: str
    now: str | None
    fingerprint: str = ""
    source: str = ""
    target = JobState.DISPATCHED


@dataclass(frozen=True, slots=True)
class Unanswered:
    """The request failed without a usable generation: back to pending; ``cost``: what its
    cost headers said it was charged all the same."""

    job_id: str
    cost: Spend | None = None
    target = JobState.PENDING


@dataclass(frozen=True, slots=True)
class Answered:
    """The API's answer, durable before anything is done with it (fetches, images)."""

    job_id: str
    answer: Answer
    target = JobState.ANSWERED


@dataclass(frozen=True, slots=True)
class Finished:
    """The job's record: succeeded or failed (``final``: a failure a plain resume must not
    re-send). ``answer``: an answer not recorded yet (inline images), recorded first."""

    record: ManifestRecord
    record_json: str
    final: bool = False
    answer: Answer | None = None

    @property
    def target(self) -> JobState:
        """Where the record moves the job."""
        return JobState.SUCCEEDED if self.record.status is Status.SUCCEEDED else JobState.FAILED


@dataclass(frozen=True, slots=True)
class Imported:
    """A record found in the manifest past what the state holds (the state was lost): the job
    is set as the record says, without a guard; its answer charged once, on its day."""

    record: ManifestRecord
    record_json: str
    final: bool = False


@dataclass(frozen=True, slots=True)
class FingerprintsAdopted:
    """(job id, fingerprint) for finished jobs of a folder older than schema 2."""

    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Asked:
    """What the job file ``source`` asks of these finished jobs: (job id, fingerprint)."""

    source: str
    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Listed:
    """A pass over the job file ``source``: ``begin``; ``ids`` seen; ``done`` (they are now the
    file's jobs, and ``source`` the file that listed them)."""

    step: str
    source: str
    ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MetaSet:
    """A run-level value."""

    key: str
    value: str


Event = (
    Dispatched | Unanswered | Answered | Finished | Imported | FingerprintsAdopted | Asked | Listed | MetaSet
)
"""Every change a state backend applies."""
