"""The ``batchgen`` command: parse arguments, build settings, call one function, map the outcome
to an exit code a cron wrapper can act on.

Exit codes:
  0   every job of the file has succeeded (in this run or earlier ones)
  1   some jobs failed for good (content violation, body rejected; see the manifest), or
      jobs whose request changed were left unsent by --frozen (they are listed)
  2   invalid job file or command line, or an output folder that can never be written
      (read-only, not a folder, a missing parent without --parents); nothing was sent
  70  internal error (a bug: please report it with the log); a job it hit is recorded as
      failed (kind internal) and the other jobs still ran
  73  the output folder is locked by another live run; nothing was sent
  75  stopped, resume me (EX_TEMPFAIL): signal (INT, TERM, HUP), out of credits (403),
      hourly limit or a long Retry-After, retry budget exhausted, spend budget reached
      (--max-usd, --max-credits, --max-usd-per-day), disk full, the job file edited during
      the run, the base URL not the API's, or jobs left that failed transiently
  77  the API key was refused (401): fix AIMLAPI_KEY / --api-key-file, then resume
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import io
import json
import logging
import math
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import fields
from decimal import Decimal, InvalidOperation
from enum import IntEnum
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchgen.errors import (
    FAILURE_KINDS,
    BatchgenError,
    JobFileError,
    OutputLockedError,
    UsageError,
    failure_kind,
)
from batchgen.jobfile import iter_jobs, scan_job_file
from batchgen.money import Spend, usd
from batchgen.progress import Outcome
from batchgen.schema import job_file_schema
from batchgen.settings import Settings, Timeouts, load_api_key, resolve_base_url
from batchgen.simulator import FaultConfig
from batchgen.store import failed_records, read_status, verify_folder

if TYPE_CHECKING:
    from batchgen.runner import RunReport

# The commands that send requests or draw pages import the runner (aiohttp), the simulator's
# server, `plan` and `report` (Jinja2) when they run: the others (`validate`, `status`,
# `failed`, `verify`, `schema`) then start in 0.2 s instead of 0.5 s.

__all__ = ["ExitCode", "main"]

log = logging.getLogger("batchgen")


class ExitCode(IntEnum):
    """Process exit codes (see the module docstring); 73, 75 and 77 follow sysexits.h."""

    OK = 0
    JOBS_FAILED = 1
    INVALID_INPUT = 2
    INTERNAL = 70
    LOCKED = 73
    RESUMABLE = 75
    BAD_KEY = 77


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    _escape_unencodable()
    parser = _parser()
    args = parser.parse_args(argv)
    # Until a run installs its own handlers (graceful stop), a signal that ends the session
    # (SIGTERM, or SIGHUP: the terminal closed) is an interruption like ^C.
    ending = [s for s in ENDING_SIGNALS if signal.getsignal(s) is not signal.SIG_IGN]  # (nohup: kept)
    previous = {signum: signal.signal(signum, _interrupt) for signum in ending}
    try:
        code = _dispatch(args)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return _flushed(code)


ENDING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
"""Signals that end a session besides ^C: a service manager's stop, a closed terminal or ssh
session. A run stops on them as on ^C (in-flight answers saved); SIGQUIT keeps its default
(a core dump is what it asks for) and is left to the resume's in-flight report."""


def _escape_unencodable() -> None:
    """Ids and prompts may hold any character; a terminal whose locale cannot show one gets it
    escaped (``\\u00e9``) rather than a crash (a C locale, ``PYTHONUTF8=0``)."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            with contextlib.suppress(ValueError, OSError):
                stream.reconfigure(errors="backslashreplace")


def _flushed(code: int) -> int:
    """``code``, whatever became of stdout and stderr: a reader that closed the pipe (``| head``)
    or a log on a full disk costs the output nobody could read, never the exit code (Python
    would exit 120 on a failed flush at exit)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
    return code


