"""The second implementations of the store's seams, in memory: a state backend and an output
backend that hold everything in dicts and lists. They prove that the run depends on the seams
(``StateBackend``, ``OutputBackend``), not on SQLite or a filesystem."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from batchgen.api.answers import Answer
from batchgen.errors import OutputLockedError
from batchgen.images import inspect_image
from batchgen.money import Spend
from batchgen.outcome import JobState, Status
from batchgen.store import Backends, ImageRecord, JobRow, ManifestRecord, StateCounts
from batchgen.store.events import (
    Answered,
    Asked,
    Dispatched,
    Event,
    FingerprintsAdopted,
    Finished,
    Imported,
    Listed,
    MetaSet,
    TransitionError,
    Unanswered,
    sources,
)
from batchgen.store.layout import Meta
from batchgen.store.state import SHOWN_NOT_IN_FILE, apply_each_alone_if_refused

_FINISHED = (JobState.SUCCEEDED, JobState.FAILED)


@dataclass
class _Job:
    model: str
    state: JobState = JobState.PENDING
    final: bool = False
    attempts: int = 0
    ids: list[str] = field(default_factory=list)
    answer: Answer | None = None
    tokens: float | None = None
    started_at: str | None = None
    fingerprint: str | None = None
    generation: int = 0
    record_seq: int | None = None  # index into records


@dataclass
class _Tables:
    jobs: dict[str, _Job] = field(default_factory=dict)
    records: list[str] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)
    charges: list[tuple[str, str, str | None, str, Spend]] = field(default_factory=list)
    asked: dict[tuple[str, str], str] = field(default_factory=dict)
    listing: set[str] = field(default_factory=set)
    listing_next: set[str] = field(default_factory=set)


class MemoryState:
    """A :class:`~batchgen.store.state.StateBackend` in memory; a group is applied to a copy
    and kept only whole (a transaction)."""

    def __init__(self) -> None:
        self.t = _Tables()
        self.groups = 0  # transactions committed

    # -- writes --------------------------------------------------------------------------------

    def apply(self, events: list[Event]) -> list[BaseException | None]:
        return apply_each_alone_if_refused(self._transaction, events)

    def _transaction(self, events: list[Event]) -> None:
        work = copy.deepcopy(self.t)
        for event in events:
            _EFFECTS[type(event)](work, event)
        self.t = work
        self.groups += 1

    # -- reads ---------------------------------------------------------------------------------

    def rows(self, job_ids: Iterable[str], *, source: str = "") -> dict[str, JobRow]:
        found = {}
        for job_id in job_ids:
            job = self.t.jobs.get(job_id)
            if job is None:
                continue
            record = self.t.records[job.record_seq] if job.record_seq is not None else None
            images = (
                json.dumps(json.loads(record)["images"])
                if record and job.state is JobState.SUCCEEDED
                else None
            )
            found[job_id] = JobRow(
                job_id,
                job.state,
                job.final,
                job.attempts,
                json.dumps(job.ids),
                job.answer if job.state is not JobState.SUCCEEDED else None,
                job.started_at,
                None,
                job.fingerprint,
                job.generation,
                record,
                images,
                self.t.asked.get((source, job_id)),
                frozenset(fp for (_, j), fp in self.t.asked.items() if j == job_id),
            )
        return found

    def current_records(self, *, status: Status | None = None) -> Iterator[ManifestRecord]:
        for job_id in sorted(self.t.jobs):
            job = self.t.jobs[job_id]
            if job.record_seq is not None:
                record = ManifestRecord.model_validate_json(self.t.records[job.record_seq])
                if status is None or record.status is status:
                    yield record

    def failed_jobs(self, limit: int) -> tuple[list[dict[str, Any]], int]:
        failed = sorted(j for j, job in self.t.jobs.items() if job.state is JobState.FAILED)
        shown = []
        for job_id in failed[:limit]:
            job = self.t.jobs[job_id]
            error = (
                json.loads(self.t.records[job.record_seq]).get("error")
                if job.record_seq is not None
                else None
            )
            shown.append(
                {
                    "id": job_id,
                    "kind": (error or {}).get("kind"),
                    "message": (error or {}).get("message"),
                    "retried_on_resume": not job.final,
                }
            )
        return shown, len(failed)

    def count_records(self) -> int:
        return len(self.t.records)

    def record_lines(self, offset: int) -> Iterator[str]:
        yield from self.t.records[offset:]

    def in_flight(self) -> list[tuple[str, list[str]]]:
        return [
            (j, list(job.ids)) for j, job in sorted(self.t.jobs.items()) if job.state is JobState.DISPATCHED
        ]

    def counts(self) -> StateCounts:
        listed = Meta.LISTED in self.t.meta
        in_scope = [
            job
            for j, job in self.t.jobs.items()
            if not listed or j in self.t.listing or job.state not in _FINISHED
        ]
        by = {
            "succeeded": sum(job.state is JobState.SUCCEEDED for job in in_scope),
            "failed_final": sum(job.state is JobState.FAILED and job.final for job in in_scope),
            "failed_retryable": sum(job.state is JobState.FAILED and not job.final for job in in_scope),
            "in_progress": sum(job.state in (JobState.DISPATCHED, JobState.ANSWERED) for job in in_scope),
        }
        outside = self.not_in_file() if listed else []
        return StateCounts(
            **by,
            total=max(int(self.t.meta.get(Meta.TOTAL_JOBS, 0)), sum(by.values())),
            tokens_used=float(sum(job.tokens or 0 for job in self.t.jobs.values())),
            generated_anew=sum(job.generation > 0 for job in self.t.jobs.values()),
            spent=self.spent_by_model(),
            not_in_file=outside[:SHOWN_NOT_IN_FILE],
            not_in_file_count=len(outside),
        )

    def not_in_file(self, *, limit: int = -1) -> list[str]:
        if Meta.LISTED not in self.t.meta:
            return []
        outside = sorted(
            j for j, job in self.t.jobs.items() if job.state in _FINISHED and j not in self.t.listing
        )
        return outside if limit < 0 else outside[:limit]

    def spent_by_model(self, *, day: str | None = None) -> dict[str, Spend]:
        spent: dict[str, Spend] = {}
        for _, model, _, charged_on, cost in self.t.charges:
            if day is None or charged_on == day:
                spent[model] = spent.get(model, Spend()) + cost
        return dict(sorted(spent.items()))

    def request_costs(self) -> dict[str, list[Spend]]:
        last = {job_id: (model, cost) for job_id, model, _, _, cost in self.t.charges}
        costs: dict[str, list[Spend]] = {}
        for model, cost in last.values():
            costs.setdefault(model, []).append(cost)
        return costs

    def get_meta(self, key: str) -> str | None:
        return self.t.meta.get(key)

    def close(self) -> None:
        pass


def _ensure(t: _Tables, job_id: str, model: str, now: str | None) -> _Job:
    return t.jobs.setdefault(job_id, _Job(model, started_at=now))


def _move(t: _Tables, job_id: str, target: JobState) -> _Job:
    job = t.jobs.get(job_id)
    if job is None or job.state.value not in sources(target):
        found = job.state.value if job else "no row"
        raise TransitionError(f"job {job_id!r}: cannot move from {found} to {target.value}")
    return job


def _charge(
    t: _Tables, job_id: str, cost: Spend | None, request: str | None = None, day: str | None = None
) -> None:
    job = t.jobs.get(job_id)
    if cost is None or job is None:
        return
    request = request or (job.ids[-1] if job.ids else None)
    # (as SQL's `=`: an answer with no request id is never taken for one already charged)
    if request is not None and any(c[0] == job_id and c[2] == request for c in t.charges):
        return
    t.charges.append((job_id, job.model, request, day or datetime.now(UTC).date().isoformat(), cost))


def _dispatched(t: _Tables, e: Dispatched) -> None:
    _ensure(t, e.job_id, e.model, e.now)
    job = _move(t, e.job_id, e.target)
    job.generation += job.state is JobState.SUCCEEDED
    job.state, job.final, job.attempts, job.answer = e.target, False, job.attempts + 1, None
    job.fingerprint = e.fingerprint or None
    job.ids.append(e.client_request_id)
    if e.source and e.fingerprint:
        t.asked[(e.source, e.job_id)] = e.fingerprint


def _unanswered(t: _Tables, e: Unanswered) -> None:
    _move(t, e.job_id, e.target).state = e.target
    _charge(t, e.job_id, e.cost)


def _answered(t: _Tables, e: Answered) -> None:
    job = _move(t, e.job_id, e.target)
    job.state, job.answer = e.target, e.answer
    job.tokens = (job.tokens or 0) + (e.answer.tokens_used or 0)
    _charge(t, e.job_id, e.answer.cost)


def _finished(t: _Tables, e: Finished) -> None:
    if e.answer is not None:
        _answered(t, Answered(e.record.job_id, e.answer))
    t.records.append(e.record_json)
    _ensure(t, e.record.job_id, e.record.model, e.record.started_at)
    job = _move(t, e.record.job_id, e.target)
    job.state, job.record_seq = e.target, len(t.records) - 1
    job.final = e.final and e.record.status is not Status.SUCCEEDED


def _imported(t: _Tables, e: Imported) -> None:
    record = e.record
    t.records.append(e.record_json)
    job = _ensure(t, record.job_id, record.model, record.started_at)
    job.state = JobState.SUCCEEDED if record.status is Status.SUCCEEDED else JobState.FAILED
    job.final, job.attempts, job.record_seq = e.final, record.attempts, len(t.records) - 1
    job.fingerprint, job.tokens = record.request_fingerprint, record.tokens_used
    request = record.client_request_ids[-1] if record.client_request_ids else None
    _charge(
        t,
        record.job_id,
        Spend.of(record.usd_spent, record.credits_used),
        request,
        (record.finished_at or "")[:10] or None,
    )


def _adopted(t: _Tables, e: FingerprintsAdopted) -> None:
    for job_id, fingerprint in e.pairs:
        if job_id in t.jobs and t.jobs[job_id].fingerprint is None:
            t.jobs[job_id].fingerprint = fingerprint


def _asked(t: _Tables, e: Asked) -> None:
    for job_id, fingerprint in e.pairs:
        t.asked[(e.source, job_id)] = fingerprint


def _listed(t: _Tables, e: Listed) -> None:
    if e.step == "begin":
        t.listing_next = set()
    elif e.step == "done":
        t.listing, t.listing_next = t.listing_next, set()
        t.meta[Meta.LISTED] = e.source
    else:
        t.listing_next.update(e.ids)


def _meta(t: _Tables, e: MetaSet) -> None:
    t.meta[e.key] = e.value


_EFFECTS: dict[type[Any], Any] = {
    Dispatched: _dispatched,
    Unanswered: _unanswered,
    Answered: _answered,
    Finished: _finished,
    Imported: _imported,
    FingerprintsAdopted: _adopted,
    Asked: _asked,
    Listed: _listed,
    MetaSet: _meta,
}


class _MemorySpill:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    def discard(self) -> None:
        self.data.clear()


class MemoryOutput:
    """An :class:`~batchgen.store.output.OutputBackend` in memory: ``objects`` by path (put
    once, never replaced but by a restore of the same name), ``manifest`` lines."""

    puts_at_once = 2  # (the writer's concurrent puts exercised)

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.manifest: list[str] = []
        self.locked = False
        self.syncs = 0

    def open(self) -> None:
        if self.locked:
            raise OutputLockedError("the memory output is held by another run")
        self.locked = True

    def close(self) -> None:
        self.locked = False

    def spill(self) -> _MemorySpill:
        return _MemorySpill()

    def put_image(self, stem: str, parts: list[bytes], spilled: Any, *, max_pixels: int) -> ImageRecord:
        data = (bytes(spilled.data) if spilled is not None else b"") + b"".join(parts)
        info = inspect_image(data, max_pixels=max_pixels)
        path = f"images/{stem}.{info.extension}"
        self.objects[path] = data
        return ImageRecord(
            path=path,
            sha256=hashlib.sha256(data).hexdigest(),
            bytes=len(data),
            content_type=info.content_type,
            width=info.width,
            height=info.height,
        )

    def make_durable(self) -> None:
        self.syncs += 1

    def image_size(self, path: str) -> int | None:
        data = self.objects.get(path)
        return None if data is None else len(data)

    def read_bytes(self, path: str) -> bytes | None:
        return self.objects.get(path)

    def sha256(self, path: str) -> str | None:
        data = self.objects.get(path)
        return None if data is None else hashlib.sha256(data).hexdigest()

    def put_file(self, path: str, data: bytes) -> None:
        self.objects[path] = data

    def manifest_lines(self) -> Iterator[bytes]:
        yield from (line.encode() for line in self.manifest)

    def manifest_repair(self, known: int) -> tuple[int, list[ManifestRecord]]:
        return len(self.manifest), [
            ManifestRecord.model_validate_json(line) for line in self.manifest[known:]
        ]

    def manifest_last_line(self) -> bytes:
        return self.manifest[-1].encode() if self.manifest else b""

    def manifest_append(self, lines: list[str]) -> None:
        self.manifest.extend(lines)

    def flush_manifest(self) -> None:
        pass

    def manifest_rewrite(self, lines: Iterable[str]) -> None:
        self.manifest = list(lines)

    def records(self) -> list[dict[str, Any]]:
        """The manifest, parsed."""
        return [json.loads(line) for line in self.manifest]


@dataclass
class MemoryBackends:
    """One output's memory state and objects, kept across runs (as a folder is)."""

    state: MemoryState = field(default_factory=MemoryState)
    output: MemoryOutput = field(default_factory=MemoryOutput)

    def backends(self) -> Backends:
        """What ``run_batch(..., backends=...)`` takes."""
        return Backends(lambda: self.state, self.output)


__all__ = ["MemoryBackends", "MemoryOutput", "MemoryState"]
