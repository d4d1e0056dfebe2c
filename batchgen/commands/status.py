"""``batchgen status DIR``: what an output folder holds, read without disturbing a live run."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from batchgen.commands import ExitCode
from batchgen.commands.options import add_output_folder, recorded_output_of
from batchgen.commands.text import json_number, some
from batchgen.errors import failure_kind
from batchgen.money import Spend, usd
from batchgen.store import read_status


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``DIR [--json]``."""
    add_output_folder(parser, positional=True, help="output folder of a run")
    parser.add_argument("--json", action="store_true", help="print JSON")


def handle(args: argparse.Namespace) -> int:
    """Print the folder's counts, spend, last run and failures (text or ``--json``)."""
    status = asyncio.run(read_status(recorded_output_of(args).root))
    print(json.dumps(status, indent=2, default=json_number) if args.json else describe(status))
    return ExitCode.OK


def describe(status: dict[str, Any]) -> str:
    """``status`` as lines of text: the scalar fields, then who holds the folder, spend, the
    last run, and the jobs in flight or failed."""
    hidden = ("running_pid", "failed_jobs_not_shown", "not_in_job_file", "workers")
    shown = {k: v for k, v in status.items() if k not in hidden}
    lines = [f"{k}: {v}" for k, v in shown.items() if not isinstance(v, dict | list) and v is not None]
    pid = status["running_pid"]
    workers = status["workers"]
    if workers:
        for w in workers:
            how = (
                "alive"
                if w["alive"]
                else f"ended {w['ended_at']}"
                if w["ended_at"]
                else "dead (lease ran out)"
            )
            lines.append(
                f"worker {w['worker_id']} (pid {w['pid']} on {w['host']}): {how};"
                f" last heartbeat {w['beat_at']}, lease until {w['until']};"
                f" {w['claims']} unfinished job(s) claimed"
            )
    else:
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
            f" {some(status['not_in_job_file_ids'])}"
        )
    last = status["last_run"]
    if last:
        how = (
            f"stopped ({last['stop_reason']}): {last['stop_message']}" if last["stop_reason"] else "finished"
        )
        lines.append(f"last run, ended {last['ended_at']}: {how}")
    for job in status["in_flight_of_a_dead_run"]:
        ids = " ".join(job["client_request_ids"][-1:])
        again = "run --resend-possibly-billed sends it again" if workers else "a resume sends it again"
        lines.append(
            f"in flight when a run died (possibly billed; {again}): {job['id']} (X-Client-Request-Id {ids})"
        )
    for job in status["failed_jobs"]:
        again = "retried on resume" if job["retried_on_resume"] else "failed for good"
        kind = failure_kind(job["kind"])  # (the name --retry-failed takes)
        lines.append(f"failed: {job['id']} [{kind}, {again}] {job['message']}")
    if status["failed_jobs_not_shown"]:
        lines.append(f"... and {status['failed_jobs_not_shown']} more failed jobs")
    return "\n".join(lines)
