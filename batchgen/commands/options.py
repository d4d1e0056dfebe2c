"""Options and option types shared by commands, each defined once: the job file and output
folder, the :class:`~batchgen.settings.Selection` options ``run`` and ``plan`` share, and the
number, money and port types that turn a bad value into argparse's exit 2 naming the option."""

from __future__ import annotations

import argparse
import math
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING

from batchgen.errors import FAILURE_KINDS, UsageError
from batchgen.settings import Selection

if TYPE_CHECKING:
    from batchgen.store.location import OutputLocation

__all__ = [
    "DefaultsShown",
    "add_job_file",
    "add_output_folder",
    "add_selection",
    "money",
    "money_or_off",
    "output_of",
    "port",
    "positive",
    "positive_int",
    "probability",
    "recorded_output_of",
    "seconds_or_zero",
    "selection_of",
    "whole",
]

MOST_MONEY = 10**12  # USD or credits: a larger budget is a typo


def add_job_file(parser: argparse.ArgumentParser) -> None:
    """The job file, a positional ``file``."""
    parser.add_argument("file", type=Path, help="job file (.yaml/.yml, .json or .jsonl)")


def add_output_folder(parser: argparse.ArgumentParser, *, positional: bool = False, help: str) -> None:
    """The output: ``--out`` (required) or, for commands that read one, a positional ``dir``; a
    local folder or an object-store URL, and ``--state`` (read back by :func:`output_of`)."""
    help += " (a local folder, or s3://BUCKET/PREFIX, gs://..., az://...)"
    if positional:
        parser.add_argument("dir", help=help)
    else:
        parser.add_argument("--out", required=True, help=help)
    parser.add_argument(
        "--state",
        metavar="DIR|URL",
        help="where the write-ahead state lives: postgresql://... (a database), or a local folder for an "
        "object-store output [default: beside a local output; for an object store "
        "$XDG_STATE_HOME/batchgen/<scheme>-<bucket>-<hash of the URL>]",
    )


def recorded_output_of(args: argparse.Namespace) -> OutputLocation:
    """:func:`output_of` for commands that read what runs recorded: an object-store output
    whose state is not on this host is refused with what to do
    (:class:`~batchgen.errors.UsageError`)."""
    from batchgen.store import has_state  # noqa: PLC0415

    where = output_of(args)
    if where.url is not None and where.database is None and not has_state(where.root):
        raise UsageError(
            f"{where.name} has no state on this host (looked in {where.root}): run the same `batchgen run ..."
            f" --out {where.name}` here first (it rebuilds the state from the manifest parts and pays for"
            " nothing they record), or give --state the folder of the host that ran it"
        )
    return where


def output_of(args: argparse.Namespace) -> OutputLocation:
    """The output the options name (see :func:`add_output_folder`). Raises
    :class:`~batchgen.errors.UsageError` for ``--state`` with a local folder."""
    from batchgen.store.location import locate  # noqa: PLC0415 - only commands with an output need it

    return locate(getattr(args, "out", None) or args.dir, args.state)


def add_selection(parser: argparse.ArgumentParser) -> None:
    """Which jobs to send besides those with work left (``run``, and ``plan`` which shows what
    ``run`` would do): read back by :func:`selection_of`."""
    kinds = ", ".join(sorted(set(FAILURE_KINDS.values())))
    parser.add_argument(
        "--retry-failed",
        nargs="?",
        const=frozenset({"all"}),
        default=frozenset(),
        type=_failure_kinds,
        metavar="KINDS",
        help=f"also send jobs that failed for good: of these kinds (comma-separated: {kinds}), or without "
        "KINDS every kind but violation (content violations are sent again only when named: paid)",
    )
    parser.add_argument(
        "--only", action="append", default=None, metavar="ID", help="run just this job (repeatable)"
    )
    parser.add_argument(
        "--only-file", type=Path, metavar="F", help="run just the jobs whose ids F lists, one per line"
    )
    parser.add_argument(
        "--frozen",
        action="store_true",
        help="do not send jobs whose request changed since their record (they are listed); by default "
        "a changed job is generated anew, its earlier images and record kept",
    )
    parser.add_argument(
        "--redo",
        action="append",
        default=[],
        metavar="ID",
        help="generate this job again even if it succeeded (paid; earlier images kept); repeatable",
    )


def selection_of(args: argparse.Namespace) -> Selection:
    """The :class:`Selection` the options of :func:`add_selection` name. Raises
    :class:`UsageError` when ``--only-file`` cannot be read."""
    return Selection(
        only=_only(args), redo=frozenset(args.redo), retry_failed=args.retry_failed, frozen=args.frozen
    )


def _only(args: argparse.Namespace) -> frozenset[str] | None:
    """The job ids of --only and --only-file, or None for every job."""
    if args.only is None and args.only_file is None:
        return None
    ids = set(args.only or [])
    if args.only_file is not None:
        try:
            text = args.only_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read --only-file {args.only_file}: {exc}") from exc
        ids.update(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))
    return frozenset(ids)


def _failure_kinds(text: str) -> frozenset[str]:
    kinds = frozenset(k.strip().lower() for k in text.split(",") if k.strip())
    unknown = kinds - set(FAILURE_KINDS.values()) - {"all"}
    if unknown or not kinds:
        choices = ", ".join(sorted({*FAILURE_KINDS.values(), "all"}))
        named = ", ".join(sorted(unknown)) or repr(text)
        raise argparse.ArgumentTypeError(f"unknown kind(s) {named}; choose from {choices}")
    return kinds


def _number(text: str, *, integer: bool, least: float, strict: bool) -> float:
    """An option's number: finite and at least (``strict``: above) ``least``; argparse's error
    (exit 2, naming the option) otherwise."""
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not {'a whole number' if integer else 'a number'}"
        ) from None
    if not math.isfinite(value) or value < least or (strict and value == least):
        bound = f"{'above' if strict else 'at least'} {least:g}"
        raise argparse.ArgumentTypeError(f"{text!r} is out of range: it must be finite and {bound}")
    return value


def positive(text: str) -> float:
    """Seconds or a rate: finite and above 0."""
    return _number(text, integer=False, least=0, strict=True)


def seconds_or_zero(text: str) -> float:
    """Seconds: finite and at least 0."""
    return _number(text, integer=False, least=0, strict=False)


def positive_int(text: str) -> int:
    """A count or a size: a whole number of at least 1."""
    return int(_number(text, integer=True, least=1, strict=False))


def whole(text: str) -> int:
    """A count that may be 0."""
    return int(_number(text, integer=True, least=0, strict=False))


def money(text: str) -> Decimal:
    """An amount of money: an exact decimal, finite, 0 to :data:`MOST_MONEY`."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not an amount") from None
    if not value.is_finite() or value < 0 or value > MOST_MONEY:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range: an amount is 0 to {MOST_MONEY:,}")
    return value


def money_or_off(text: str) -> Decimal | str:
    """``--max-usd-per-day``: an amount, or ``off``."""
    return "off" if text.strip().lower() == "off" else money(text)


def port(text: str) -> int:
    """A TCP port: 0 (any free one) to 65535."""
    value = whole(text)
    if value > 65535:  # noqa: PLR2004
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (0 to 65535)")
    return value


def probability(text: str) -> float:
    """A probability: 0 to 1."""
    value = _number(text, integer=False, least=0, strict=False)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range: a probability is 0 to 1")
    return value


class DefaultsShown(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default only when it has one worth reading (no "(default: None)")."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, [], frozenset()) or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)
