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

import hashlib
import json
import re
import stat
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from batchgen.errors import JobFileChanged, JobFileError, JobFileProblem
from batchgen.jobs.defaults import Defaults
from batchgen.jobs.local_images import resolve_local_images
from batchgen.jobs.reader import Entry, is_jsonl, jsonl_entries, show_value, unknown_name, yaml_entries
from batchgen.models import catalog
from batchgen.models.catalog import IMAGE_FIELDS
from batchgen.models.known import all_models, is_known
from batchgen.models.seed import MODELS, image_request_adapter

__all__ = ["MAX_ID_LENGTH", "Job", "JobFileSummary", "iter_jobs", "scan_job_file", "still_as_scanned"]

MAX_ID_LENGTH = 200  # characters; ids end up in file names and X-Client-Request-Id
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # Unicode category Cc, exactly


@dataclass(slots=True)  # not frozen: a frozen init costs more than the rest of a valid job's checks
class Job:
    """One validated job: its ``id``, the JSON ``body`` to POST (exactly the job's API fields,
    local files already turned into data URIs), and where it came from (1-based ``line``).
    Read-only by convention."""

    id: str
    body: dict[str, Any]
    line: int | None
    sources: dict[str, Any] = field(default_factory=dict)  # image fields as written (paths made absolute)
    _fingerprint: str = field(default="", init=False, repr=False, compare=False)  # once computed

    @property
    def request(self) -> dict[str, Any]:
        """The body as the job file wrote it, for records and reports: local images by their
        absolute path and data URIs cut short, never the image data itself."""
        return {**self.body, **self.sources}

    @property
    def model(self) -> str:
        """The API model name, e.g. ``reve/create-image``."""
        return str(self.body["model"])

    @property
    def fingerprint(self) -> str:
        """What the request is, in 32 hex digits: the SHA-256 of its canonical body. Local files
        are in the body as data URIs, so an edited reference image changes it too. Computed
        once (a run asks when it judges the job and when it sends it)."""
        if not self._fingerprint:
            self._fingerprint = hashlib.sha256(_canonical(self.body).encode()).hexdigest()[:32]
        return self._fingerprint

    def images(self) -> list[str | list[str]]:
        """The values of the body's image fields (URLs or data URIs), for sizing it."""
        return [self.body[f] for f in IMAGE_FIELDS if f in self.body]


@dataclass(frozen=True, slots=True)
class _Invalid:
    """A job with problems; ``job_id`` is the id it was given, if that much could be read."""

    job_id: str | None
    line: int | None
    problems: list[JobFileProblem]


@dataclass(frozen=True, slots=True)
class JobFileSummary:
    """A valid job file: its path, how many jobs it holds, and how many per model."""

    path: Path
    count: int
    models: Counter[str] = field(default_factory=Counter)
    stamp: tuple[int, int, int] = (0, 0, 0)  # the file as scanned (inode, size, mtime ns)
    selected: int | None = None  # jobs of a selection (``only``) it holds
    missing: list[str] = field(default_factory=list)  # ids of the selection it does not hold


def scan_job_file(path: Path, *, only: frozenset[str] | None = None) -> JobFileSummary:
    """Validate every job of ``path``; return a summary or raise one error listing every problem.

    Checks the file's syntax and layout, every field of every job against the API docs (via
    :mod:`batchgen.models.seed`), local images, and that ids are unique. With ``only``, the whole
    file is still checked; ``selected`` counts those ids, ``models`` their models, and
    ``missing`` lists those it does not hold.
    Raises :class:`~batchgen.errors.JobFileError` (with all problems, each naming file, line, job
    id and field).
    """
    problems: list[JobFileProblem] = []
    stamp = _stamp(path)
    # Ids are kept as their 64-bit hashes, not strings: memory stays flat in the file's size. A
    # hash seen twice is confirmed against the ids themselves (a second pass, on that path only).
    seen: set[int] = set()
    suspects: set[str] = set()
    models: Counter[str] = Counter()
    found: set[str] = set()  # of ``only``
    count = 0
    for item in _iter_results(path):
        if isinstance(item, _Invalid):
            problems.extend(item.problems)
            if item.job_id is None:
                continue
            job_id = item.job_id  # an invalid job's id can still repeat another's
        else:
            job_id = item.id
            count += 1
            if only is None or job_id in only:
                models[item.body["model"]] += 1
                if only is not None:
                    found.add(job_id)
        digest = hash(job_id)  # SipHash, seeded per process: only compared within this scan
        if digest in seen:
            suspects.add(job_id)
        seen.add(digest)
    if suspects:
        problems += _duplicates(path, suspects)
    if not problems and not count:
        problems.append(JobFileProblem(str(path), None, None, None, "the file holds no jobs"))
    if problems:
        raise JobFileError(problems)
    if only is None:
        return JobFileSummary(path, count, models, stamp)
    return JobFileSummary(path, count, models, stamp, len(found), sorted(only - found))


