"""The state backend seam: what the store asks of wherever the write-ahead job state lives.

Two backends: SQLite beside the output folder (:mod:`batchgen.store.sqlite`) and PostgreSQL
(:mod:`batchgen.store.postgres`), each event a guarded transition, a group of events one
transaction. Every method runs on the store's one thread (blocking is fine) and raises
:class:`~batchgen.errors.StorageError` when the state cannot be read or written. The tests hold
a second, in-memory implementation.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from batchgen.api.answers import Answer
from batchgen.money import Spend
from batchgen.outcome import JobState, Status
from batchgen.store.events import Event, TransitionError
from batchgen.store.manifest import ManifestRecord

__all__ = [
    "SHOWN_NOT_IN_FILE",
    "JobRow",
    "SharedState",
    "StateBackend",
    "StateCounts",
    "apply_each_alone_if_refused",
    "job_row",
    "state_counts",
]

SHOWN_NOT_IN_FILE = 20  # ids of jobs not in the job file that counts list


@dataclass(frozen=True, slots=True)
class JobRow:
    """One job's durable state."""

    job_id: str
    state: JobState
    final: bool
    attempts: int
    sent_ids: str  # its X-Client-Request-Ids, as stored (JSON): read only when needed
    answer: Answer | None
    started_at: str | None
    damaged: str | None = None  # why the stored answer could not be read back (the job fails alone)
    fingerprint: str | None = None  # of the request last sent; None in folders older than schema 2
    generation: int = 0  # times this job succeeded and was then generated anew
    record: str | None = None  # its last manifest record (JSON), if any
    images: str | None = None  # ... and, for a succeeded job, that record's `images` list (JSON)
    asked: str | None = None  # the fingerprint the job file being run last asked of it, if it did
    others: frozenset[str] = frozenset()  # ... and those any job file asked of it

    @property
    def client_request_ids(self) -> list[str]:
        """The ``X-Client-Request-Id`` of each request sent for it, over all runs."""
        ids: list[str] = json.loads(self.sent_ids)
        return ids

    @property
    def error_kind(self) -> str | None:
        """The kind of the error its last record holds, if any (``ContentViolation``...)."""
        error = json.loads(self.record).get("error") if self.record else None
        return error.get("kind") if isinstance(error, dict) else None


@dataclass(frozen=True, slots=True)
class StateCounts:
    """Jobs per state, the failed ones split into final and retryable; tokens in all."""

    succeeded: int = 0
    failed_final: int = 0
    failed_retryable: int = 0
    in_progress: int = 0
    total: int = 0  # jobs of the job file last run into the folder (``total_jobs``), at least those seen
    tokens_used: float = 0.0
    generated_anew: int = 0  # succeeded jobs generated again: request changed, or --redo
    spent: dict[str, Spend] = field(default_factory=dict)  # by model, every answer charged, all runs
    not_in_file: list[str] = field(default_factory=list)  # the first 20 jobs the last job file lacks
    not_in_file_count: int = 0  # ... and how many there are

    @property
    def pending(self) -> int:
        """Jobs of the job file(s) never finished nor in progress."""
        return max(
            0, self.total - self.succeeded - self.failed_final - self.failed_retryable - self.in_progress
        )

    @property
    def total_spent(self) -> Spend:
        """Spent over every model."""
        return sum(self.spent.values(), Spend())


class StateBackend(Protocol):
    """Where a folder's job states, records, charges and run-level values live."""

    def apply(self, events: list[Event]) -> list[BaseException | None]:
        """Apply ``events`` in one transaction (one commit, durable on return). Returns, per
        event, None or the :class:`~batchgen.store.events.TransitionError` that refused it: a
        refusal (a bug) must not cost the group's other events."""
        ...

    def rows(self, job_ids: Iterable[str], *, source: str = "") -> dict[str, JobRow]:
        """The rows of those of ``job_ids`` it knows, by id; ``source``: the job file being run,
        whose :attr:`JobRow.asked` each row carries."""
        ...

    def current_records(self, *, status: Status | None = None) -> Iterator[ManifestRecord]:
        """Each job's last record (only those of ``status``, if given), by job id."""
        ...

    def failed_jobs(self, limit: int) -> tuple[list[dict[str, Any]], int]:
        """The first ``limit`` failed jobs by id (``id``, ``kind``, ``message``,
        ``retried_on_resume``) and how many there are."""
        ...

    def count_records(self) -> int:
        """How many manifest records it holds."""
        ...

    def record_lines(self, offset: int) -> Iterator[str]:
        """The manifest's lines (each ending in a newline), in order, past the first ``offset``."""
        ...

    def in_flight(self) -> list[tuple[str, list[str]]]:
        """Jobs left dispatched: (job id, its X-Client-Request-Ids), by id."""
        ...

    def counts(self) -> StateCounts:
        """Jobs per outcome (the file's, once a pass listed them), tokens, money by model."""
        ...

    def not_in_file(self, *, limit: int = -1) -> list[str]:
        """Finished jobs the last full pass of the job file did not list, by id (-1: all)."""
        ...

    def spent_by_model(self, *, day: str | None = None) -> dict[str, Spend]:
        """What the answers charged, by model, exact: all, or those of ``day`` (UTC, YYYY-MM-DD)."""
        ...

    def request_costs(self) -> dict[str, list[Spend]]:
        """What one request of each model cost: each job's last charged answer, by model."""
        ...

    def get_meta(self, key: str) -> str | None:
        """A run-level value, or None."""
        ...

    def close(self) -> None:
        """Release the state (everything is already committed)."""
        ...


