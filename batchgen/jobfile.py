"""Job files -> jobs: YAML (``defaults:`` + ``jobs:``) or JSONL (one job per line).

Each job is one API request: ``model`` plus that model's fields named as in the API, and an
optional ``id``. Without an ``id``, a job's id is a stable hash of its canonical request, so the
same content always gets the same id (and resume finds it again). Local paths in ``image_url`` /
``image_urls`` are read, checked to be images, and sent as ``data:<mime>;base64,...`` URIs.

Two entry points, both streaming (a JSONL file is never held in memory at once):

* :func:`scan_job_file` validates the whole file and reports every problem at once;
* :func:`iter_jobs` yields the jobs to send, after a scan found none.

Example::

    summary = scan_job_file(Path("jobs/nightly.yaml"))   # raises JobFileError
    for job in iter_jobs(summary.path):
        print(job.id, job.body["model"])
"""

from __future__ import annotations

import base64
import difflib
import functools
import hashlib
import json
import os
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from batchgen.errors import JobFileError, JobFileProblem
from batchgen.images import InvalidImage, inspect_image
from batchgen.requests import IMAGE_FIELDS, MODELS, image_request_adapter

__all__ = ["MAX_ID_LENGTH", "Job", "JobFileSummary", "iter_jobs", "scan_job_file"]

MAX_ID_LENGTH = 200  # characters; ids end up in file names and X-Client-Request-Id
MAX_LOCAL_IMAGE_BYTES = 50 * 1024 * 1024  # a reference image larger than this is surely a mistake
MAX_YAML_NODES = 1_000_000  # values in a YAML file once aliases are expanded: refuses alias bombs
_YAML_KEYS = ("defaults", "jobs")
_REMOTE_SCHEMES = ("http://", "https://", "data:")
_SHOWN_CHARS = 80  # an offending value is shown up to this long


@dataclass(frozen=True, slots=True)
class Job:
    """One validated job: its ``id``, the JSON ``body`` to POST (exactly the job's API fields,
    local files already turned into data URIs), and where it came from (1-based ``line``)."""

    id: str
    body: dict[str, Any]
    line: int | None

    @property
    def model(self) -> str:
        """The API model name, e.g. ``reve/create-image``."""
        return str(self.body["model"])


@dataclass(frozen=True, slots=True)
class JobFileSummary:
    """A valid job file: its path, how many jobs it holds, and how many per model."""

    path: Path
    count: int
    models: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class _Entry:
    """One raw job as read: its mapping, its line, the line of each of its keys, and the keys
    it repeats (YAML silently keeps the last of a repeated key; we report it)."""

    raw: Any
    line: int | None
    key_lines: dict[str, int] = field(default_factory=dict)
    repeated: list[tuple[str, int, str]] = field(default_factory=list)  # key, its line, message


def scan_job_file(path: Path) -> JobFileSummary:
    """Validate every job of ``path``; return a summary or raise one error listing every problem.

    Checks the file's syntax and layout, every field of every job against the API docs (via
    :mod:`batchgen.requests`), local images, and that ids are unique.
    Raises :class:`~batchgen.errors.JobFileError` (with all problems, each naming file, line, job
    id and field).
    """
    problems: list[JobFileProblem] = []
    seen: dict[str, int | None] = {}
    models: Counter[str] = Counter()
    for item in _iter_results(path):
        if isinstance(item, list):
            problems.extend(item)
            continue
        if item.id in seen:
            where = f"line {seen[item.id]}" if seen[item.id] else "an earlier job"
            problems.append(
                JobFileProblem(str(path), item.line, item.id, "id", f"duplicate id (first at {where})")
            )
            continue
        seen[item.id] = item.line
        models[item.model] += 1
    if not problems and not seen:
        problems.append(JobFileProblem(str(path), None, None, None, "the file holds no jobs"))
    if problems:
        raise JobFileError(problems)
    return JobFileSummary(path, len(seen), models)


def iter_jobs(path: Path) -> Iterator[Job]:
    """Yield the jobs of ``path`` in file order; raise JobFileError at the first problem.

    Meant for a file :func:`scan_job_file` has passed; a problem here means the file changed
    in between.
    """
    for item in _iter_results(path):
        if isinstance(item, list):
            raise JobFileError(item)
        yield item


def _iter_results(path: Path) -> Iterator[Job | list[JobFileProblem]]:
    name = str(path)
    entries: Iterable[_Entry | JobFileProblem]
    try:
        if path.suffix.lower() in (".jsonl", ".ndjson"):
            entries, defaults = _jsonl_entries(path), _Entry({}, None)
        else:
            entries, defaults = _yaml_entries(path)
        for entry in entries:
            if isinstance(entry, JobFileProblem):
                yield [entry]
            else:
                yield _build_job(name, path.parent, entry, defaults)
    except OSError as exc:
        yield [JobFileProblem(name, None, None, None, f"cannot read the file: {exc.strerror or exc}")]


