"""``batchgen verify DIR``: check every recorded image (exists, size, SHA-256)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from batchgen.commands import ExitCode
from batchgen.commands.options import add_output_folder, recorded_output_of
from batchgen.store import verify_folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``DIR``."""
    add_output_folder(parser, positional=True, help="output folder of a run")


def handle(args: argparse.Namespace) -> int:
    """Print each image that is not as recorded; exit 1 if any."""
    where = recorded_output_of(args)
    checked, problems = asyncio.run(verify_folder(where.root, output=where.output() if where.url else None))
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
