"""The commands of ``batchgen``, one module each, in a registry (pip's ``commands/__init__.py``).

A command module defines ``add_arguments(parser)`` and ``handle(args) -> int`` (an
:class:`ExitCode`). :mod:`batchgen.cli` imports only the module of the command being run, so
commands that send nothing (``validate``, ``plan``, ``status``, ``verify``, ``report``,
``failed``, ``manifest``, ``export``, ``schema``) start without aiohttp.

Exit codes:
  0   every job of the file has succeeded (in this run or earlier ones)
  1   some jobs failed for good (content violation, body rejected; see the manifest), or
      jobs whose request changed were left unsent by --frozen (they are listed), or a
      worker that died left jobs sent (possibly billed: --resend-possibly-billed)
  2   invalid job file or command line, or an output folder that can never be written
      (read-only, not a folder, a missing parent without --parents); nothing was sent
  70  internal error (a bug: please report it with the log); a job it hit is recorded as
      failed (kind internal) and the other jobs still ran
  73  the output folder is locked by another live run; nothing was sent
  75  stopped, resume me (EX_TEMPFAIL): signal (INT, TERM, HUP), out of credits (403),
      hourly limit or a long Retry-After, retry budget exhausted, spend budget reached
      (--max-usd, --max-credits, --max-usd-per-day) or --max-requests sent, disk full, the
      job file edited during the run, the base URL not the API's, or jobs left that failed
      transiently
  77  the API key was refused (401): fix AIMLAPI_KEY / --api-key-file, then resume
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

__all__ = ["COMMANDS", "Command", "ExitCode"]


class ExitCode(IntEnum):
    """Process exit codes (see the module docstring); 73, 75 and 77 follow sysexits.h."""

    OK = 0
    JOBS_FAILED = 1
    INVALID_INPUT = 2
    INTERNAL = 70
    LOCKED = 73
    RESUMABLE = 75
    BAD_KEY = 77


@dataclass(frozen=True, slots=True)
class Command:
    """A command: the module that implements it and its one-line summary for ``--help``."""

    module: str
    summary: str


COMMANDS: dict[str, Command] = {
    "run": Command("batchgen.commands.run", "run a job file into an output folder (run again to resume)"),
    "validate": Command("batchgen.commands.validate", "check a job file; send nothing"),
    "plan": Command(
        "batchgen.commands.plan",
        "what `run` would send, download and skip, and what it would cost; send and write nothing",
    ),
    "status": Command("batchgen.commands.status", "succeeded / failed / pending counts of an output folder"),
    "verify": Command(
        "batchgen.commands.verify",
        "check every recorded image of an output folder (exists, size, SHA-256); exit 1 if any is not",
    ),
    "report": Command(
        "batchgen.commands.report",
        "write DIR/report.html: every job's images, prompt, parameters, status and cost",
    ),
    "failed": Command(
        "batchgen.commands.failed",
        "print the failed jobs of an output folder as a JSONL job file, to edit and run again",
    ),
    "manifest": Command(
        "batchgen.commands.manifest",
        "print the whole manifest of an output (local or object store) as JSONL, every record in order",
    ),
    "export": Command(
        "batchgen.commands.export",
        "write the succeeded images and their records as a dataset: WebDataset tar shards or Parquet",
    ),
    "schema": Command("batchgen.commands.schema", "print the job file's JSON Schema (for editors)"),
    "models": Command(
        "batchgen.commands.models",
        "the API's image models: ids, required fields, image inputs; `models ID`: its fields",
    ),
    "simulate-server": Command(
        "batchgen.commands.simulate_server", "serve the simulated API (it prints its URL and API key)"
    ),
}
"""Every command by name, in ``--help`` order."""
