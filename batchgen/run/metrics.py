"""``run --metrics-file PATH``: a Prometheus textfile for monitoring cron runs (what it reports of
requests is counted by :class:`~batchgen.gates.meters.SendMeter`).

The file follows node_exporter's textfile-collector convention (written to a temporary file and
renamed, by ``prometheus_client.write_to_textfile``), at the end of the run and every
:data:`INTERVAL` seconds during it. Every metric is a gauge named ``batchgen_*``:

* ``batchgen_jobs{outcome}``: the folder's jobs by state (succeeded, failed, failed_retryable,
  in_progress, pending), as ``batchgen status`` counts them;
* ``batchgen_run_jobs{outcome}``: this run's jobs by :class:`~batchgen.outcome.Outcome`;
* ``batchgen_run_images``, ``batchgen_run_tokens``, ``batchgen_run_usd``, ``batchgen_run_credits``
  (what this run's answers were charged), ``batchgen_folder_usd``, ``batchgen_folder_credits``
  (every answer of the folder, all runs: the figures ``status`` shows);
* ``batchgen_run_requests``, ``batchgen_run_throttled`` (429s), ``batchgen_run_retries``;
* ``batchgen_sending_rate`` (requests per second; +Inf before any 429),
  ``batchgen_last_success_timestamp_seconds`` (Unix time), ``batchgen_run_duration_seconds``.
"""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from batchgen.gates.meters import SendMeter
from batchgen.outcome import Outcome, Tally
from batchgen.store import StateCounts

__all__ = ["INTERVAL", "write_metrics"]

INTERVAL = 30.0  # seconds between two writes of the metrics file during a run


def write_metrics(
    path: Path, tally: Tally, folder: StateCounts, meter: SendMeter, sending_rate: float
) -> None:
    """Write the metrics file at ``path`` (blocking: call it off the event loop).

    Raises ``OSError`` when it cannot be written.
    """
    registry = CollectorRegistry()

    def gauge(name: str, doc: str, value: float) -> None:
        Gauge(name, doc, registry=registry).set(value)

    jobs = Gauge(
        "batchgen_jobs", "jobs of the output folder by state, all runs", ["outcome"], registry=registry
    )
    for outcome, count in {
        "succeeded": folder.succeeded,
        "failed": folder.failed_final,
        "failed_retryable": folder.failed_retryable,
        "in_progress": folder.in_progress,
        "pending": folder.pending,
    }.items():
        jobs.labels(outcome).set(count)
    run_jobs = Gauge("batchgen_run_jobs", "this run's jobs by outcome", ["outcome"], registry=registry)
    for outcome in Outcome:
        run_jobs.labels(outcome.value).set(getattr(tally, outcome.value))
    gauge("batchgen_run_images", "images saved by this run", tally.images)
    gauge("batchgen_run_tokens", "tokens the API reported for this run's generations", tally.tokens_used)
    gauge(
        "batchgen_run_usd",
        "USD this run's answers were charged (x-aimlapi-usd-spent)",
        float(tally.spent.usd),
    )
    gauge("batchgen_run_credits", "credits this run's answers were charged", float(tally.spent.credits))
    gauge(
        "batchgen_folder_usd",
        "USD every answer of the output folder was charged, all runs",
        float(folder.total_spent.usd),
    )
    gauge("batchgen_folder_credits", "credits of the same", float(folder.total_spent.credits))
    gauge("batchgen_run_requests", "generation requests sent by this run", meter.requests)
    gauge("batchgen_run_throttled", "generation requests answered 429 in this run", meter.throttled)
    gauge("batchgen_run_retries", "generation requests that retried an error", meter.retries)
    gauge("batchgen_sending_rate", "the learned sending rate, requests per second", sending_rate)
    gauge("batchgen_last_success_timestamp_seconds", "when a request last succeeded", meter.last_success or 0)
    gauge("batchgen_run_duration_seconds", "seconds since the run started", time.time() - meter.started)
    write_to_textfile(str(path), registry)
