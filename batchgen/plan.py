"""``batchgen plan``: what ``run`` would do with a job file and an output folder, and what it
would cost, sending and writing nothing.

Each job is judged by the same rules as a run (:func:`batchgen.run.selection.judge`). Costs are
projected from what requests of each model cost before, in this folder and in ``history``
folders (each job's last answer, from the API's cost headers): the median per request, with the
basis stated, or "unknown" for a model never seen with a cost.

Example::

    plan = make_plan(Path("jobs/nightly.yaml"), Path("/data/nightly"))
    print(plan.describe())
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchgen.errors import UsageError
from batchgen.jobs.load import Job, iter_jobs, scan_job_file
from batchgen.money import Spend
from batchgen.outcome import JobState, Outcome
from batchgen.run.selection import judge
from batchgen.settings import Selection
from batchgen.store import FolderReader, JobRow, has_state

__all__ = ["ModelPlan", "Plan", "make_plan"]

_CHUNK = 500  # jobs looked up in the folder at a time


@dataclass(slots=True)
class ModelPlan:
    """One model's requests and images to expect; ``per_request``: the projected cost of one
    request (None: unknown) and ``basis`` what it rests on."""

    requests: int = 0
    images: int = 0
    per_request: Spend | None = None
    basis: str = "unknown: no request of this model was recorded with a cost"

    @property
    def cost(self) -> Spend | None:
        """Projected cost of these requests, or None when unknown."""
        if self.per_request is None:
            return None
        return Spend(self.per_request.usd * self.requests, self.per_request.credits * self.requests)


@dataclass(slots=True)
class Plan:
    """Jobs by what a run would do with them, and requests, images and cost per model."""

    job_file: Path
    out_dir: Path | str  # the output as named
    to_send: list[str] = field(default_factory=list)  # new, or tried before without an answer
    changed: list[str] = field(default_factory=list)  # changed since their record: sent anew
    redo: list[str] = field(default_factory=list)  # named by --redo: generated again
    succeeded: list[str] = field(default_factory=list)
    download_only: list[str] = field(default_factory=list)  # the answer is paid and recorded
    failed_final: list[str] = field(default_factory=list)  # failed for good: skipped
    frozen: list[str] = field(default_factory=list)  # changed, skipped (--frozen)
    models: dict[str, ModelPlan] = field(default_factory=dict)

    @property
    def total_cost(self) -> Spend | None:
        """The projected cost of every request, or None when some model's cost is unknown."""
        costs = [m.cost for m in self.models.values() if m.requests]
        return None if any(c is None for c in costs) else sum((c for c in costs if c), Spend())

    def as_json(self) -> dict[str, Any]:
        """The plan for scripts: counts, ids, and per-model requests, images and cost."""
        cost = self.total_cost
        return {
            "job_file": str(self.job_file),
            "out": str(self.out_dir),
            "counts": {name: len(getattr(self, name)) for name in _GROUPS},
            "jobs": {name: getattr(self, name) for name in _GROUPS},
            "models": {
                model: {
                    "requests": m.requests,
                    "images": m.images,
                    "usd": float(m.cost.usd) if m.cost is not None else None,
                    "credits": float(m.cost.credits) if m.cost is not None else None,
                    "basis": m.basis,
                }
                for model, m in self.models.items()
            },
            "total": {
                "requests": sum(m.requests for m in self.models.values()),
                "images": sum(m.images for m in self.models.values()),
                "usd": float(cost.usd) if cost is not None else None,
                "credits": float(cost.credits) if cost is not None else None,
            },
        }

    def describe(self) -> str:
        """The plan as lines for a person."""
        lines = [f"plan for {self.job_file} into {self.out_dir} (nothing sent, nothing written):"]
        lines += [f"  {_GROUPS[name]}: {len(getattr(self, name))}" for name in _GROUPS if getattr(self, name)]
        if not any(getattr(self, name) for name in _GROUPS):
            lines.append("  no jobs")
        lines.append("requests, images and projected cost:")
        for model, m in self.models.items():
            cost = f"~{m.cost.describe()}" if m.cost is not None else "cost unknown"
            lines.append(f"  {model}: {m.requests} requests, {m.images} images, {cost} ({m.basis})")
        total = self.total_cost
        requests = sum(m.requests for m in self.models.values())
        images = sum(m.images for m in self.models.values())
        money = f"~{total.describe()}" if total is not None else "cost unknown (see above)"
        lines.append(f"  total: {requests} requests, {images} images, {money}")
        return "\n".join(lines)


_GROUPS = {
    "to_send": "to send (new, or tried without an answer)",
    "changed": "changed since their record, to send anew",
    "redo": "to generate again (--redo)",
    "download_only": "to download only (answer paid and recorded)",
    "succeeded": "already succeeded",
    "failed_final": "failed for good, skipped (--retry-failed sends them)",
    "frozen": "changed since their record, skipped (--frozen)",
}


def make_plan(
    job_file: Path,
    out_dir: Path,
    *,
    history: list[Path] | None = None,
    selection: Selection | None = None,
) -> Plan:
    """Judge every job of ``job_file`` against ``out_dir`` as ``run`` would, and project costs.

    ``history``: other output folders whose recorded costs also count; the other options are
    ``run``'s (``selection``: which jobs to send). Reads only. Raises
    :class:`~batchgen.errors.JobFileError` for an invalid file, :class:`~batchgen.errors.UsageError`
    for a history folder with no state, :class:`~batchgen.errors.StorageError` for unreadable state.
    """
    selection = selection or Selection()
    scan_job_file(job_file)
    plan = Plan(job_file, out_dir)
    with FolderReader(out_dir, source=str(job_file.resolve())) as folder:
        costs = folder.request_costs()
        jobs = (job for job in iter_jobs(job_file) if selection.includes(job.id))
        while chunk := [job for _, job in zip(range(_CHUNK), jobs, strict=False)]:
            rows = folder.rows(job.id for job in chunk)
            for job in chunk:
                _place(plan, job, rows.get(job.id), selection)
    for other in history or []:
        if not has_state(other):
            raise UsageError(f"--history {other} holds no batchgen run")
        with FolderReader(other) as reader:
            for model, found in reader.request_costs().items():
                costs.setdefault(model, []).extend(found)
    for model, m in plan.models.items():
        seen = costs.get(model)
        if seen:
            m.per_request = Spend(
                statistics.median(c.usd for c in seen), statistics.median(c.credits for c in seen)
            )
            m.basis = f"median of {len(seen)} recorded {model} requests"
    return plan


def _place(plan: Plan, job: Job, row: JobRow | None, selection: Selection) -> None:
    verdict = judge(row, job, selection)
    if verdict.skip is Outcome.ALREADY_DONE:
        plan.succeeded.append(job.id)
    elif verdict.skip is Outcome.FAILED_FINAL:
        plan.failed_final.append(job.id)
    elif verdict.skip is Outcome.CHANGED_FROZEN:
        plan.frozen.append(job.id)
    elif (
        not verdict.fresh
        and row is not None
        and row.answer is not None
        and row.state is not JobState.DISPATCHED
    ):
        plan.download_only.append(job.id)
    else:
        group = plan.changed if verdict.changed else plan.redo if job.id in selection.redo else plan.to_send
        group.append(job.id)
        model = plan.models.setdefault(job.model, ModelPlan())
        model.requests += 1
        model.images += int(job.body.get("num_images", 1))