def _duplicates(path: Path, suspects: set[str]) -> list[JobFileProblem]:
    """The jobs among ``suspects`` whose id really repeats an earlier job's id."""
    lines: dict[str, list[int | None]] = {}
    for item in _iter_results(path):
        job_id = item.id if isinstance(item, Job) else item.job_id
        if job_id in suspects:
            lines.setdefault(job_id, []).append(item.line)
    problems = []
    for job_id, found in lines.items():
        where = f"line {found[0]}" if found[0] else "an earlier job"
        problems += [
            JobFileProblem(str(path), line, job_id, "id", f"duplicate id (first at {where})")
            for line in found[1:]
        ]  # one occurrence only: its digest matched another id's
    return problems


def iter_jobs(path: Path, *, scanned: JobFileSummary | None = None) -> Iterator[Job]:
    """Yield the jobs of ``path`` in file order; raise JobFileError at the first problem.

    Meant for a file :func:`scan_job_file` has passed; a problem here means the file changed
    in between. Given that scan's summary (``scanned``), the fields are not validated again
    (the scan did it): instead, a file no longer as it was then (:attr:`JobFileSummary.stamp`,
    looked at every 64 jobs) raises :class:`~batchgen.errors.JobFileChanged`.
    """
    for number, item in enumerate(_iter_results(path, validate=scanned is None)):
        if scanned is not None and number % _STAMP_EVERY == 0 and not still_as_scanned(scanned):
            raise JobFileChanged(f"{path} was modified after it was checked")
        if isinstance(item, _Invalid):
            raise JobFileError(item.problems)
        yield item


_STAMP_EVERY = 64  # jobs read between two looks at whether the file changed
_NOT_A_FILE = "not a regular file (a pipe or a device): save the jobs to a file and give its path"


def still_as_scanned(summary: JobFileSummary) -> bool:
    """Whether the file is still as :func:`scan_job_file` found it (one ``stat``: cheap enough
    to ask before every request)."""
    return _stamp(summary.path) == summary.stamp


def _stamp(path: Path) -> tuple[int, int, int]:
    """What tells whether a file was changed: (inode, size, modification time in ns)."""
    try:
        info = path.stat()
    except OSError:
        return (0, 0, 0)
    return (info.st_ino, info.st_size, info.st_mtime_ns)


def _iter_results(path: Path, *, validate: bool = True) -> Iterator[Job | _Invalid]:
    name = str(path)
    entries: Iterable[Entry | JobFileProblem]
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a FIFO or a device (/dev/zero) may never end
            yield _Invalid(None, None, [JobFileProblem(name, None, None, None, _NOT_A_FILE)])
            return
        if is_jsonl(path):
            entries, defaults = jsonl_entries(path), Entry({}, None)
        else:
            entries, defaults = yaml_entries(path)
        base_dir = path.parent
        layered = Defaults.split(name, defaults)
        if layered.problems:
            yield _Invalid(None, None, layered.problems)
        for entry in entries:
            if isinstance(entry, JobFileProblem):
                yield _Invalid(None, entry.line, [entry])
            else:
                yield _build_job(name, base_dir, entry, layered, validate=validate)
    except OSError as exc:
        problem = JobFileProblem(name, None, None, None, f"cannot read the file: {exc.strerror or exc}")
        yield _Invalid(None, None, [problem])


_Found = tuple[str | None, str | None, str, int | None]  # job id, field, message, line if known