def _dispatch(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "debug", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        code: int = args.handler(args)
    except BatchgenError as exc:
        print(f"batchgen: {exc}", file=sys.stderr)
        return next(code for kind, code in _ERROR_CODES if isinstance(exc, kind))
    except BrokenPipeError:  # the reader has what it wanted (`status DIR | head -1`)
        return ExitCode.OK
    except KeyboardInterrupt:  # before the run's own signal handling was in place
        print("batchgen: interrupted; run the same command again to resume", file=sys.stderr)
        return ExitCode.RESUMABLE
    except Exception:
        log.exception("internal error; the output folder stays resumable")
        return ExitCode.INTERNAL
    return code


_ERROR_CODES: list[tuple[type[BatchgenError], ExitCode]] = [
    (UsageError, ExitCode.INVALID_INPUT),  # (an output folder that can never be written is one)
    (JobFileError, ExitCode.INVALID_INPUT),
    (OutputLockedError, ExitCode.LOCKED),
    (BatchgenError, ExitCode.RESUMABLE),
]
"""The exit code of an error that ends a command, the first that matches."""


def _interrupt(signum: int, frame: object) -> None:
    del signum, frame
    raise KeyboardInterrupt


def _run(args: argparse.Namespace) -> int:
    from batchgen.simulator import SIMULATOR_KEY

    settings = Settings(
        api_key=SIMULATOR_KEY if args.simulate else load_api_key(args.api_key_file),
        # With --simulate, the simulator's own URL replaces this once it listens.
        base_url="http://127.0.0.1" if args.simulate else resolve_base_url(args.base_url),
        concurrency=args.concurrency,
        rpm=args.rpm,
        max_retries=args.max_retries,
        retry_budget=args.retry_budget,
        generation_timeout=Timeouts(connect=args.connect_timeout, read=args.read_timeout, total=args.timeout),
        download_timeout=Timeouts(
            connect=args.connect_timeout, read=args.download_read_timeout, total=args.download_timeout
        ),
        max_json_bytes=args.max_json_bytes,
        max_image_bytes=args.max_image_bytes,
        grace=args.grace,
        retry_failed=args.retry_failed,
        only=_selection(args),
        max_usd=args.max_usd,
        max_credits=args.max_credits,
        max_usd_per_day=args.max_usd_per_day,
        assumed_cost=(
            Spend(args.assume_usd or Decimal(0), args.assume_credits or Decimal(0))
            if args.assume_usd is not None or args.assume_credits is not None
            else None
        ),
        ignore_retry_after=args.ignore_retry_after,
        create_parents=args.parents,
        frozen=args.frozen,
        redo=frozenset(args.redo),
        metrics_file=args.metrics_file,
        ca_bundle=args.ca_bundle,
        debug_http=args.debug,
    )
    report = asyncio.run(_run_async(args, settings))
    code = _exit_code(report)
    # Files first, words last: a closed stderr (`| head`) must not cost the summary.
    if args.summary_json is not None:
        _write_summary(args.summary_json, report, args.out, code)
    with contextlib.suppress(OSError):  # the exit code is the run's, whatever stderr is
        print(_describe(report, args.out), file=sys.stderr)
    return code


def _write_summary(path: Path, report: RunReport, out: Path, code: int) -> None:
    """``--summary-json``: the run's summary for wrappers, written whole (temporary file, rename).
    Money: ``usd``/``credits`` this run's answers, ``folder_usd``/``folder_credits`` every
    answer the folder recorded, all runs (exact sums, as ``status`` shows them)."""
    t = report.tally
    folder = report.folder.total_spent if report.folder else Spend()
    summary = {
        **report.ending(),
        "exit_code": int(code),
        "stop_advice": report.stop_advice or None,
        "total": report.total,
        "jobs": {outcome.value: getattr(t, outcome.value) for outcome in Outcome},
        "images": t.images,
        "tokens_used": int(t.tokens_used) if float(t.tokens_used).is_integer() else t.tokens_used,
        "folder_usd": float(folder.usd),
        "folder_credits": float(folder.credits),
        "changed": report.changed,
        "frozen": report.frozen,
        "redone": report.redone,
        "restored": report.restored,
        "missing_images": report.missing,
        "crashed": report.crashed,
        "cancelled_in_flight": [{"id": job, "client_request_ids": ids} for job, ids in report.cancelled],
        "manifest": str(out / "manifest.jsonl"),
    }
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        temporary.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            print(f"batchgen: cannot write --summary-json {path}: {exc.strerror or exc}", file=sys.stderr)


async def _run_async(args: argparse.Namespace, settings: Settings) -> RunReport:
    from batchgen.runner import run_batch
    from batchgen.simulator import start_simulator

    if not args.simulate:
        return await run_batch(args.file, args.out, settings, progress=not args.no_progress)
    simulator = await start_simulator()
    try:
        settings = dataclasses.replace(settings, base_url=simulator.url)
        log.info("simulated API at %s (no key needed, nothing is billed)", simulator.url)
        return await run_batch(args.file, args.out, settings, progress=not args.no_progress)
    finally:
        await simulator.close()


def _exit_code(report: RunReport) -> int:
    from batchgen.runner import StopReason

    if report.stop_reason is StopReason.BAD_KEY:
        return ExitCode.BAD_KEY
    if report.crashed:
        return ExitCode.INTERNAL
    if report.stop_reason is not None or report.tally.failed_retryable or report.tally.not_reached:
        return ExitCode.RESUMABLE
    if report.tally.failed_final or report.tally.changed_frozen:
        return ExitCode.JOBS_FAILED
    return ExitCode.OK


def _describe(report: RunReport, out: Path) -> str:
    t = report.tally
    lines = [
        f"{report.total} jobs: {t.succeeded} succeeded now, {t.already_done} earlier, "
        f"{t.failed_final} failed for good, {t.failed_retryable} failed (retried on resume), "
        f"{t.not_reached} not reached; {t.tokens_used:.0f} tokens used. Manifest: {out / 'manifest.jsonl'}"
    ]
    if report.folder is not None and (t.spent or report.folder.spent):
        total = report.folder.total_spent
        by_model = ", ".join(f"{model} {s.describe()}" for model, s in report.folder.spent.items())
        lines.append(
            f"spent this run: {t.spent.describe()}; in this folder, all runs: {total.describe()} ({by_model})"
        )
    if report.in_flight_before:
        lines.append(
            f"{len(report.in_flight_before)} job(s) were in flight when an earlier run stopped"
            " (each possibly charged once)"
        )
    if report.cancelled:
        shown = "; ".join(
            f"{job} (X-Client-Request-Id {ids[-1]})" for job, ids in report.cancelled[:10] if ids
        )
        lines.append(
            f"{len(report.cancelled)} request(s) cancelled in flight, each possibly charged once; the next"
            f" run sends them again (match them in the usage logs, GET /v2/logs): {shown}"
        )
    if report.folder is not None and report.folder.not_in_file:
        lines.append(
            f"{report.folder.not_in_file_count} job(s) of this folder are not in the job file (their records"
            f" stay): {_some(report.folder.not_in_file)}"
        )
    if report.crashed:
        shown = _some(report.crashed)
        lines.append(
            f"{len(report.crashed)} job(s) failed on an unexpected error (a bug, please report it with the"
            f" log): {shown}; recorded as failed (kind internal), skipped unless --retry-failed"
        )
    if report.changed:
        lines.append(
            f"{len(report.changed)} job(s) changed since their record and were sent anew:"
            f" {_some(report.changed)}"
        )
    if report.frozen:
        lines.append(
            f"{len(report.frozen)} job(s) changed since their record, not sent (--frozen):"
            f" {_some(report.frozen)}"
        )
    if report.redone:
        lines.append(f"{len(report.redone)} job(s) generated again (--redo): {_some(report.redone)}")
    if report.restored:
        lines.append(
            f"{len(report.restored)} job(s) had missing images fetched again: {_some(report.restored)}"
        )
    if report.missing:
        lines.append(
            f"{len(report.missing)} job(s) have missing images that could not be fetched again"
            f" (`--redo ID` generates them again, paid): {_some(report.missing)}"
        )
    if report.stop_reason is not None:
        lines.append(f"stopped ({report.stop_reason}): {report.stop_message}")
        lines.append(report.stop_advice)
    return "\n".join(lines)


def _json_number(value: object) -> float:
    """Exact money in JSON: the number that prints as the decimal (a float's shortest repr)."""
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _some(ids: list[str], shown: int = 10) -> str:
    return ", ".join(ids[:shown]) + (f" and {len(ids) - shown} more" if len(ids) > shown else "")


def _validate(args: argparse.Namespace) -> int:
    summary = scan_job_file(args.file)
    per_model = ", ".join(f"{count} {model}" for model, count in sorted(summary.models.items()))
    if args.show_bodies:  # what each request will be, defaults merged: what will be paid for
        for job in iter_jobs(args.file, scanned=summary):
            print(json.dumps({"id": job.id, "line": job.line, "body": job.request}, ensure_ascii=False))
    print(
        f"{args.file}: {summary.count} valid jobs ({per_model})",
        file=sys.stderr if args.show_bodies else sys.stdout,
    )
    return ExitCode.OK


def _status(args: argparse.Namespace) -> int:
    status = asyncio.run(read_status(args.dir))
    print(json.dumps(status, indent=2, default=_json_number) if args.json else _describe_status(status))
    return ExitCode.OK


def _describe_status(status: dict[str, Any]) -> str:
    hidden = ("running_pid", "failed_jobs_not_shown", "not_in_job_file")
    shown = {k: v for k, v in status.items() if k not in hidden}
    lines = [f"{k}: {v}" for k, v in shown.items() if not isinstance(v, dict | list) and v is not None]
    pid = status["running_pid"]
    lines.append(f"a run holds the folder now: pid {pid}" if pid else "no run holds the folder now")
    spent = status["spent"]
    by_model = ", ".join(f"{m} {usd(s['usd'])}" for m, s in spent["by_model"].items())
    total = Spend(spent["usd"], spent["credits"])
    lines.append(
        f"spent in this folder, all runs: {total.describe()}" + (f" ({by_model})" if by_model else "")
    )
    if status["not_in_job_file"]:
        lines.append(
            f"not in the job file: {status['not_in_job_file']} job(s), records kept:"
            f" {_some(status['not_in_job_file_ids'])}"
        )
    last = status["last_run"]
    if last:
        how = (
            f"stopped ({last['stop_reason']}): {last['stop_message']}" if last["stop_reason"] else "finished"
        )
        lines.append(f"last run, ended {last['ended_at']}: {how}")
    for job in status["in_flight_of_a_dead_run"]:
        ids = " ".join(job["client_request_ids"][-1:])
        lines.append(f"in flight when a run died (maybe charged): {job['id']} (X-Client-Request-Id {ids})")
    for job in status["failed_jobs"]:
        again = "retried on resume" if job["retried_on_resume"] else "failed for good"
        kind = failure_kind(job["kind"])  # (the name --retry-failed takes)
        lines.append(f"failed: {job['id']} [{kind}, {again}] {job['message']}")
    if status["failed_jobs_not_shown"]:
        lines.append(f"... and {status['failed_jobs_not_shown']} more failed jobs")
    return "\n".join(lines)


def _plan(args: argparse.Namespace) -> int:
    from batchgen.plan import make_plan

    plan = make_plan(
        args.file,
        args.out,
        history=args.history,
        retry_failed=args.retry_failed,
        frozen=args.frozen,
        redo=frozenset(args.redo),
        only=_selection(args),
    )
    print(json.dumps(plan.as_json(), indent=2) if args.json else plan.describe())
    return ExitCode.OK


def _report(args: argparse.Namespace) -> int:
    from batchgen.report import make_report

    print(make_report(args.dir))
    return ExitCode.OK


def _failed(args: argparse.Namespace) -> int:
    records = asyncio.run(failed_records(args.dir))
    unknown, inline = [], []
    for record in records:
        if record.request is None:  # recorded by a release that did not keep the request
            unknown.append(record.job_id)
            continue
        if ",... (" in json.dumps(record.request):
            inline.append(record.job_id)
        print(json.dumps({"id": record.job_id, **record.request}, ensure_ascii=False))
    print(f"{len(records) - len(unknown)} failed job(s) written as JSONL", file=sys.stderr)
    if inline:
        print(
            f"give the inline (data:) images of these again before running them: {_some(inline)}",
            file=sys.stderr,
        )
    if unknown:
        print(f"their records do not keep the request (an older release): {_some(unknown)}", file=sys.stderr)
    return ExitCode.OK


def _verify(args: argparse.Namespace) -> int:
    checked, problems = asyncio.run(verify_folder(args.dir))
    for problem in problems:
        print(f"{problem.path}: {problem.problem} (job {problem.job_id})")
    if problems:
        print(
            f"{len(problems)} of {checked} images are not as recorded. A run of the same command fetches"
            " a missing one again from its recorded URL (free) where the URL still serves it;"
            " `batchgen run ... --redo ID` generates a job again (paid)",
            file=sys.stderr,
        )
        return ExitCode.JOBS_FAILED
    print(f"{checked} images checked: every one as recorded")
    return ExitCode.OK


def _schema(args: argparse.Namespace) -> int:
    print(json.dumps(job_file_schema(jsonl=args.jsonl), indent=2))
    return ExitCode.OK


def _simulate_server(args: argparse.Namespace) -> int:
    from batchgen.simulator import SIMULATOR_KEY, start_simulator

    config = FaultConfig(**{f.name: getattr(args, f.name) for f in fields(FaultConfig)})

    async def serve() -> None:
        try:
            simulator = await start_simulator(config, host=args.host, port=args.port)
        except OSError as exc:  # the port is taken, or the address is not this machine's
            raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from exc
        print(f"simulated AIML API at {simulator.url} (key: {SIMULATOR_KEY}); Ctrl-C stops it", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await simulator.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return ExitCode.OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchgen",
        description="Run batches of image-generation requests against the AIML API; resumable.",
        epilog=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"batchgen {version('batchgen')}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    _add_run(commands)
    validate = commands.add_parser("validate", help="check a job file; send nothing")
    validate.add_argument("file", type=Path, help="job file (.yaml/.yml, .json or .jsonl)")
    validate.add_argument(
        "--show-bodies",
        action="store_true",
        help="print each job's request as it will be sent (defaults merged; local images by path, sent as"
        " data: URIs), one JSON line per job: what will be paid for",
    )
    validate.set_defaults(handler=_validate)
    plan = commands.add_parser(
        "plan",
        help="what `run` would send, download and skip, and what it would cost; send and write nothing",
    )
    plan.add_argument("file", type=Path, help="job file (.yaml/.yml, .json or .jsonl)")
    plan.add_argument("--out", type=Path, required=True, help="the output folder `run` would use")
    plan.add_argument(
        "--history",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="another output folder whose recorded costs also count (repeatable)",
    )
    plan.add_argument("--json", action="store_true", help="print JSON")
    _add_selection(plan)
    plan.add_argument("--frozen", action="store_true", help="as `run --frozen` would")
    plan.add_argument("--redo", action="append", default=[], metavar="ID", help="as `run --redo ID` would")
    plan.set_defaults(handler=_plan)
    status = commands.add_parser("status", help="succeeded / failed / pending counts of an output folder")
    status.add_argument("dir", type=Path, help="output folder of a run")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=_status)
    verify = commands.add_parser(
        "verify",
        help="check every recorded image of an output folder (exists, size, SHA-256); exit 1 if any is not",
    )
    verify.add_argument("dir", type=Path, help="output folder of a run")
    verify.set_defaults(handler=_verify)
    report = commands.add_parser(
        "report", help="write DIR/report.html: every job's images, prompt, parameters, status and cost"
    )
    report.add_argument("dir", type=Path, help="output folder of a run")
    report.set_defaults(handler=_report)
    failed = commands.add_parser(
        "failed", help="print the failed jobs of an output folder as a JSONL job file, to edit and run again"
    )
    failed.add_argument("dir", type=Path, help="output folder of a run")
    failed.set_defaults(handler=_failed)
    schema = commands.add_parser("schema", help="print the job file's JSON Schema (for editors)")
    schema.add_argument(
        "--jsonl", action="store_true", help="schema of one JSONL line instead of a YAML file"
    )
    schema.set_defaults(handler=_schema)
    _add_simulate_server(commands)
    return parser


def _add_selection(command: argparse.ArgumentParser) -> None:
    kinds = ", ".join(sorted(set(FAILURE_KINDS.values())))
    command.add_argument(
        "--retry-failed",
        nargs="?",
        const=frozenset({"all"}),
        default=frozenset(),
        type=_failure_kinds,
        metavar="KINDS",
        help=f"also send jobs that failed for good: of these kinds (comma-separated: {kinds}), or without "
        "KINDS every kind but violation (content violations are sent again only when named: paid)",
    )
    command.add_argument(
        "--only", action="append", default=None, metavar="ID", help="run just this job (repeatable)"
    )
    command.add_argument(
        "--only-file", type=Path, metavar="F", help="run just the jobs whose ids F lists, one per line"
    )


def _failure_kinds(text: str) -> frozenset[str]:
    kinds = frozenset(k.strip().lower() for k in text.split(",") if k.strip())
    unknown = kinds - set(FAILURE_KINDS.values()) - {"all"}
    if unknown or not kinds:
        choices = ", ".join(sorted({*FAILURE_KINDS.values(), "all"}))
        named = ", ".join(sorted(unknown)) or repr(text)
        raise argparse.ArgumentTypeError(f"unknown kind(s) {named}; choose from {choices}")
    return kinds


def _selection(args: argparse.Namespace) -> frozenset[str] | None:
    """The job ids of --only and --only-file, or None for every job."""
    if args.only is None and args.only_file is None:
        return None
    ids = set(args.only or [])
    if args.only_file is not None:
        try:
            text = args.only_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read --only-file {args.only_file}: {exc}") from exc
        ids.update(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))
    return frozenset(ids)


