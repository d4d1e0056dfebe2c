"""What a run says in its log before anything else, and the warning for requests that may have
been charged without an answer recorded (both with the ids the usage logs settle them by)."""

from __future__ import annotations

import dataclasses
import logging
from importlib.metadata import version
from pathlib import Path

from batchgen.settings import Settings

__all__ = ["log_start", "warn_in_flight"]

log = logging.getLogger("batchgen.run.runner")


def log_start(job_file: Path, out_dir: Path | str, settings: Settings) -> None:
    """The log's first line of a run: what runs, where, and every setting not at its default."""
    default = Settings(api_key="")
    chosen: dict[str, object] = {
        f.name: getattr(settings, f.name)
        for f in dataclasses.fields(Settings)
        if f.name not in ("api_key", "base_url", "selection")
        and getattr(settings, f.name) != getattr(default, f.name)
    }
    selection = settings.selection  # (ids by count: --only-file may name a million)
    chosen["concurrency"] = settings.concurrency
    chosen |= {
        "only": len(selection.only) if selection.only is not None else None,
        "redo": len(selection.redo) or None,
        "retry_failed": ",".join(sorted(selection.retry_failed)) or None,
        "frozen": selection.frozen or None,
    }
    chosen = {k: v for k, v in chosen.items() if v is not None}
    log.info(
        "run started: batchgen %s, job file %s, output %s, API %s; %s",
        version("batchgen"),
        job_file,
        out_dir,
        settings.base_url,
        ", ".join(f"{k}={v}" for k, v in chosen.items()),
    )


def warn_in_flight(jobs: list[tuple[str, list[str]]], what: str) -> None:
    """Say, before anything is sent again, which requests may have been charged without an
    answer recorded, with the X-Client-Request-Ids the usage logs settle them by."""
    if jobs:
        log.warning(
            "%d job(s) %s; each may have been charged once, and a run sends it again. Match the"
            " X-Client-Request-Ids in the API's usage logs (GET /v2/logs): %s",
            len(jobs),
            what,
            "; ".join(f"{job}: {ids[-1]}" for job, ids in jobs[:20] if ids),
        )
