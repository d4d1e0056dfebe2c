"""Every image model of the API, as data: the request schemas converted once from the API's own
OpenAPI documents (``scripts/convert_model_schemas.py`` -> ``schemas/<page>.json``), plus
``overrides.json`` for what the docs state only in prose or on the seed pages (a field added or
replaced under ``properties``, a rule under ``allOf``, its reason in ``$comment``). The four seed
models keep their pydantic models (:mod:`batchgen.models.seed`) for validation, and
``tests/models/test_golden.py`` shows this data accepts and rejects the same bodies as they do;
every other model is checked here.

Beyond the schemas, two rules of the seed models hold for every model: a field that takes images
holds http(s) URLs or ``data:...;base64,`` URIs (:func:`image_uri_problem`), and an integer
field takes no decimal point (``2.0`` is refused, as pydantic's strict mode does).

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

__all__ = [
    "COUNT_FIELDS",
    "IMAGE_FIELDS",
    "FieldProblem",
    "ModelSchema",
    "check",
    "image_uri_problem",
    "models",
]

IMAGE_FIELDS = ("image_url", "image_urls", "image", "reference_image_url", "alpha_url")
"""Fields that take images (URLs, base64, or, in a job file, local paths): the docs' three, and
the reference image and the mask of ``beeble/switchx`` (its page: "URL of the alpha mask")."""

COUNT_FIELDS = ("num_images", "n")
"""How many images to make: whole numbers wherever a schema types them ``number``."""


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One problem of a request body: ``field`` as a path (``image_size.width``,
    ``image_urls[2]``; "" for the body itself) and what is wrong, for people."""

    field: str
    message: str


@dataclass
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

    @functools.cached_property
    def integer_set(self) -> frozenset[str]:
        """:attr:`integer_fields` as a set."""
        return frozenset(self.integer_fields)

    @functools.cached_property
    def integer_fields(self) -> tuple[str, ...]:
        """Top-level fields whose only numeric type is ``integer``."""
        return tuple(
            n
            for n, p in self.schema.get("properties", {}).items()
            if _types(p) & {"integer", "number"} == {"integer"}
        )

    def validator(self) -> Any:
        """The compiled validator (compiled on first use)."""
        if self._validator is None:
            self._validator = jsonschema_rs.validator_for(_compiled(self.schema))
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
            extra = overrides.get(model, {})
            note = extra.get("$comment")
            # (one body schema per id: the id itself as `model`, and its overrides)
            properties = {**schema["properties"], **extra.get("properties", {}), "model": {"const": model}}
            own = {**schema, "properties": properties}
            if "allOf" in extra:
                own["allOf"] = [*own.get("allOf", []), *extra["allOf"]]
            page = entry.name.removesuffix(".json")
            found[model] = ModelSchema(model, page, own, (note,) if note else ())
    return found


def check(body: dict[str, Any]) -> list[FieldProblem]:
    """Every problem of ``body`` against its model's schema (``body["model"]`` must be one of
    :func:`models`; raises ``KeyError`` otherwise). An empty list: the body is valid."""
    schema = models()[body["model"]]
    validator = schema.validator()
    problems = (
        [] if validator.is_valid(body) else [_explain(e, body, schema) for e in validator.iter_errors(body)]
    )
    if schema.integer_set.isdisjoint(body):  # (most bodies: a million-line file is common)
        return problems
    for name in schema.integer_fields:
        if isinstance(body.get(name), float):
            problems.append(
                FieldProblem(name, f"{body[name]!r} must be a whole number, written without a decimal point")
            )
    return problems


IMAGE_URI = r"^(?:[Hh][Tt][Tt][Pp][Ss]?://[^/?#]|data:[\s\S]{0,187};base64,)"
"""What :func:`image_uri_problem` accepts, as the pattern the compiled validators check (a
``;base64,`` within the first 200 characters of a data URI)."""
_IMAGE_URI_PROBLEM = "must be an http(s) URL, a data: URI, or a path to a local image file"


def _compiled(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` as the compiled validator checks it: :data:`IMAGE_URI` on every string of an
    image field (not in the schema users see: a job file may name local files there), and
    ``multipleOf: 1`` on the :data:`COUNT_FIELDS` (``2.0`` passes, as the API's own ``number``
    does; ``2.5`` images cannot be made)."""

    def patterned(prop: Any) -> Any:
        if not isinstance(prop, dict):
            return prop
        prop = {**prop}
        if prop.get("type") == "string":
            prop["pattern"] = IMAGE_URI
        for key in ("anyOf", "oneOf"):
            if key in prop:
                prop[key] = [patterned(branch) for branch in prop[key]]
        if "items" in prop:
            prop["items"] = patterned(prop["items"])
        return prop

    def whole(prop: Any) -> Any:
        return {**prop, "multipleOf": 1} if isinstance(prop, dict) and prop.get("type") == "number" else prop

    properties = {
        k: patterned(v) if k in IMAGE_FIELDS else whole(v) if k in COUNT_FIELDS else v
        for k, v in schema.get("properties", {}).items()
    }
    return {**schema, "properties": properties}


def image_uri_problem(value: str) -> str | None:
    """Why ``value`` is not an image the API's image fields take (http(s) URL or base64 ``data:``
    URI), or None. Local paths never reach this check: the job file turns them into data URIs."""
    if value.startswith("data:"):  # before urlsplit, whose cache would keep megabytes alive
        if ";base64," in value[:200]:
            return None
    else:
        scheme, sep, rest = value.partition("://")
        # (urlsplit's scheme and netloc, in a fraction of its time: a million-line file is common)
        if (
            sep
            and scheme.lower() in ("http", "https")
            and rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
        ):
            return None
    return _IMAGE_URI_PROBLEM


def _types(prop: dict[str, Any]) -> set[str]:
    kind = prop.get("type")
    found = {kind} if isinstance(kind, str) else set(kind or ())
    for branch in prop.get("anyOf", ()):
        found |= _types(branch)
    return found


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
    if kind == "Pattern" and path.split("[")[0] in IMAGE_FIELDS:
        return FieldProblem(path, _IMAGE_URI_PROBLEM)
    if kind == "Not" and schema.notes:
        return FieldProblem(path, f"breaks a rule of {schema.model} ({'; '.join(schema.notes)})")
    return FieldProblem(path, error.message)
