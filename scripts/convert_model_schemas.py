"""Convert the API's model schemas (OpenAPI 3.0, ``../shared/api-docs/models/*.openapi.json``) into
the JSON Schemas batchgen loads (``batchgen/models/schemas/<page>.json``). Re-run it when the docs
change; the converted files are committed.

    python scripts/convert_model_schemas.py [DOCS_DIR [OUT_DIR]]   # (OUT_DIR: the shapes go beside it)

Once per file: the request body of ``POST /v1/images/generations`` (the multipart
``/v1/images/edits`` of the gpt-image models is out of scope); OpenAPI 3.0's ``nullable`` becomes
a ``null`` type; a boolean ``exclusiveMinimum``/``exclusiveMaximum`` (OpenAPI 3.0 / draft 4)
becomes the number; ``format: uri`` is dropped (the docs say image fields take URLs or base64);
unknown fields are refused (``additionalProperties: false`` on the body, as the API's 400 "Body
validation error" does). Rules the schemas do not state are in ``batchgen/models/overrides.json``.

It also writes the answer shape each model's page shows (INDEX.md's letters A-G; A where the page
shows none) to ``batchgen/simulator/answer_shapes.json``, for the simulator to answer in it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO.parent / "shared" / "api-docs" / "models"
OUT = REPO / "batchgen" / "models" / "schemas"
SHAPES = REPO / "batchgen" / "simulator" / "answer_shapes.json"
PATH = "/v1/images/generations"
DROPPED = {"example", "examples", "format", "xml", "externalDocs", "deprecated", "readOnly", "writeOnly"}


def convert(node: Any) -> Any:
    """One OpenAPI 3.0 schema node as JSON Schema (2020-12)."""
    if isinstance(node, list):
        return [convert(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: convert(value) for key, value in node.items() if key not in DROPPED and key != "nullable"}
    if "properties" in node:  # (a property may be named like a keyword: "format")
        out["properties"] = {name: convert(value) for name, value in node["properties"].items()}
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if isinstance(node.get(exclusive), bool):
            if node[exclusive] and bound in node:
                out[exclusive] = node[bound]
                out.pop(bound, None)
            else:
                out.pop(exclusive, None)
    if node.get("nullable"):
        if "type" in out:
            types = out["type"] if isinstance(out["type"], list) else [out["type"]]
            out["type"] = [*types, "null"]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def body_schema(document: dict[str, Any]) -> dict[str, Any] | None:
    """The converted request body of ``POST /v1/images/generations``, or None."""
    operation = document.get("paths", {}).get(PATH, {}).get("post")
    if operation is None:
        return None
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    converted = convert(schema)
    converted["additionalProperties"] = False
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **converted}


def answer_shapes(index: str) -> dict[str, str]:
    """Model id -> the answer shape its page shows (INDEX.md's table; "A" when it shows none)."""
    shapes: dict[str, str] = {}
    for line in index.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 5 or cells[1] != PATH:  # noqa: PLR2004 - the table's columns
            continue
        letter = cells[4][:1] if cells[4][:1] in "ABCDEFG" and cells[4][:1] else "A"
        for model in cells[0].split(","):
            shapes[model.strip()] = letter
    return dict(sorted(shapes.items()))


def main() -> None:
    docs = Path(sys.argv[1]) if len(sys.argv) > 1 else DOCS
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else OUT  # noqa: PLR2004
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for path in sorted(docs.glob("*.openapi.json")):
        if path.name.endswith(".edits.openapi.json"):
            continue
        schema = body_schema(json.loads(path.read_text()))
        if schema is None:
            continue
        target = out / path.name.replace(".openapi.json", ".json")
        target.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
        written += 1
    shapes = out.parent / SHAPES.name if len(sys.argv) > 2 else SHAPES  # noqa: PLR2004 - (beside OUT_DIR)
    shapes.parent.mkdir(parents=True, exist_ok=True)
    shapes.write_text(json.dumps(answer_shapes((docs / "INDEX.md").read_text()), indent=1) + "\n")
    print(f"{written} schemas written to {out}; answer shapes to {shapes}")


if __name__ == "__main__":
    main()