def _number(text: str, *, integer: bool, least: float, strict: bool) -> float:
    """An option's number: finite and at least (``strict``: above) ``least``; argparse's error
    (exit 2, naming the option) otherwise."""
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not {'a whole number' if integer else 'a number'}"
        ) from None
    if not math.isfinite(value) or value < least or (strict and value == least):
        bound = f"{'above' if strict else 'at least'} {least:g}"
        raise argparse.ArgumentTypeError(f"{text!r} is out of range: it must be finite and {bound}")
    return value


def _positive(text: str) -> float:
    """Seconds or a rate: finite and above 0."""
    return _number(text, integer=False, least=0, strict=True)


def _seconds_or_zero(text: str) -> float:
    """Seconds: finite and at least 0."""
    return _number(text, integer=False, least=0, strict=False)


def _positive_int(text: str) -> int:
    """A count or a size: a whole number of at least 1."""
    return int(_number(text, integer=True, least=1, strict=False))


def _whole(text: str) -> int:
    """A count that may be 0."""
    return int(_number(text, integer=True, least=0, strict=False))


_MOST_MONEY = 10**12  # USD or credits: a larger budget is a typo


def _money(text: str) -> Decimal:
    """An amount of money: an exact decimal, finite and at least 0."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not an amount") from None
    if not value.is_finite() or value < 0 or value > _MOST_MONEY:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range: an amount is 0 to {_MOST_MONEY:,}")
    return value


def _money_or_off(text: str) -> Decimal | str:
    """``--max-usd-per-day``: an amount, or ``off``."""
    return "off" if text.strip().lower() == "off" else _money(text)


def _port(text: str) -> int:
    """A TCP port: 0 (any free one) to 65535."""
    value = _whole(text)
    if value > 65535:  # noqa: PLR2004
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (0 to 65535)")
    return value


def _probability(text: str) -> float:
    """A probability: 0 to 1."""
    value = _number(text, integer=False, least=0, strict=False)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range: a probability is 0 to 1")
    return value


class _DefaultsShown(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default only when it has one worth reading (no "(default: None)")."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, [], frozenset()) or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def _add_run(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    d = Settings(api_key="")
    run = commands.add_parser(
        "run",
        help="run a job file into an output folder (run again to resume)",
        formatter_class=_DefaultsShown,
    )
    run.add_argument("file", type=Path, help="job file (.yaml/.yml, .json or .jsonl)")
    run.add_argument("--out", type=Path, required=True, help="output folder (images, manifest.jsonl, state)")
    run.add_argument(
        "--base-url", help="API base URL [default: $AIMLAPI_BASE_URL or https://api.aimlapi.com]"
    )
    run.add_argument("--api-key-file", type=Path, help="file holding the API key [default: $AIMLAPI_KEY]")
    run.add_argument(
        "--concurrency", type=_positive_int, default=d.concurrency, help="most requests in flight at once"
    )
    run.add_argument(
        "--rpm",
        type=_positive,
        default=d.rpm,
        help="optional hard ceiling, requests per minute, evenly spaced (any 10 s window holds at most "
        "N/6+1); without it the sending rate is learned from 429s and only --concurrency bounds it",
    )
    run.add_argument(
        "--max-retries", type=_whole, default=d.max_retries, help="retries per job after the first try"
    )
    run.add_argument(
        "--retry-budget", type=_whole, default=d.retry_budget, help="run-wide retry tokens (5 a retry)"
    )
    run.add_argument(
        "--timeout", type=_positive, default=d.generation_timeout.total, help="seconds per generation"
    )
    run.add_argument(
        "--connect-timeout", type=_positive, default=d.generation_timeout.connect, help="seconds to connect"
    )
    run.add_argument(
        "--read-timeout",
        type=_positive,
        default=d.generation_timeout.read,
        help="seconds a generation answer may stay silent",
    )
    run.add_argument(
        "--download-read-timeout",
        type=_positive,
        default=d.download_timeout.read,
        help="seconds an image download may stay silent",
    )
    run.add_argument(
        "--download-timeout", type=_positive, default=d.download_timeout.total, help="seconds per image"
    )
    run.add_argument(
        "--max-image-bytes",
        type=_positive_int,
        default=d.max_image_bytes,
        help="largest image accepted, bytes",
    )
    run.add_argument(
        "--max-json-bytes", type=_positive_int, default=d.max_json_bytes, help="largest API answer, bytes"
    )
    run.add_argument(
        "--grace",
        type=_seconds_or_zero,
        default=d.grace,
        help="seconds in-flight requests get after a signal",
    )
    _add_selection(run)
    run.add_argument(
        "--max-usd",
        type=_money,
        metavar="USD",
        help="spend budget of this run in USD (from the API's cost headers): no request is sent that "
        "could pass it; the run then stops resumable (exit 75)",
    )
    run.add_argument("--max-credits", type=_money, metavar="N", help="the same budget in AIML API credits")
    run.add_argument(
        "--max-usd-per-day",
        type=_money_or_off,
        metavar="USD",
        help="a cap kept in the output folder: what all runs into it spend in a UTC day; every later run"
        " respects it without the option (give a new value to change it, `off` to drop it)",
    )
    run.add_argument(
        "--assume-usd",
        type=_money,
        metavar="USD",
        help="with a budget: what one request of a model whose answers carry no readable cost header is"
        " taken to cost (without it such a model stops the run before its second request)",
    )
    run.add_argument("--assume-credits", type=_money, metavar="N", help="the same in credits")
    run.add_argument(
        "--metrics-file",
        type=Path,
        metavar="PATH",
        help="write Prometheus metrics there (node_exporter textfile format: a .prom file in its "
        "--collector.textfile.directory), every 30 s and at the end",
    )
    run.add_argument(
        "--summary-json",
        type=Path,
        metavar="PATH",
        help="write the run's final summary there as JSON, for wrappers",
    )
    run.add_argument(
        "--frozen",
        action="store_true",
        help="do not send jobs whose request changed since their record (they are listed); by default "
        "a changed job is generated anew, its earlier images and record kept",
    )
    run.add_argument(
        "--redo",
        action="append",
        default=[],
        metavar="ID",
        help="generate this job again even if it succeeded (paid; earlier images kept); repeatable",
    )
    run.add_argument("--add-job-file", action="store_true", help=argparse.SUPPRESS)  # no longer needed
    run.add_argument(
        "--parents",
        action="store_true",
        help="create the missing parent folders of --out (a typo is refused)",
    )
    run.add_argument(
        "--ignore-retry-after",
        action="store_true",
        help="start now, clearing a Retry-After wait an earlier run was given (capped at an hour anyway)",
    )
    run.add_argument("--simulate", action="store_true", help="run against the built-in simulator (offline)")
    run.add_argument(
        "--ca-bundle", type=Path, help="CA certificates file for TLS [default: system / $SSL_CERT_FILE]"
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar or progress log lines")
    run.add_argument("--debug", action="store_true", help="log every HTTP request (Authorization redacted)")
    run.set_defaults(handler=_run)


def _add_simulate_server(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    server = commands.add_parser(
        "simulate-server",
        help="serve the simulated API (it prints its URL and API key)",
        formatter_class=_DefaultsShown,
        description="Fault options are probabilities 0..1 per request, except seconds, bytes and limits.",
    )
    server.add_argument("--host", default="127.0.0.1", help="address to listen on")
    server.add_argument("--port", type=_port, default=8000, help="port to listen on (0: any free one)")
    for f in fields(FaultConfig):
        kind = (
            (_probability if f.metadata["help"].startswith("probability") else _seconds_or_zero)
            if isinstance(f.default, float)
            else _whole
        )
        server.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f.name,
            type=kind,
            default=f.default,
            help=f.metadata["help"],
        )
    server.set_defaults(handler=_simulate_server)
