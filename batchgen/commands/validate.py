"""``batchgen validate FILE``: check a job file; send nothing."""

from __future__ import annotations

import argparse
import json
import sys

from batchgen.commands import ExitCode
from batchgen.commands.options import add_job_file
from batchgen.jobs.load import iter_jobs, scan_job_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``FILE [--show-bodies]``."""
    add_job_file(parser)
    parser.add_argument(
        "--show-bodies",
        action="store_true",
        help="print each job's request as it will be sent (defaults merged; local images by path, sent as"
        " data: URIs), one JSON line per job: what will be paid for",
    )


def handle(args: argparse.Namespace) -> int:
    """Print the count of valid jobs per model (raises :class:`~batchgen.errors.JobFileError`)."""
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