# --- reading --------------------------------------------------------------------------------


def _jsonl_entries(path: Path) -> Iterator[_Entry | JobFileProblem]:
    name = str(path)
    with path.open("rb") as lines:
        for number, raw_line in enumerate(lines, start=1):
            try:
                text = raw_line.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                yield JobFileProblem(name, number, None, None, f"not UTF-8 text ({exc.reason})")
                continue
            if not text:
                continue
            try:
                raw = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_nan)
            except (ValueError, RecursionError) as exc:
                yield JobFileProblem(name, number, None, None, f"invalid JSON: {exc}")
                continue
            keys = {str(k): number for k in raw} if isinstance(raw, dict) else {}
            yield _Entry(raw, number, keys)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise ValueError(f"duplicate key(s) {', '.join(map(repr, duplicates))}")
    return dict(pairs)


def _no_nan(constant: str) -> None:
    raise ValueError(f"{constant} is not valid JSON")


class _Unreadable(Exception):
    """The YAML file cannot be read as a job file at all: (1-based line or None, message)."""

    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.line = line


def _yaml_entries(path: Path) -> tuple[list[_Entry | JobFileProblem], _Entry]:
    """Parse a YAML job file into its jobs and defaults, keeping each node's line."""
    name = str(path)
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(_utf8(path))  # the reader rejects control characters already
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
    return [problem], _Entry({}, None)


def _utf8(path: Path) -> str:
    data = path.read_bytes()
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
) -> tuple[list[_Entry | JobFileProblem], _Entry]:
    if not isinstance(root, yaml.MappingNode):
        problem = "the top level must be a mapping with `jobs:` (and optionally `defaults:`)"
        return [JobFileProblem(name, root.start_mark.line + 1, None, None, problem)], _Entry({}, None)
    top = _mapping_entry(loader, root, construct=False)  # its jobs are constructed one by one below
    out: list[_Entry | JobFileProblem] = [
        JobFileProblem(name, line, None, key, _unknown("top-level key", key, _YAML_KEYS))
        for key, line in top.key_lines.items()
        if key not in _YAML_KEYS
    ]
    out += [JobFileProblem(name, line, None, key, msg) for key, line, msg in top.repeated]
    nodes = {key.value: value for key, value in root.value if isinstance(key, yaml.ScalarNode)}
    defaults = _Entry({}, None)
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


def _mapping_entry(loader: yaml.SafeLoader, node: yaml.Node, *, construct: bool = True) -> _Entry:
    line = node.start_mark.line + 1
    if not isinstance(node, yaml.MappingNode):
        return _Entry(loader.construct_document(node), line)
    entry = _Entry(loader.construct_document(node) if construct else {}, line)
    for key_node, _ in node.value:
        key = str(key_node.value)
        if key in entry.key_lines:
            message = f"duplicate key (first at line {entry.key_lines[key]})"
            entry.repeated.append((key, key_node.start_mark.line + 1, message))
        entry.key_lines.setdefault(key, key_node.start_mark.line + 1)
    return entry


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")


# --- building -------------------------------------------------------------------------------


def _build_job(name: str, base_dir: Path, entry: _Entry, defaults: _Entry) -> Job | list[JobFileProblem]:
    def problem(job_id: str | None, fld: str | None, message: str, line: int | None = None) -> JobFileProblem:
        top = fld.split("[")[0].split(".")[0] if fld else None
        found = entry.key_lines.get(top or "") or defaults.key_lines.get(top or "")
        return JobFileProblem(name, line or found or entry.line, job_id, fld, message)

    if not isinstance(entry.raw, dict):
        return [problem(None, None, f"a job must be a mapping of fields, got {_show(entry.raw)}")]
    raw = {str(key): value for key, value in entry.raw.items()}
    problems = [problem(None, key, msg, line) for key, line, msg in entry.repeated]
    if "id" in defaults.raw:
        problems.append(problem(None, "id", "`defaults` cannot set `id`", defaults.key_lines["id"]))
    fields = {k: v for k, v in {**defaults.raw, **raw}.items() if k != "id"}
    job_id, id_problem = _job_id(raw, fields)
    if id_problem:
        problems.append(problem(None, "id", id_problem))
    problems += _model_problems(fields, job_id, problem)
    if problems:
        return problems
    body, file_problems = _resolve_local_images(fields, base_dir)
    problems = [problem(job_id, fld, msg) for fld, msg in file_problems]
    try:
        image_request_adapter.validate_python(body)
    except ValidationError as exc:
        problems += [problem(job_id, *_explain(err, fields)) for err in exc.errors()]
    return problems or Job(job_id, body, entry.line)


