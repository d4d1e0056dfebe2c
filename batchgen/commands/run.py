"""``batchgen run FILE --out DIR``: run a job file into an output folder (run again to resume)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import sys
from decimal import Decimal
from pathlib import Path

from batchgen.commands.options import (
    DefaultsShown,
    add_job_file,
    add_output_folder,
    add_selection,
    money,
    money_or_off,
    output_of,
    positive,
    positive_int,
    seconds_or_zero,
    selection_of,
    whole,
)
from batchgen.commands.run_summary import describe, exit_code, write_summary
from batchgen.money import Spend
from batchgen.run.runner import RunReport, run_batch
from batchgen.settings import Settings, Timeouts, load_api_key, resolve_base_url
from batchgen.store.location import OutputLocation

FORMATTER = DefaultsShown
log = logging.getLogger("batchgen")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``FILE --out DIR`` and every run option, with :class:`Settings`' defaults shown."""
    d = Settings(api_key="")
    add_job_file(parser)
    add_output_folder(parser, help="output folder (images, manifest.jsonl, state)")
    parser.add_argument(
        "--base-url", help="API base URL [default: $AIMLAPI_BASE_URL or https://api.aimlapi.com]"
    )
    parser.add_argument("--api-key-file", type=Path, help="file holding the API key [default: $AIMLAPI_KEY]")
    parser.add_argument(
        "--concurrency", type=positive_int, default=d.concurrency, help="most requests in flight at once"
    )
    parser.add_argument(
        "--rpm",
        type=positive,
        default=d.rpm,
        help="optional hard ceiling, requests per minute, evenly spaced (any 10 s window holds at most "
        "N/6+1); without it the sending rate is learned from 429s and only --concurrency bounds it",
    )
    parser.add_argument(
        "--max-retries", type=whole, default=d.max_retries, help="retries per job after the first try"
    )
    parser.add_argument(
        "--retry-budget", type=whole, default=d.retry_budget, help="run-wide retry tokens (5 a retry)"
    )
    parser.add_argument(
        "--timeout", type=positive, default=d.generation_timeout.total, help="seconds per generation"
    )
    parser.add_argument(
        "--connect-timeout", type=positive, default=d.generation_timeout.connect, help="seconds to connect"
    )
    parser.add_argument(
        "--read-timeout",
        type=positive,
        default=d.generation_timeout.read,
        help="seconds a generation answer may stay silent",
    )
    parser.add_argument(
        "--download-read-timeout",
        type=positive,
        default=d.download_timeout.read,
        help="seconds an image download may stay silent",
    )
    parser.add_argument(
        "--download-timeout", type=positive, default=d.download_timeout.total, help="seconds per image"
    )
    parser.add_argument(
        "--max-image-bytes",
        type=positive_int,
        default=d.max_image_bytes,
        help="largest image accepted, bytes",
    )
    parser.add_argument(
        "--max-json-bytes", type=positive_int, default=d.max_json_bytes, help="largest API answer, bytes"
    )
    parser.add_argument(
        "--grace", type=seconds_or_zero, default=d.grace, help="seconds in-flight requests get after a signal"
    )
    add_selection(parser)
    parser.add_argument(
        "--max-usd",
        type=money,
        metavar="USD",
        help="spend budget of this run in USD (from the API's cost headers): no request is sent that "
        "could pass it; the run then stops resumable (exit 75)",
    )
    parser.add_argument("--max-credits", type=money, metavar="N", help="the same budget in AIML API credits")
    parser.add_argument(
        "--max-requests",
        type=positive_int,
        metavar="N",
        help="send at most N generation requests in this run (retries count); the run then stops"
        " resumable (exit 75)",
    )
    parser.add_argument(
        "--max-usd-per-day",
        type=money_or_off,
        metavar="USD",
        help="a cap kept in the output folder: what all runs into it spend in a UTC day; every later run"
        " respects it without the option (give a new value to change it, `off` to drop it)",
    )
    parser.add_argument(
        "--assume-usd",
        type=money,
        metavar="USD",
        help="with a budget: what one request of a model whose answers carry no readable cost header is"
        " taken to cost (without it such a model stops the run before its second request)",
    )
    parser.add_argument("--assume-credits", type=money, metavar="N", help="the same in credits")
    parser.add_argument(
        "--metrics-file",
        type=Path,
        metavar="PATH",
        help="write Prometheus metrics there (node_exporter textfile format: a .prom file in its "
        "--collector.textfile.directory), every 30 s and at the end",
    )
    parser.add_argument(
        "--summary-json",
        type=Path,
        metavar="PATH",
        help="write the run's final summary there as JSON, for wrappers",
    )
    parser.add_argument("--add-job-file", action="store_true", help=argparse.SUPPRESS)  # no longer needed
    parser.add_argument(
        "--parents",
        action="store_true",
        help="create the missing parent folders of --out (a typo is refused)",
    )
    parser.add_argument(
        "--ignore-retry-after",
        action="store_true",
        help="start now, clearing a Retry-After wait an earlier run was given (capped at an hour anyway)",
    )
    parser.add_argument(
        "--worker-lease",
        type=positive,
        default=d.worker_lease,
        metavar="SECONDS",
        help="with --state postgresql://...: seconds a worker's unsent jobs stay its own after its last"
        " heartbeat (one every SECONDS/6); then the run's other workers take them over",
    )
    parser.add_argument(
        "--resend-possibly-billed",
        action="store_true",
        help="with --state postgresql://...: send again the jobs a worker that died had sent (each possibly"
        " charged once; `status` lists them with their X-Client-Request-Ids for the usage logs)",
    )
    parser.add_argument(
        "--simulate", action="store_true", help="run against the built-in simulator (offline)"
    )
    parser.add_argument(
        "--ca-bundle", type=Path, help="CA certificates file for TLS [default: system / $SSL_CERT_FILE]"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar or progress log lines")
    parser.add_argument(
        "--debug", action="store_true", help="log every HTTP request (Authorization redacted)"
    )


def settings_of(args: argparse.Namespace) -> Settings:
    """The run's :class:`Settings` from its options and the environment (the API key, the base
    URL). Raises :class:`~batchgen.errors.UsageError` for a key or URL that cannot be used."""
    from batchgen.simulator import SIMULATOR_KEY  # noqa: PLC0415 - only --simulate needs it

    return Settings(
        api_key=SIMULATOR_KEY if args.simulate else load_api_key(args.api_key_file),
        # With --simulate, the simulator's own URL replaces this once it listens.
        base_url="http://127.0.0.1" if args.simulate else resolve_base_url(args.base_url),
        concurrency=args.concurrency,
        rpm=args.rpm,
        max_retries=args.max_retries,
        retry_budget=args.retry_budget,
        generation_timeout=Timeouts(connect=args.connect_timeout, read=args.read_timeout, total=args.timeout),
        download_timeout=Timeouts(
            connect=args.connect_timeout, read=args.download_read_timeout, total=args.download_timeout
        ),
        max_json_bytes=args.max_json_bytes,
        max_image_bytes=args.max_image_bytes,
        grace=args.grace,
        selection=selection_of(args),
        max_usd=args.max_usd,
        max_credits=args.max_credits,
        max_requests=args.max_requests,
        max_usd_per_day=args.max_usd_per_day,
        assumed_cost=(
            Spend(args.assume_usd or Decimal(0), args.assume_credits or Decimal(0))
            if args.assume_usd is not None or args.assume_credits is not None
            else None
        ),
        ignore_retry_after=args.ignore_retry_after,
        create_parents=args.parents,
        metrics_file=args.metrics_file,
        ca_bundle=args.ca_bundle,
        debug_http=args.debug,
        worker_lease=args.worker_lease,
        resend_possibly_billed=args.resend_possibly_billed,
    )


def handle(args: argparse.Namespace) -> int:
    """Run, write ``--summary-json``, print the summary; the exit code says what to do next."""
    where = output_of(args)
    report = asyncio.run(_run(args, settings_of(args), where))
    code = exit_code(report)
    # Files first, words last: a closed stderr (`| head`) must not cost the summary.
    if args.summary_json is not None:
        write_summary(args.summary_json, report, where, code)
    with contextlib.suppress(OSError):  # the exit code is the run's, whatever stderr is
        print(describe(report, where), file=sys.stderr)
    return code


async def _run(args: argparse.Namespace, settings: Settings, where: OutputLocation) -> RunReport:
    progress = not args.no_progress
    if not args.simulate:
        return await run_batch(args.file, where.root, settings, progress=progress, backends=where.backends())
    from batchgen.simulator import start_simulator  # noqa: PLC0415 - only --simulate needs it

    simulator = await start_simulator()
    try:
        settings = dataclasses.replace(settings, base_url=simulator.url)
        log.info("simulated API at %s (no key needed, nothing is billed)", simulator.url)
        return await run_batch(args.file, where.root, settings, progress=progress, backends=where.backends())
    finally:
        await simulator.close()