def _build_job(
    name: str, base_dir: Path, entry: Entry, defaults: Defaults, *, validate: bool = True
) -> Job | _Invalid:
    raw = entry.raw
    if not isinstance(raw, dict):
        message = f"a job must be a mapping of fields, got {show_value(raw)}"
        return _Invalid(None, entry.line, [_located(name, entry, defaults, (None, None, message, None))])
    # (a million-line file takes this path a million times: the checks of a valid job are cheap,
    # and each problem is located only once it is known to be one)
    # The job's model decides its model's defaults, wherever it was given: in the job or as a
    # common default (README's "Defaults for files that mix models").
    model = raw["model"] if "model" in raw else defaults.common.get("model")
    model_defaults, problems = defaults.for_model(name, model, raw.get("id"))
    fields = {**model_defaults, **raw}
    fields.pop("id", None)
    job_id, id_problem = _job_id(raw, fields)
    found: list[_Found] = [(None, key, msg, line) for key, line, msg in entry.repeated]
    if id_problem:
        found.append((None, "id", id_problem, None))
    model_problem = _model_problem(fields.get("model"))
    if model_problem:
        found.append((job_id, "model", model_problem, None))
    known_id = job_id if "id" in raw and not id_problem else None  # a given id may still repeat
    if not found and not problems:
        body, sources, file_problems = resolve_local_images(fields, base_dir)
        found = [(job_id, fld, msg, None) for fld, msg in file_problems]
        try:
            if validate and body["model"] not in MODELS:  # (the seed models: pydantic, below)
                found += [
                    (job_id, problem.field or None, problem.message, None)
                    for problem in catalog.check(body)
                    if problem.field not in dict(file_problems)
                ]
            elif validate:
                _validate_request(body)
        except ValidationError as exc:
            explained = (_explain(err, fields) for err in exc.errors())
            # A local file already reported (missing, not an image) is not reported again as a bad URL.
            found += [(job_id, fld, msg, None) for fld, msg in explained if fld not in dict(file_problems)]
        if not found:
            return Job(job_id, body, entry.line, sources)
    return _Invalid(known_id, entry.line, [*problems, *(_located(name, entry, defaults, p) for p in found)])


def _located(name: str, entry: Entry, defaults: Defaults, found: _Found) -> JobFileProblem:
    """A job's problem at its known line, or else the line of the field's key in the job or in
    ``defaults:``, or else the job's own line."""
    job_id, fld, message, line = found
    top = fld.split("[")[0].split(".")[0] if fld else ""
    at = line or entry.key_lines.get(top) or defaults.entry.key_lines.get(top) or entry.line
    return JobFileProblem(name, at, job_id, fld, message)


def _job_id(raw: dict[str, Any], fields: dict[str, Any]) -> tuple[str, str | None]:
    """The job's id and the problem with it, if any (an id is derived from the request when
    the job gives none)."""
    if "id" not in raw:
        return "job-" + hashlib.sha256(_canonical(fields).encode()).hexdigest()[:16], None
    value = raw["id"]
    if type(value) is str and _PLAIN_ID.fullmatch(value) and not value.isspace():
        return value, None  # the common case, decided by one regex
    return _id_problem(value)


def _id_problem(value: Any) -> tuple[str, str | None]:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return "?", f"must be a string or an integer, got {show_value(value)}"
    text = str(value)
    if not text.strip():
        return "?", "must not be empty"
    if len(text) > MAX_ID_LENGTH:
        return text[:40] + "...", f"is {len(text)} characters long; the limit is {MAX_ID_LENGTH}"
    if _CONTROL.search(text):
        return repr(text), "must not contain control characters"
    return text, None


_validate_request = image_request_adapter.validator.validate_python  # without the adapter's wrapper
_PLAIN_ID = re.compile(f"[^\x00-\x1f\x7f-\x9f]{{1,{MAX_ID_LENGTH}}}")  # no Cc, not too long
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)  # one, reused


def _canonical(fields: dict[str, Any]) -> str:
    """The request as canonical JSON (sorted keys, no spaces): the same content, the same text."""
    try:
        return _CANONICAL.encode(fields)
    except (TypeError, ValueError):  # mixed-type keys or a YAML alias cycle: invalid anyway
        return repr(fields)


def _model_problem(model: Any) -> str | None:
    if type(model) is str and is_known(model):
        return None
    if model is None:
        return f"missing; one of the API's {len(all_models())} image models, e.g. {', '.join(MODELS)}"
    return unknown_name("model", model, all_models())


def _explain(err: Any, fields: dict[str, Any]) -> tuple[str | None, str]:
    """Turn one pydantic error into (field path, message a person can act on)."""
    loc = [str(part) for part in err["loc"]]
    if loc and loc[0] in MODELS:  # the discriminated union puts the model name first
        loc = loc[1:]
    fld = loc[0] + "".join(f"[{p}]" for p in loc[1:]) if loc else None
    kind = err["type"]
    if kind == "extra_forbidden" and loc:
        allowed = list(MODELS[str(fields["model"])].model_fields)
        return fld, unknown_name(f"field for {fields['model']}", loc[0], allowed)
    if kind == "missing":
        return fld, "required field is missing"
    message = str(err["msg"]).removeprefix("Value error, ")
    return fld, f"{message} (got {show_value(_as_written(loc, fields, err.get('input')))})"


def _as_written(loc: list[str], fields: dict[str, Any], sent: Any) -> Any:
    """The value at ``loc`` as the job file wrote it (a local path, not the data URI made of it)."""
    value: Any = fields
    for part in loc:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return sent
    return value
