"""Request-body checks as the API documents them, written from the model pages alone.

Deliberately independent of :mod:`batchgen.models.seed`: the simulator must catch a mistake in
batchgen's models (a wrong limit, an extra field) rather than repeat it. Every other image model
is checked against its request schema as the docs publish it (the converted files that
``batchgen/models/schemas`` ships, read as data: the simulator imports no batchgen code).
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import Callable
from importlib.resources import files
from typing import Any

import jsonschema_rs

__all__ = ["schemas", "validate_body"]

ASPECT_RATIOS = {"16:9", "9:16", "3:2", "2:3", "4:3", "3:4", "1:1"}
Check = Callable[[Any], str | None]


def _text(limit: int) -> Check:
    def check(value: Any) -> str | None:
        if not isinstance(value, str):
            return f"Expected string, received {type(value).__name__}"
        return None if len(value) <= limit else f"Expected string of at most {limit} characters"

    return check


def _enum(options: set[str]) -> Check:
    return lambda v: None if v in options else f"Expected one of {sorted(options)}, received {v!r}"


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"Expected boolean, received {type(value).__name__}"


def _number(low: float | None, high: float | None, *, integer: bool = False) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"Expected number, received {type(value).__name__}"
        if integer and not float(value).is_integer():
            return "Expected integer"
        if (low is not None and value < low) or (high is not None and value > high):
            return f"Expected number between {low} and {high}, received {value}"
        return None

    return check


def _uri(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"Expected uri string, received {type(value).__name__}"
    if value.startswith(("http://", "https://")):
        return None
    if value.startswith("data:") and ";base64," in value:
        try:
            base64.b64decode(value.split(",", 1)[1], validate=True)
        except binascii.Error:
            return "Expected valid base64 data URI"
        return None
    return f"Expected uri, received {value[:40]!r}"


def _uri_list(value: Any) -> str | None:
    if not isinstance(value, list) or not 1 <= len(value) <= 4:  # noqa: PLR2004
        return "Expected array of 1 to 4 uris"
    return next((problem for item in value if (problem := _uri(item))), None)


_REVE_COMMON = {"prompt": _text(2560), "convert_base64_to_url": _boolean}
SPECS: dict[str, tuple[set[str], dict[str, Check]]] = {
    "reve/create-image": (
        {"prompt"},
        {**_REVE_COMMON, "aspect_ratio": _enum(ASPECT_RATIOS), "output_format": _enum({"json"})},
    ),
    "reve/edit-image": (
        {"prompt", "image_url"},
        {**_REVE_COMMON, "image_url": _uri, "output_format": _enum({"json"})},
    ),
    "reve/remix-edit-image": (
        {"prompt", "image_urls"},
        {**_REVE_COMMON, "image_urls": _uri_list, "aspect_ratio": _enum(ASPECT_RATIOS)},
    ),
    "flux/dev/image-to-image": (
        {"prompt", "image_url"},
        {
            "prompt": _text(4000),
            "image_url": _uri,
            "guidance_scale": _number(1, 20),
            "num_inference_steps": _number(1, 50, integer=True),
            "enable_safety_checker": _boolean,
            "num_images": _number(1, 4, integer=True),
            "seed": _number(1, None, integer=True),
            "strength": _number(None, None),
        },
    ),
}


def validate_body(body: Any) -> str | None:
    """Return None for a body the docs accept, else a "Body validation error!" message."""
    if not isinstance(body, dict):
        return "Body validation error! Expected object"
    model = body.get("model")
    if model not in SPECS:
        return _against_schema(body, model)
    required, checks = SPECS[model]
    for name in sorted(required - body.keys()):
        return f"Body validation error! {name}: Required"
    for name, value in body.items():
        if name == "model":
            continue
        if name not in checks:
            return f"Body validation error! Unrecognized key: {name!r}"
        problem = checks[name](value)
        if problem:
            return f"Body validation error! {name}: {problem}"
    return None


def _against_schema(body: dict[str, Any], model: Any) -> str | None:
    schema = schemas().get(model) if isinstance(model, str) else None
    if schema is None:
        known = sorted({*SPECS, *schemas()})
        return f"Body validation error! model: Expected one of {known}, received {model!r}"
    error = next(schema.iter_errors(body), None)
    if error is None:
        return None
    where = ".".join(str(p) for p in error.instance_path) or "body"
    return f"Body validation error! {where}: {error.message}"


@functools.cache
def schemas() -> dict[str, Any]:
    """Every other image model's compiled request schema, by model id (the docs' schemas as
    batchgen ships them, converted from OpenAPI 3.0)."""
    found: dict[str, Any] = {}
    for entry in (files("batchgen.models") / "schemas").iterdir():
        if entry.name.endswith(".json"):
            schema = json.loads(entry.read_text())
            validator = jsonschema_rs.validator_for(schema)
            for model in schema.get("properties", {}).get("model", {}).get("enum", []):
                if model is not None and model not in SPECS:
                    found[model] = validator
    return found
