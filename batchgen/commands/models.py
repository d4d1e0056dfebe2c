"""``batchgen models [ID]``: the API's image models a job file may name, from their schemas."""

from __future__ import annotations

import argparse
import json
from typing import Any

from batchgen.commands import ExitCode
from batchgen.errors import UsageError
from batchgen.jobs.reader import unknown_name
from batchgen.models.catalog import IMAGE_FIELDS, ModelSchema, models


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``[ID] [--json]``."""
    parser.add_argument(
        "model", nargs="?", metavar="ID", help="one model: each field, its type, limits and default"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")


def handle(args: argparse.Namespace) -> int:
    """Print every model (id, required fields, image inputs), or one model's fields."""
    catalog = models()
    if args.model is None:
        rows = [_summary(schema) for schema in catalog.values()]
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for row in rows:
                images = ", ".join(row["image_inputs"]) or "-"
                print(f"{row['model']:45s} requires {', '.join(row['required']) or '-':28s} images: {images}")
        return ExitCode.OK
    if args.model not in catalog:
        raise UsageError(unknown_name("model", args.model, list(catalog)))
    schema = catalog[args.model]
    fields = [
        _field(name, spec, name in schema.required) for name, spec in schema.schema["properties"].items()
    ]
    if args.json:
        print(
            json.dumps(
                {"model": schema.model, "page": schema.page, "fields": fields, "rules": list(schema.notes)},
                indent=2,
            )
        )
        return ExitCode.OK
    print(f"{schema.model} (docs page: {schema.page}.md)")
    for f in fields:
        limits = f"; {f['limits']}" if f["limits"] else ""
        default = f"; default {json.dumps(f['default'])}" if "default" in f else ""
        print(f"  {f['name']}{' (required)' if f['required'] else ''}: {f['type']}{limits}{default}")
        if f["description"]:
            print(f"      {f['description']}")
    for note in schema.notes:
        print(f"  rule: {note}")
    return ExitCode.OK


def _summary(schema: ModelSchema) -> dict[str, Any]:
    return {
        "model": schema.model,
        "required": [f for f in schema.required if f != "model"],
        "image_inputs": [f for f in IMAGE_FIELDS if f in schema.schema["properties"]],
        "page": schema.page,
    }


def _field(name: str, spec: dict[str, Any], required: bool) -> dict[str, Any]:
    """One field for people: its type, limits, default and the first sentence of its description."""
    options = spec.get("anyOf", [spec])
    types = []
    limits = []
    for option in options:
        kind = option.get("type", "const" if "const" in option else "any")
        types.append("/".join(kind) if isinstance(kind, list) else kind)
        if "enum" in option:
            limits.append("one of " + ", ".join(json.dumps(v) for v in option["enum"] if v is not None))
        for key, word in (
            ("minimum", ">="),
            ("maximum", "<="),
            ("exclusiveMinimum", ">"),
            ("exclusiveMaximum", "<"),
        ):
            if key in option:
                limits.append(f"{word} {option[key]}")
        for key, word in (
            ("maxLength", "characters at most"),
            ("minItems", "items at least"),
            ("maxItems", "items at most"),
        ):
            if key in option:
                limits.append(f"{option[key]} {word}")
    described = str(
        spec.get("description") or next((o.get("description") for o in options if o.get("description")), "")
    )
    out: dict[str, Any] = {
        "name": name,
        "required": required,
        "type": " or ".join(types),
        "limits": "; ".join(limits),
        "description": described.split(". ", maxsplit=1)[0].strip(),
    }
    if "default" in spec:
        out["default"] = spec["default"]
    return out
