"""``batchgen failed DIR``: the failed jobs as a JSONL job file, to edit and run again."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from batchgen.commands import ExitCode
from batchgen.commands.options import add_output_folder, recorded_output_of
from batchgen.commands.text import some
from batchgen.store import failed_records


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``DIR``."""
    add_output_folder(parser, positional=True, help="output folder of a run")


def handle(args: argparse.Namespace) -> int:
    """Print one job line per failed job (its id and recorded request) on stdout."""
    records = asyncio.run(failed_records(recorded_output_of(args).root))
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
            f"give the inline (data:) images of these again before running them: {some(inline)}",
            file=sys.stderr,
        )
    if unknown:
        print(f"their records do not keep the request (an older release): {some(unknown)}", file=sys.stderr)
    return ExitCode.OK
