"""``batchgen report DIR``: write the folder's report page."""

from __future__ import annotations

import argparse

from batchgen.commands import ExitCode
from batchgen.commands.options import add_output_folder, recorded_output_of
from batchgen.report import make_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``DIR``."""
    add_output_folder(parser, positional=True, help="output folder of a run")


def handle(args: argparse.Namespace) -> int:
    """Write the report and print where it is (for an object store: made in the state folder,
    then put beside the images as ``report.html``)."""
    where = recorded_output_of(args)
    if where.url is None:
        print(make_report(where.root))
        return ExitCode.OK
    page = make_report(where.root, output=where.output(), name=where.url)
    print(where.path_of(page.name))
    return ExitCode.OK
