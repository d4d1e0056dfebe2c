"""``batchgen report DIR``: write the folder's report page."""

from __future__ import annotations

import argparse

from batchgen.commands import ExitCode
from batchgen.commands.options import add_output_folder
from batchgen.report import make_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``DIR``."""
    add_output_folder(parser, positional=True, help="output folder of a run")


def handle(args: argparse.Namespace) -> int:
    """Write the report and print where it is."""
    print(make_report(args.dir))
    return ExitCode.OK
