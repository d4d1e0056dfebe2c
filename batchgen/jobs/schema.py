"""The job file's JSON Schema, generated from the request models (``batchgen schema``): the four
seed models' pydantic models, then every other image model's schema (:mod:`batchgen.models.catalog`).

Editors use it through a first line ``# yaml-language-server: $schema=<path>``. In a YAML file a
job may leave out fields that ``defaults:`` supplies (common ones, and a model's own under its
name), so there each job is checked as a partial request (no field required, unknown fields still
refused); a JSONL line is a whole request.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import TypeAdapter

from batchgen.jobs.load import MAX_ID_LENGTH
from batchgen.models import catalog
from batchgen.models.seed import MODELS

__all__ = ["job_file_schema"]

_ID = {
    "anyOf": [{"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH}, {"type": "integer"}],
    "description": "Job id (optional): names the image files and identifies the job on resume.",
}


def job_file_schema(*, jsonl: bool = False) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a YAML job file, or of one JSONL line if ``jsonl``."""
    variants = {name: _variant(model) for name, model in MODELS.items()}
    for name, model_schema in catalog.models().items():
        variants.setdefault(name, _from_catalog(model_schema.schema))
    if jsonl:
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "batchgen job",
            "oneOf": list(variants.values()),
        }
    partial = [_partial(v) for v in variants.values()]
    every_field: dict[str, Any] = {}
    for variant in partial:
        for k, v in variant["properties"].items():
            if k != "id":
                every_field[k] = _either(every_field[k], v) if k in every_field else v
    every_field["model"] = {"enum": list(variants)}
    per_model = {  # a model's own defaults, under its name (for files that mix models)
        name: {
            "type": "object",
            "additionalProperties": False,
            "properties": {k: v for k, v in p["properties"].items() if k not in ("id", "model")},
            "description": f"defaults for {name} jobs only",
        }
        for name, p in zip(variants, partial, strict=True)
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "batchgen job file",
        "type": "object",
        "additionalProperties": False,
        "required": ["jobs"],
        "properties": {
            "defaults": {
                "type": ["object", "null"],
                "additionalProperties": False,
                "properties": {**every_field, **per_model},
            },
            "jobs": {"type": "array", "minItems": 1, "items": {"anyOf": partial}},
        },
    }


def _variant(model: Any) -> dict[str, Any]:
    schema: dict[str, Any] = TypeAdapter(model).json_schema()
    schema.pop("title", None)
    schema["additionalProperties"] = False
    schema["properties"] = {**schema["properties"], "id": _ID}
    for prop in schema["properties"].values():
        prop.pop("title", None)
    return schema


def _from_catalog(schema: dict[str, Any]) -> dict[str, Any]:
    variant = {k: v for k, v in schema.items() if k not in ("$schema", "title")}
    variant["properties"] = {**schema["properties"], "id": _ID}
    return variant


def _either(one: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """A common default's schema when models define the field differently: any of them."""
    if one == other:
        return one
    branches = one["anyOf"] if set(one) == {"anyOf"} else [one]
    return one if other in branches else {"anyOf": [*branches, other]}


def _partial(variant: dict[str, Any]) -> dict[str, Any]:
    partial = copy.deepcopy(variant)
    partial.pop("required", None)
    return partial
