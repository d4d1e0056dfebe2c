"""How a run ended, for people and wrappers: its exit code, the summary lines on stderr, and
``--summary-json``."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

from batchgen.commands import ExitCode
from batchgen.commands.text import some
from batchgen.money import Spend
from batchgen.outcome import Outcome, StopReason
from batchgen.run.runner import RunReport
from batchgen.store.location import OutputLocation

__all__ = ["describe", "exit_code", "write_summary"]


def exit_code(report: RunReport) -> ExitCode:
    """The exit code of a run (see :mod:`batchgen.commands`)."""
    if report.stop_reason is StopReason.BAD_KEY:
        return ExitCode.BAD_KEY
    if report.crashed:
        return ExitCode.INTERNAL
    if report.stop_reason is not None or report.tally.failed_retryable or report.tally.not_reached:
        return ExitCode.RESUMABLE
    if report.tally.failed_final or report.tally.changed_frozen or report.tally.possibly_billed:
        return ExitCode.JOBS_FAILED
    return ExitCode.OK


def write_summary(path: Path, report: RunReport, out: OutputLocation, code: int) -> None:
    """``--summary-json``: the run's summary for wrappers, written whole (temporary file, rename).
    Money: ``usd``/``credits`` this run's answers, ``folder_usd``/``folder_credits`` every
    answer the folder recorded, all runs (exact sums, as ``status`` shows them). A file that
    cannot be written is said on stderr, never a change of the exit code."""
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
        "manifest": out.manifest,
    }
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        temporary.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            print(f"batchgen: cannot write --summary-json {path}: {exc.strerror or exc}", file=sys.stderr)


def describe(report: RunReport, out: OutputLocation) -> str:
    """The run's summary as lines of text: counts, money, then each list worth a look."""
    t = report.tally
    lines = [
        f"{report.total} jobs: {t.succeeded} succeeded now, {t.already_done} earlier, "
        f"{t.failed_final} failed for good, {t.failed_retryable} failed (retried on resume), "
        f"{t.not_reached} not reached; {t.tokens_used:.0f} tokens used. Manifest: {out.manifest}"
    ]
    if report.folder is not None and (t.spent or report.folder.spent):
        total = report.folder.total_spent
        by_model = ", ".join(f"{model} {s.describe()}" for model, s in report.folder.spent.items())
        lines.append(
            f"spent this run: {t.spent.describe()}; in this folder, all runs: {total.describe()} ({by_model})"
        )
    if t.other_worker:
        lines.append(f"{t.other_worker} job(s) were done by the run's other workers")
    if report.possibly_billed:
        shown = _with_ids(report.possibly_billed)
        lines.append(
            f"{len(report.possibly_billed)} job(s) were left sent by a worker that died, each possibly"
            f" charged once: not sent again. Match them in the usage logs (GET /v2/logs), then run with"
            f" --resend-possibly-billed to send them: {shown}"
        )
    if report.in_flight_before:
        lines.append(
            f"{len(report.in_flight_before)} job(s) were in flight when an earlier run stopped"
            " (each possibly charged once)"
        )
    if report.cancelled:
        shown = _with_ids(report.cancelled)
        lines.append(
            f"{len(report.cancelled)} request(s) cancelled in flight, each possibly charged once; the next"
            f" run sends them again (match them in the usage logs, GET /v2/logs): {shown}"
        )
    if report.folder is not None and report.folder.not_in_file:
        lines.append(
            f"{report.folder.not_in_file_count} job(s) of this folder are not in the job file (their records"
            f" stay): {some(report.folder.not_in_file)}"
        )
    if report.crashed:
        lines.append(
            f"{len(report.crashed)} job(s) failed on an unexpected error (a bug, please report it with the"
            f" log): {some(report.crashed)}; recorded as failed (kind internal), skipped unless"
            " --retry-failed"
        )
    lists = [
        (report.changed, "changed since their record and were sent anew"),
        (report.frozen, "changed since their record, not sent (--frozen)"),
        (report.redone, "generated again (--redo)"),
        (report.restored, "had missing images fetched again"),
        (
            report.missing,
            "have missing images that could not be fetched again (`--redo ID` generates them again, paid)",
        ),
    ]
    lines += [f"{len(ids)} job(s) {what}: {some(ids)}" for ids, what in lists if ids]
    if report.stop_reason is not None:
        lines.append(f"stopped ({report.stop_reason}): {report.stop_message}")
        lines.append(report.stop_advice)
    return "\n".join(lines)


def _with_ids(jobs: list[tuple[str, list[str]]]) -> str:
    """The first ten ``(job, X-Client-Request-Ids)`` as text, each with its last request's id."""
    return "; ".join(f"{job} (X-Client-Request-Id {ids[-1]})" for job, ids in jobs[:10] if ids)
