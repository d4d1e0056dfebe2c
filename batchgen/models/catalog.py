"""Every image model of the API, as data: the request schemas converted once from the API's own
OpenAPI documents (``scripts/convert_model_schemas.py`` -> ``schemas/<page>.json``), plus
``overrides.json`` for rules the docs state only in prose. The four seed models keep their
pydantic models (:mod:`batchgen.models.seed`); every other model is checked here.

Validation is compiled (``jsonschema-rs``: a Rust validator, compiled once per model on first
use) and reports every problem of a body at once, each with its field, the offending value and
the allowed ones, and a "did you mean" for a misspelt field or enum value.

Example::

    problems = check({"model": "flux-pro/v1.1", "prompt": "a cat", "num_imagez": 2})
    # [FieldProblem(field='num_imagez', message="unknown field for flux-pro/v1.1 ...")]
"""

from __future__ import annotations

import difflib
import functools
import json
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any

import jsonschema_rs

__all__ = ["IMAGE_FIELDS", "FieldProblem", "ModelSchema", "check", "models"]

IMAGE_FIELDS = ("image_url", "image_urls", "image")
"""Fields that take images (URLs, base64, or, in a job file, local paths)."""


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One problem of a request body: ``field`` as a path (``image_size.width``,
    ``image_urls[2]``; "" for the body itself) and what is wrong, for people."""

    field: str
    message: str


@dataclass(slots=True)
class ModelSchema:
    """One model id's request schema (JSON Schema 2020-12), from the docs page ``page``."""

    model: str
    page: str
    schema: dict[str, Any]
    notes: tuple[str, ...] = ()  # rules from the page that the schema does not state
    _validator: Any = field(default=None, repr=False)

    @property
    def fields(self) -> list[str]:
        """The body's fields, ``model`` first."""
        return list(self.schema.get("properties", {}))

    @property
    def required(self) -> list[str]:
        """The fields a body must have."""
        return list(self.schema.get("required", []))

    def validator(self) -> Any:
        """The compiled validator (compiled on first use)."""
        if self._validator is None:
            self._validator = jsonschema_rs.validator_for(self.schema)
        return self._validator


@functools.cache
def models() -> dict[str, ModelSchema]:
    """Every model id the converted schemas name, with its schema (the overrides applied)."""
    folder = files("batchgen.models")
    overrides = json.loads((folder / "overrides.json").read_text())
    found: dict[str, ModelSchema] = {}
    for entry in sorted((folder / "schemas").iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".json"):
            continue
        schema = json.loads(entry.read_text())
        for model in schema.get("properties", {}).get("model", {}).get("enum", []):
            if model is None:
                continue
            extra = dict(overrides.get(model, {}))
            note = extra.pop("$comment", None)
            # (one body schema per id: the id itself as `model`, and its overrides)
            own = {**schema, "properties": {**schema["properties"], "model": {"const": model}}}
            if extra:
                own["allOf"] = [*own.get("allOf", []), extra]
            page = entry.name.removesuffix(".json")
            found[model] = ModelSchema(model, page, own, (note,) if note else ())
    return found


def check(body: dict[str, Any]) -> list[FieldProblem]:
    """Every problem of ``body`` against its model's schema (``body["model"]`` must be one of
    :func:`models`; raises ``KeyError`` otherwise). An empty list: the body is valid."""
    schema = models()[body["model"]]
    validator = schema.validator()
    if validator.is_valid(body):
        return []
    return [_explain(error, body, schema) for error in validator.iter_errors(body)]


def _explain(error: Any, body: dict[str, Any], schema: ModelSchema) -> FieldProblem:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.instance_path).lstrip(".")
    kind = type(error.kind).__name__
    if kind == "AdditionalProperties":
        unknown = [name for name in body if name not in schema.schema["properties"]]
        name = unknown[0] if unknown else path
        close = difflib.get_close_matches(name, schema.fields, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; expected one of: {', '.join(schema.fields)}"
        return FieldProblem(name, f"unknown field for {schema.model}{hint}")
    if kind == "Enum":
        options = [o for o in error.kind.options if o is not None]
        value = error.instance
        close = difflib.get_close_matches(str(value), [str(o) for o in options], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return FieldProblem(path, f"{value!r} is not one of {', '.join(map(repr, options))}{hint}")
    if kind == "Not" and schema.notes:
        return FieldProblem(path, f"breaks a rule of {schema.model} ({'; '.join(schema.notes)})")
    return FieldProblem(path, error.message)
