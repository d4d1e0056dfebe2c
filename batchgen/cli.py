"""The ``batchgen`` command line: find the command, import its module (only that one: see
:mod:`batchgen.commands`), parse, run it, map an error that ends it to an exit code.

Exit codes: see :mod:`batchgen.commands`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import logging
import os
import signal
import sys
from collections.abc import Sequence
from importlib.metadata import version

from batchgen import commands
from batchgen.commands import COMMANDS, ExitCode
from batchgen.errors import BatchgenError, JobFileError, OutputLockedError, UsageError

__all__ = ["ExitCode", "main", "parser"]

log = logging.getLogger("batchgen")

ENDING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
"""Signals that end a session besides ^C: a service manager's stop, a closed terminal or ssh
session. A run stops on them as on ^C (in-flight answers saved); SIGQUIT keeps its default
(a core dump is what it asks for) and is left to the resume's in-flight report."""

_ERROR_CODES: list[tuple[type[BatchgenError], ExitCode]] = [
    (UsageError, ExitCode.INVALID_INPUT),  # (an output folder that can never be written is one)
    (JobFileError, ExitCode.INVALID_INPUT),
    (OutputLockedError, ExitCode.LOCKED),
    (BatchgenError, ExitCode.RESUMABLE),
]
"""The exit code of an error that ends a command, the first that matches."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    _escape_unencodable()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser(argv).parse_args(argv)
    # Until a run installs its own handlers (graceful stop), a signal that ends the session
    # (SIGTERM, or SIGHUP: the terminal closed) is an interruption like ^C.
    ending = [s for s in ENDING_SIGNALS if signal.getsignal(s) is not signal.SIG_IGN]  # (nohup: kept)
    previous = {signum: signal.signal(signum, _interrupt) for signum in ending}
    try:
        code = _dispatch(args)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return _flushed(code)


def parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser for ``argv``: every command listed, the options of the one ``argv`` names
    (its module imported then; the others stay unimported)."""
    top = argparse.ArgumentParser(
        prog="batchgen",
        description="Run batches of image-generation requests against the AIML API; resumable.",
        epilog=_exit_codes(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"batchgen {version('batchgen')}")
    subparsers = top.add_subparsers(required=True, metavar="COMMAND")
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    for name, command in COMMANDS.items():
        if name != chosen:
            subparsers.add_parser(name, help=command.summary)
            continue
        module = importlib.import_module(command.module)
        sub = subparsers.add_parser(
            name,
            help=command.summary,
            description=getattr(module, "DESCRIPTION", None),
            formatter_class=getattr(module, "FORMATTER", argparse.HelpFormatter),
        )
        module.add_arguments(sub)
        sub.set_defaults(handler=module.handle)
    return top


def _exit_codes() -> str:
    doc = commands.__doc__ or ""
    return doc[doc.index("Exit codes:") :] if "Exit codes:" in doc else ""


def _escape_unencodable() -> None:
    """Ids and prompts may hold any character; a terminal whose locale cannot show one gets it
    escaped (``\\u00e9``) rather than a crash (a C locale, ``PYTHONUTF8=0``)."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            with contextlib.suppress(ValueError, OSError):
                stream.reconfigure(errors="backslashreplace")


def _flushed(code: int) -> int:
    """``code``, whatever became of stdout and stderr: a reader that closed the pipe (``| head``)
    or a log on a full disk costs the output nobody could read, never the exit code (Python
    would exit 120 on a failed flush at exit)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
    return code


def _dispatch(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "debug", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        code: int = args.handler(args)
    except BatchgenError as exc:
        print(f"batchgen: {exc}", file=sys.stderr)
        return next(code for kind, code in _ERROR_CODES if isinstance(exc, kind))
    except BrokenPipeError:  # the reader has what it wanted (`status DIR | head -1`)
        return ExitCode.OK
    except KeyboardInterrupt:  # before the run's own signal handling was in place
        print("batchgen: interrupted; run the same command again to resume", file=sys.stderr)
        return ExitCode.RESUMABLE
    except Exception:
        log.exception("internal error; the output folder stays resumable")
        return ExitCode.INTERNAL
    return code


def _interrupt(signum: int, frame: object) -> None:
    del signum, frame
    raise KeyboardInterrupt
