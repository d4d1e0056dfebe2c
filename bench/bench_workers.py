"""Issue 22's figures: N workers (``batchgen run ... --state postgresql://...`` processes) of one
run against ``batchgen simulate-server`` in its own process, a private PostgreSQL
(``tests/pg_server.py``) on a unix socket.

    python bench/bench_workers.py [--jobs 600] [--workers 1,2,4] [--limit 5] [--latency 1]
                                  [--free-jobs 2000] [--free-latency 0.05]

Per setting: wall seconds, POSTs, the share answered 429, generations per second from the first
POST to the last as a share of the limit (``admitted``), the busiest 10 s window, the workers'
CPU seconds per job (sum), and the database's load per job (transactions committed and rows
written, from ``pg_stat_database``). Every job must end with one succeeded record.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import KEY, batchgen, server, stats, write_jobs

HERE = Path(__file__).resolve().parent
LOGS = Path(tempfile.gettempdir())  # each worker's log: <tmp>/w<N>-limit|free-<ns>-<i>.log
sys.path.insert(0, str(HERE.parent / "tests"))
from pg_server import PrivatePostgres  # noqa: E402


def database_load(url: str) -> tuple[int, int]:
    """(transactions committed, rows inserted + updated + deleted) of the database so far."""
    import psycopg  # noqa: PLC0415

    with psycopg.connect(url, autocommit=True) as db:
        db.execute("SELECT pg_stat_force_next_flush()")
        row = db.execute(
            "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted FROM pg_stat_database"
            " WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def run(
    pg: PrivatePostgres,
    work: Path,
    *,
    jobs: int,
    workers: int,
    limit: float | None,
    latency: float,
    extra: list[str],
) -> dict[str, object]:
    """One run of ``jobs`` jobs by ``workers`` workers; its figures."""
    options = ["--latency", str(latency)]
    if limit:
        options += ["--rpm-limit", f"{limit:g}", "--limit-window", "1"]
    database = pg.new_database()
    name = f"w{workers}-{'limit' if limit else 'free'}-{time.monotonic_ns()}"
    job_file = write_jobs(work / f"{name}.jsonl", jobs, b64_every=0)
    out = work / name
    with server(*options) as url:
        before = database_load(database)
        started = time.monotonic()
        line = batchgen(job_file, out, url, "--state", database, "--concurrency", "16", "--max-retries", "30",
                        *extra)  # fmt: skip
        logs = [(LOGS / f"{name}-{i}.log").open("wb") for i in range(workers)]
        procs = [
            subprocess.Popen(
                line, env={**os.environ, "AIMLAPI_KEY": KEY}, stdout=subprocess.DEVNULL, stderr=log
            )
            for log in logs
        ]
        cpu, codes = 0.0, []
        for proc, log in zip(procs, logs, strict=True):
            _, status, usage = os.wait4(proc.pid, 0)
            codes.append(os.waitstatus_to_exitcode(status))
            cpu += usage.ru_utime + usage.ru_stime
            log.close()
        wall = time.monotonic() - started
        seen = stats(url)
        after = database_load(database)
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    succeeded = {r["job_id"] for r in records if r["status"] == "succeeded"}
    refused = int(seen["statuses"].get("429", 0))
    figures: dict[str, object] = {
        "exit": codes,
        "seconds": round(wall, 2),
        "jobs/s": round(jobs / wall, 2),
        "posts": seen["posts"],
        "429 share": round(refused / max(seen["posts"], 1), 3),
        "peak 10 s": seen["peak_10s"],
        "cpu ms/job": round(cpu / jobs * 1000, 2),
        "db commits/job": round((after[0] - before[0]) / jobs, 1),
        "db rows/job": round((after[1] - before[1]) / jobs, 1),
        "records": len(records),
        "succeeded": len(succeeded),
    }
    if limit and seen["post_span"]:
        figures["admitted"] = round(seen["generations"] / seen["post_span"] / limit, 3)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=600)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--limit", type=float, default=5.0, help="requests per sliding second (0: none)")
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--free-jobs", type=int, default=2000, help="jobs of the runs without a limit")
    parser.add_argument(
        "--free-latency", type=float, default=0.05, help="seconds per generation without a limit"
    )
    parser.add_argument("--extra", default="", help="more batchgen options, space-separated")
    args = parser.parse_args()
    common: dict[str, Any] = {"latency": args.latency, "extra": args.extra.split()}
    with PrivatePostgres.started() as pg, tempfile.TemporaryDirectory() as tmp:
        for workers in [int(w) for w in args.workers.split(",")]:
            if args.limit:
                figures = run(pg, Path(tmp), jobs=args.jobs, workers=workers, limit=args.limit, **common)
                print(f"{workers} worker(s), limit {args.limit}/s:", json.dumps(figures), flush=True)
            if args.free_jobs:
                free = common | {"latency": args.free_latency}
                figures = run(pg, Path(tmp), jobs=args.free_jobs, workers=workers, limit=None, **free)
                print(f"{workers} worker(s), no limit:", json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
