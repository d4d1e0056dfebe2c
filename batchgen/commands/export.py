"""``batchgen export OUT --format webdataset|parquet --to URL``: the succeeded images and their
records as a dataset (:mod:`batchgen.export`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from batchgen.commands import ExitCode
from batchgen.commands.options import add_output_folder, output_of, positive_int
from batchgen.errors import UsageError
from batchgen.store import has_state


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``OUT --format F --to URL [--shard-size N]``."""
    from batchgen.export import FORMATS  # noqa: PLC0415

    add_output_folder(parser, positional=True, help="output of a run")
    parser.add_argument(
        "--format", required=True, choices=FORMATS, help="WebDataset tar shards, or Parquet files"
    )
    parser.add_argument(
        "--to", required=True, help="where the shards go: a local folder or s3://, gs://, az:// URL"
    )
    parser.add_argument("--shard-size", type=positive_int, default=1000, metavar="N", help="images per shard")


def handle(args: argparse.Namespace) -> int:
    """Export, and say how many images and shards (and how many were new)."""
    from batchgen.export import export_dataset  # noqa: PLC0415
    from batchgen.store.location import is_url  # noqa: PLC0415
    from batchgen.store.objects import open_store  # noqa: PLC0415

    where = output_of(args)
    if where.url is None and not has_state(where.root):
        raise UsageError(f"{where.name} holds no batchgen run (nothing to export)")
    to = args.to
    if not is_url(to):
        folder = Path(to).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        to = folder.as_uri()
    done = export_dataset(where.output(), open_store(to), args.format, shard_size=args.shard_size)
    print(
        f"{done.rows} images in {done.shards} {args.format} shard(s) at {args.to}; {done.written} written, "
        f"{done.shards - done.written} already there"
        + (f"; {done.removed} shard(s) of an earlier export removed" if done.removed else "")
    )
    return ExitCode.OK
