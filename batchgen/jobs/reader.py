"""Reading job files: YAML and JSONL text -> raw job entries, each with the lines it came from.

No validation of fields happens here (that is :mod:`batchgen.jobs.load`); this module only turns
text into mappings and reports text that cannot be read as a job file: bad syntax, non-UTF-8,
repeated keys, NaN, alias bombs, nesting too deep.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from batchgen.errors import JobFileProblem

__all__ = [
    "MAX_LINE_BYTES",
    "MAX_YAML_BYTES",
    "MAX_YAML_NODES",
    "Entry",
    "YamlLoader",
    "is_jsonl",
    "jsonl_entries",
    "show_value",
    "unknown_name",
    "yaml_entries",
]

MAX_YAML_NODES = 1_000_000  # values in a YAML file once aliases are expanded: refuses alias bombs
MAX_YAML_BYTES = 256 * 1024 * 1024  # a YAML (or JSON document) job file is parsed whole
MAX_LINE_BYTES = 512 * 1024 * 1024  # a JSONL line: room for four 50 MiB images as data URIs
_YAML_KEYS = ("defaults", "jobs")


_YAML11_SCALARS = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}
_YAML12_SCALARS = [  # YAML 1.2 core schema: (tag, pattern, the characters a match can start with)
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?(?:0|[1-9][0-9]*)|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    (
        "tag:yaml.org,2002:float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+0123456789.",
    ),
]


class YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 core-schema scalars, as people write job files.

    PyYAML follows YAML 1.1, where ``aspect_ratio: 16:9`` is the base-60 number 969 and ``yes``,
    ``no``, ``on`` and ``off`` are booleans. Here, as in YAML 1.2's core schema, only
    ``true``/``false`` are booleans and only plain decimal, ``0o`` and ``0x`` forms are numbers:
    ``16:9`` and ``yes`` stay the strings they look like.
    """

    yaml_implicit_resolvers = {  # noqa: RUF012 - PyYAML's own class-level registry
        first: [(tag, pattern) for tag, pattern in resolvers if tag not in _YAML11_SCALARS]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


for _tag, _pattern, _first in _YAML12_SCALARS:
    YamlLoader.add_implicit_resolver(_tag, re.compile(_pattern), list(_first))
_SHOWN_CHARS = 80  # an offending value is shown up to this long


@dataclass(slots=True)
class Entry:
    """One raw job as read: its mapping, its line, the line of each of its keys, and the keys
    it repeats (YAML silently keeps the last of a repeated key; we report it)."""

    raw: Any
    line: int | None
    key_lines: dict[str, int] = field(default_factory=dict)
    repeated: list[tuple[str, int, str]] = field(default_factory=list)  # key, its line, message


def jsonl_entries(path: Path) -> Iterator[Entry | JobFileProblem]:
    """Yield each non-blank line of a JSONL file as an entry (or a problem), reading lazily; a
    line over :data:`MAX_LINE_BYTES` is a problem, read past without being held."""
    name = str(path)
    with path.open("rb") as lines:
        for number, raw_line in enumerate(_bounded_lines(lines), start=1):
            if raw_line is None:
                yield JobFileProblem(name, number, None, None, f"the line is over {MAX_LINE_BYTES} bytes")
                continue
            line = raw_line.removeprefix(b"\xef\xbb\xbf") if number == 1 else raw_line  # editors' BOM
            try:
                text = line.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                yield JobFileProblem(name, number, None, None, f"not UTF-8 text ({exc.reason})")
                continue
            if not text:
                continue
            try:
                raw, end = _DECODER.raw_decode(text)  # (``text`` is stripped: no whitespace around)
                if end != len(text):
                    raise json.JSONDecodeError("Extra data", text, end)
            except (ValueError, RecursionError) as exc:
                yield JobFileProblem(name, number, None, None, f"invalid JSON: {exc}")
                continue
            yield Entry(raw, number)  # every key is on the entry's own line


def _bounded_lines(lines: BinaryIO) -> Iterator[bytes | None]:
    """The lines of ``lines``, each at most :data:`MAX_LINE_BYTES` long; None for a longer one
    (skipped in bounded reads, so a line that never ends costs no memory)."""
    while line := lines.readline(MAX_LINE_BYTES + 1):
        if len(line) <= MAX_LINE_BYTES or line.endswith(b"\n"):
            yield line
            continue
        while (rest := lines.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
            pass
        yield None


def is_jsonl(path: Path) -> bool:
    """Whether ``path`` holds one JSON object per line rather than one document (YAML or JSON).

    By name (``.jsonl``, ``.ndjson``), and for ``.json`` by content: a first line that is a
    whole job object (not ``{"jobs": ...}``) starts a JSONL file; ``[`` or an object spread over
    lines starts a JSON document, read like YAML (JSON is YAML 1.2 with line numbers to show).
    """
    suffix = path.suffix.lower()
    if suffix != ".json":
        return suffix in (".jsonl", ".ndjson")
    with path.open("rb") as lines:
        first = next((line for line in _bounded_lines(lines) if line is None or line.strip()), b"") or b""
    try:
        value = _DECODER.decode(first.removeprefix(b"\xef\xbb\xbf").decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError too
        return False
    return isinstance(value, dict) and "jobs" not in value


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    mapping = dict(pairs)
    if len(mapping) == len(pairs):
        return mapping
    keys = [k for k, _ in pairs]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise ValueError(f"duplicate key(s) {', '.join(map(repr, duplicates))}")
    return dict(pairs)


def _no_nan(constant: str) -> None:
    raise ValueError(f"{constant} is not valid JSON")


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicate_keys, parse_constant=_no_nan)  # one, reused


class _Unreadable(Exception):
    """The YAML file cannot be read as a job file at all: (1-based line or None, message)."""

    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.line = line


def yaml_entries(path: Path) -> tuple[list[Entry | JobFileProblem], Entry]:
    """Parse a YAML job file into (its jobs, its ``defaults:``), keeping each node's line.

    Raises ``OSError`` when the file cannot be read; everything else is returned as a problem.
    """
    name = str(path)
    loader: yaml.SafeLoader | None = None
    try:
        loader = YamlLoader(_utf8(path))  # the reader rejects control characters already
        root = loader.get_single_node()
        if root is None:
            raise _Unreadable(None, "the file is empty")
        if _expanded_size(root, {}, set()) > MAX_YAML_NODES:
            raise _Unreadable(
                None, f"more than {MAX_YAML_NODES} values once aliases are expanded (an alias bomb?)"
            )
        return _yaml_layout(name, loader, root)
    except _Unreadable as exc:
        problem = JobFileProblem(name, exc.line, None, None, str(exc))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = JobFileProblem(
            name, mark.line + 1 if mark else None, None, None, f"invalid YAML: {exc.problem}"
        )
    except yaml.YAMLError as exc:
        problem = JobFileProblem(name, None, None, None, f"invalid YAML: {exc}")
    except RecursionError:
        problem = JobFileProblem(name, None, None, None, "invalid YAML: nested too deeply")
    finally:
        if loader is not None:
            loader.dispose()
    return [problem], Entry({}, None)


def _utf8(path: Path) -> str:
    with path.open("rb") as handle:
        data = handle.read(MAX_YAML_BYTES + 1)
    if len(data) > MAX_YAML_BYTES:
        raise _Unreadable(None, f"over {MAX_YAML_BYTES} bytes: a YAML job file is read whole (JSONL is not)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Unreadable(data[: exc.start].count(b"\n") + 1, f"not UTF-8 text ({exc.reason})") from None


def _expanded_size(node: yaml.Node, sizes: dict[int, int], path: set[int]) -> int:
    """How many values ``node`` stands for once aliases are expanded (a cycle counts once)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in path or not isinstance(node, yaml.CollectionNode):
        return 1
    path.add(key)
    mapping = isinstance(node, yaml.MappingNode)
    children = [item for pair in node.value for item in pair] if mapping else node.value
    total = 1
    for child in children:
        total += _expanded_size(child, sizes, path)
        if total > MAX_YAML_NODES:
            break  # no need to count the rest of a bomb
    path.discard(key)
    sizes[key] = total
    return total


def _yaml_layout(
    name: str, loader: yaml.SafeLoader, root: yaml.Node
) -> tuple[list[Entry | JobFileProblem], Entry]:
    if isinstance(root, yaml.SequenceNode):  # a bare list of jobs (as a JSON file often is)
        return [_mapping_entry(loader, node) for node in root.value], Entry({}, None)
    if not isinstance(root, yaml.MappingNode):
        problem = (
            "the top level must be a list of jobs, or a mapping with `jobs:` (and optionally `defaults:`)"
        )
        return [JobFileProblem(name, root.start_mark.line + 1, None, None, problem)], Entry({}, None)
    top = _mapping_entry(loader, root, construct=False)  # its jobs are constructed one by one below
    out: list[Entry | JobFileProblem] = [
        JobFileProblem(name, line, None, key, unknown_name("top-level key", key, _YAML_KEYS))
        for key, line in top.key_lines.items()
        if key not in _YAML_KEYS and not key.startswith("x-")  # (x-: anchors to merge, as compose files do)
    ]
    out += [JobFileProblem(name, line, None, key, msg) for key, line, msg in top.repeated]
    nodes = {key.value: value for key, value in root.value if isinstance(key, yaml.ScalarNode)}
    defaults = Entry({}, None)
    if "defaults" in nodes:
        node = nodes["defaults"]
        if isinstance(node, yaml.MappingNode):
            defaults = _mapping_entry(loader, node)
        elif not _is_null(node):
            out.append(JobFileProblem(name, node.start_mark.line + 1, None, "defaults", "must be a mapping"))
    jobs = nodes.get("jobs")
    if jobs is None:
        out.append(JobFileProblem(name, None, None, "jobs", "missing `jobs:` list"))
    elif not isinstance(jobs, yaml.SequenceNode):
        out.append(JobFileProblem(name, jobs.start_mark.line + 1, None, "jobs", "must be a list of jobs"))
    else:
        out += [_mapping_entry(loader, node) for node in jobs.value]
    return out, defaults


def _mapping_entry(loader: yaml.SafeLoader, node: yaml.Node, *, construct: bool = True) -> Entry:
    line = node.start_mark.line + 1
    if not isinstance(node, yaml.MappingNode):
        return Entry(loader.construct_document(node), line)
    entry = Entry({}, line)
    # Keys as written, before construction merges `<<: *base` in (YAML's merge keys: what the
    # mapping writes itself wins over what it merges, and is no repeat of it).
    for key_node, _ in node.value:
        if key_node.tag == _MERGE:
            continue
        key = str(key_node.value)
        if key in entry.key_lines:
            message = f"duplicate key (first at line {entry.key_lines[key]})"
            entry.repeated.append((key, key_node.start_mark.line + 1, message))
        entry.key_lines.setdefault(key, key_node.start_mark.line + 1)
    raw = loader.construct_document(node) if construct else {}
    if not all(isinstance(key, str) for key in raw):  # YAML allows `1:` or `true:` as keys
        raw = {str(key): value for key, value in raw.items()}
    entry.raw = raw
    return entry


_MERGE = "tag:yaml.org,2002:merge"


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")


def unknown_name(what: str, value: Any, choices: Any) -> str:
    """ "unknown <what> <value>", with the closest of ``choices`` suggested (or all of them)."""
    options = [str(c) for c in choices]
    close = difflib.get_close_matches(str(value), options, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else f"; expected one of: {', '.join(options)}"
    return f"unknown {what} {show_value(value)}{hint}"


def show_value(value: Any) -> str:
    """``repr(value)`` cut to 80 characters, for error messages."""
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."
