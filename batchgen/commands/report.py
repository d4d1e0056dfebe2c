"""``batchgen report DIR``: write the folder's report page."""

from __future__ import annotations

import argparse

from batchgen.commands import ExitCode
from batchgen.commands.options import add_output_folder, output_of
from batchgen.report import make_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``DIR``."""
    add_output_folder(parser, positional=True, help="output folder of a run")


def handle(args: argparse.Namespace) -> int:
    """Write the report and print where it is (for an object store: made in the state folder,
    then put beside the images as ``report.html``)."""
    where = output_of(args)
    page = make_report(where.root)
    if where.url:
        where.output().put_file(page.name, page.read_bytes())
        print(where.path_of(page.name))
    else:
        print(page)
    return ExitCode.OK
