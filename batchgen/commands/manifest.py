"""``batchgen manifest OUT``: the whole manifest as JSONL, from a local folder or an object store."""

from __future__ import annotations

import argparse
import sys

from batchgen.commands import ExitCode
from batchgen.commands.options import add_output_folder, output_of
from batchgen.errors import UsageError
from batchgen.store import has_state


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``OUT``."""
    add_output_folder(parser, positional=True, help="output of a run")


def handle(args: argparse.Namespace) -> int:
    """Print every record, in order (image paths relative to OUT); a line a live run is still
    writing (no newline yet) is left out."""
    where = output_of(args)
    if where.url is None and not has_state(where.root):
        raise UsageError(f"{where.name} holds no batchgen run (no manifest to print)")
    out = sys.stdout.buffer
    for line in where.output().manifest_lines():
        if line.endswith(b"\n"):
            out.write(line)
    out.flush()
    return ExitCode.OK
