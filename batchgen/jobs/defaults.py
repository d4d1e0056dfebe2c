"""A job file's ``defaults:``: common fields, and each model's own under its name; what a job
of a given model gets from them (README, "Defaults for files that mix models")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from batchgen.errors import JobFileProblem
from batchgen.jobs.reader import Entry, unknown_name
from batchgen.models.known import all_models, fields_of, is_known

__all__ = ["Defaults"]


@dataclass(slots=True)
class Defaults:
    """``defaults:`` split into the common fields and, under a model's name, that model's own.

    A job's fields are its model's defaults over the common ones, under the job's own. A common
    default its model has no field for is one problem per (default, model), not one per job.
    """

    entry: Entry
    common: dict[str, Any]
    per_model: dict[str, dict[str, Any]]
    problems: list[JobFileProblem]
    merged: dict[str, dict[str, Any]] = field(default_factory=dict)  # by model, once its first job came

    @classmethod
    def split(cls, name: str, defaults: Entry) -> Defaults:
        common: dict[str, Any] = {}
        per_model: dict[str, dict[str, Any]] = {}
        problems = []
        for key, value in defaults.raw.items():
            line = defaults.key_lines.get(str(key), defaults.line)
            if is_known(key):
                if isinstance(value, dict):
                    per_model[key] = {str(k): v for k, v in value.items()}
                else:
                    problems.append(
                        JobFileProblem(name, line, None, f"defaults.{key}", "must be a mapping of fields")
                    )
            elif isinstance(key, str) and "/" in key:
                message = (
                    unknown_name("model", key, all_models()) + " (a model's own defaults go under its name)"
                )
                problems.append(JobFileProblem(name, line, None, f"defaults.{key}", message))
            elif key == "id":
                problems.append(JobFileProblem(name, line, None, "defaults.id", "`defaults` cannot set `id`"))
            else:
                common[str(key)] = value
        for model, fields in per_model.items():
            if "id" in fields or "model" in fields:
                line = defaults.key_lines.get(model, defaults.line)
                message = "a model's defaults cannot set `id` or `model`"
                problems.append(JobFileProblem(name, line, None, f"defaults.{model}", message))
        return cls(defaults, common, per_model, problems)

    def for_model(self, name: str, model: Any, job_id: Any) -> tuple[dict[str, Any], list[JobFileProblem]]:
        """The defaults a job of ``model`` gets, and any common default that model refuses
        (reported for its first job only). The mapping returned is shared: copy before changing it."""
        if not isinstance(model, str) or not is_known(model):  # reported as the job's own problem
            return self.common, []
        if model in self.merged:  # (every job but a model's first: a million-line file is common)
            return self.merged[model], []
        accepted = fields_of(model)
        problems = []
        for key in self.common:
            if key not in accepted:
                job = "" if job_id is None else str(job_id)
                message = (
                    f"{model} has no field {key!r}, and job {job!r} is one of its jobs; give the "
                    f"default under the names of the models that take it (`defaults:` -> `{_taker(key)}:`)"
                )
                problems.append(
                    JobFileProblem(name, self.entry.key_lines.get(key), None, f"defaults.{key}", message)
                )
        common = {k: v for k, v in self.common.items() if k in accepted}
        self.merged[model] = {**common, **self.per_model.get(model, {})}
        return self.merged[model], problems


def _taker(key: str) -> str:
    """The first model with a field named ``key`` (for a hint), or ``<model>``."""
    return next((m for m in all_models() if key in fields_of(m)), "<model>")
