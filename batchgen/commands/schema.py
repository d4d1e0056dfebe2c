"""``batchgen schema``: the job file's JSON Schema, for editors."""

from __future__ import annotations

import argparse
import json

from batchgen.commands import ExitCode
from batchgen.jobs.schema import job_file_schema


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``[--jsonl]``."""
    parser.add_argument(
        "--jsonl", action="store_true", help="schema of one JSONL line instead of a YAML file"
    )


def handle(args: argparse.Namespace) -> int:
    """Print the schema."""
    print(json.dumps(job_file_schema(jsonl=args.jsonl), indent=2))
    return ExitCode.OK
