"""``batchgen plan FILE --out DIR``: what ``run`` would send, download and skip, and its cost."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from batchgen.commands import ExitCode
from batchgen.commands.options import add_job_file, add_output_folder, add_selection, output_of, selection_of
from batchgen.plan import make_plan


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``FILE --out DIR [--history DIR] [--json]`` and ``run``'s selection options."""
    add_job_file(parser)
    add_output_folder(parser, help="the output folder `run` would use")
    parser.add_argument(
        "--history",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="another output folder whose recorded costs also count (repeatable)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_selection(parser)


def handle(args: argparse.Namespace) -> int:
    """Print the plan (text or ``--json``); writes nothing."""
    where = output_of(args)
    plan = make_plan(args.file, where.root, history=args.history, selection=selection_of(args))
    plan.out_dir = where.name  # (an object store's URL, not its state folder)
    print(json.dumps(plan.as_json(), indent=2) if args.json else plan.describe())
    return ExitCode.OK
