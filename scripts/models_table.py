"""Write the README's table of every image model (between its ``models-table`` markers) from the
model data batchgen ships, so the table and the validation cannot disagree.

    python scripts/models_table.py          # rewrites README.md in place
"""

from __future__ import annotations

from pathlib import Path

from batchgen.models.catalog import IMAGE_FIELDS, models

README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN, END = "<!-- models-table: begin (scripts/models_table.py) -->", "<!-- models-table: end -->"


def table() -> str:
    """The Markdown table: one row per model id."""
    rows = ["| model | required besides `model` | image inputs | docs page |", "|---|---|---|---|"]
    for schema in models().values():
        required = ", ".join(f"`{f}`" for f in schema.required if f != "model") or "-"
        images = ", ".join(f"`{f}`" for f in IMAGE_FIELDS if f in schema.schema["properties"]) or "-"
        rows.append(f"| `{schema.model}` | {required} | {images} | {schema.page}.md |")
    return "\n".join(rows)


def main() -> None:
    text = README.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    README.write_text(text[:start] + "\n" + table() + "\n" + text[end:])


if __name__ == "__main__":
    main()