class SharedState(StateBackend, Protocol):
    """A state several workers commit to (PostgreSQL): records get their order at commit, and
    the manifest is appended by one worker at a time, the holder of its lock."""

    def take_manifest(self, *, wait: float = 0.0) -> bool | None:
        """Hold the manifest lock: True when just taken, False when held already, None when
        another worker holds it (after waiting up to ``wait`` seconds)."""
        ...

    def holds_manifest(self) -> bool:
        """Whether the manifest lock is still held (a lost connection loses it)."""
        ...

    def release_manifest(self) -> None:
        """Let another worker append the manifest."""
        ...

    def record_seq_at(self, offset: int) -> int:
        """The order key of the record at ``offset`` (0-based), 0 for none."""
        ...

    def records_after(self, seq: int, *, limit: int = 1000) -> tuple[list[str], int]:
        """Up to ``limit`` manifest lines past record ``seq``, and the last one's key."""
        ...


def apply_each_alone_if_refused(
    transaction: Callable[[list[Event]], None], events: list[Event]
) -> list[BaseException | None]:
    """Run ``transaction`` (all or nothing) over ``events``; when one of them is refused (a
    :class:`TransitionError`: a bug), replay them one by one so that the others still land.
    Returns, per event, None or its refusal. The group commit of every state backend."""
    try:
        transaction(events)
    except TransitionError:
        outcomes: list[BaseException | None] = []
        for event in events:
            try:
                transaction([event])
            except TransitionError as exc:
                outcomes.append(exc)
            else:
                outcomes.append(None)
        return outcomes
    return [None] * len(events)


def job_row(row: tuple[Any, ...]) -> JobRow:
    """A :class:`JobRow` from the columns every SQL backend's rows query selects: job id, state,
    final, attempts, X-Client-Request-Ids (JSON), answer (JSON), started_at, fingerprint,
    generation, last record, its images (JSON, succeeded jobs), the fingerprint the job file
    being run asked, and every fingerprint any job file asked (space-separated)."""
    answer, damaged = None, None
    try:
        # A succeeded job's answer is not used again (a job generated anew gets a new one).
        answer = Answer.model_validate_json(row[5]) if row[5] and row[1] != "succeeded" else None
    except ValidationError as exc:
        damaged = f"the recorded answer cannot be read: {str(exc).splitlines()[0]}"
    return JobRow(
        row[0], JobState(row[1]), bool(row[2]), row[3], row[4], answer, row[6], damaged,
        row[7], row[8], row[9], row[10], row[11], frozenset(row[12].split(" ")) if row[12] else frozenset(),
    )  # fmt: skip


def state_counts(
    by_state: Iterable[tuple[str, Any, int]],
    *,
    total_jobs: int,
    tokens: float,
    anew: int,
    spent: dict[str, Spend],
    outside: list[str],
    outside_count: int,
) -> StateCounts:
    """The :class:`StateCounts` of ``(state, final, count)`` rows and the other sums."""
    totals: dict[str, int] = {}
    for state, final, count in by_state:
        key = f"{state}:{int(final)}" if state == JobState.FAILED else state
        totals[key] = totals.get(key, 0) + count
    return StateCounts(
        succeeded=totals.get(JobState.SUCCEEDED, 0),
        failed_final=totals.get("failed:1", 0),
        failed_retryable=totals.get("failed:0", 0),
        in_progress=sum(totals.get(s, 0) for s in (JobState.DISPATCHED, JobState.ANSWERED)),
        # (a folder from before job files were counted: at least the jobs it has seen finish)
        total=max(total_jobs, sum(n for k, n in totals.items() if k != "pending")),
        tokens_used=float(tokens),
        generated_anew=int(anew),
        spent=spent,
        not_in_file=outside,
        not_in_file_count=int(outside_count),
    )