def _job_id(raw: dict[str, Any], fields: dict[str, Any]) -> tuple[str, str | None]:
    if "id" not in raw:
        return "job-" + hashlib.sha256(_canonical(fields).encode()).hexdigest()[:16], None
    value = raw["id"]
    if isinstance(value, bool) or not isinstance(value, str | int):
        return "?", f"must be a string or an integer, got {_show(value)}"
    text = str(value)
    if not text.strip():
        return "?", "must not be empty"
    if len(text) > MAX_ID_LENGTH:
        return text[:40] + "...", f"is {len(text)} characters long; the limit is {MAX_ID_LENGTH}"
    if any(unicodedata.category(c) == "Cc" for c in text):
        return repr(text), "must not contain control characters"
    return text, None


def _canonical(fields: dict[str, Any]) -> str:
    """The request as canonical JSON (sorted keys, no spaces): the same content, the same text."""
    try:
        return json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    except (TypeError, ValueError):  # mixed-type keys or a YAML alias cycle: invalid anyway
        return repr(fields)


def _model_problems(fields: dict[str, Any], job_id: str, problem: Any) -> list[JobFileProblem]:
    model = fields.get("model")
    if model is None:
        return [problem(job_id, "model", f"missing; one of: {', '.join(MODELS)}")]
    if not isinstance(model, str) or model not in MODELS:
        return [problem(job_id, "model", _unknown("model", model, MODELS))]
    return []


def _resolve_local_images(
    fields: dict[str, Any], base_dir: Path
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Replace local file paths in image fields by data URIs; return the body and any problems."""
    body = dict(fields)
    problems: list[tuple[str, str]] = []
    for fld in IMAGE_FIELDS:
        value = body.get(fld)
        if isinstance(value, str):
            body[fld], message = _image_value(value, base_dir)
            if message:
                problems.append((fld, message))
        elif isinstance(value, list):
            resolved = []
            for index, item in enumerate(value):
                new, message = _image_value(item, base_dir) if isinstance(item, str) else (item, None)
                resolved.append(new)
                if message:
                    problems.append((f"{fld}[{index}]", message))
            body[fld] = resolved
    return body, problems


def _image_value(value: str, base_dir: Path) -> tuple[str, str | None]:
    if value.startswith(_REMOTE_SCHEMES) or not value.strip():
        return value, None
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base_dir / path
    try:
        stat = path.stat()
        return _data_uri(str(path.resolve()), stat.st_mtime_ns, stat.st_size), None
    except InvalidImage as exc:
        return value, f"local file {_show(value)} is not a usable image: {exc}"
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        return value, f"local image {_show(value)} cannot be read: {getattr(exc, 'strerror', None) or exc}"


@functools.lru_cache(maxsize=32)
def _data_uri(path: str, mtime_ns: int, size: int) -> str:
    """Read a local image once per (path, mtime, size) and encode it as a data URI."""
    del mtime_ns  # part of the cache key only: an edited file is read again
    if size > MAX_LOCAL_IMAGE_BYTES:
        raise InvalidImage(f"{size} bytes is over the {MAX_LOCAL_IMAGE_BYTES}-byte limit")
    with open(path, "rb", opener=_no_follow_fifo) as handle:
        data = handle.read(MAX_LOCAL_IMAGE_BYTES + 1)
    info = inspect_image(data)
    return f"data:{info.content_type};base64,{base64.b64encode(data).decode('ascii')}"


def _no_follow_fifo(path: str, flags: int) -> int:
    # O_NONBLOCK keeps a FIFO or device named as an "image" from hanging the scan.
    return os.open(path, flags | os.O_NONBLOCK)


def _explain(err: Any, fields: dict[str, Any]) -> tuple[str | None, str]:
    """Turn one pydantic error into (field path, message a person can act on)."""
    loc = [str(part) for part in err["loc"]]
    if loc and loc[0] in MODELS:  # the discriminated union puts the model name first
        loc = loc[1:]
    fld = loc[0] + "".join(f"[{p}]" for p in loc[1:]) if loc else None
    kind = err["type"]
    if kind == "extra_forbidden" and loc:
        allowed = list(MODELS[str(fields["model"])].model_fields)
        return fld, _unknown(f"field for {fields['model']}", loc[0], allowed)
    if kind == "missing":
        return fld, "required field is missing"
    message = str(err["msg"]).removeprefix("Value error, ")
    return fld, f"{message} (got {_show(err.get('input'))})"


def _unknown(what: str, value: Any, choices: Any) -> str:
    options = [str(c) for c in choices]
    close = difflib.get_close_matches(str(value), options, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else f"; expected one of: {', '.join(options)}"
    return f"unknown {what} {_show(value)}{hint}"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."
