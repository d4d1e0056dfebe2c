"""Object store against local folder: ``--jobs`` jobs run into a moto S3 server (its own process,
on 127.0.0.1) and into a local folder, alternating, each against one ``simulate-server
--image-pool 8`` process. For each: jobs/s, CPU seconds per job and peak RSS of the batchgen
process; then the same into S3 with a quarter of the jobs, to show memory flat in the number
of jobs.

    python bench/bench_store.py --jobs 2000 --pairs 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from harness import batchgen, server, timed, write_jobs

MOTO = """
import sys, boto3
from moto.server import ThreadedMotoServer
s = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False); s.start()
host, port = s.get_host_and_port()
url = f"http://{host}:{port}"
boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="x",
             aws_secret_access_key="x").create_bucket(Bucket="bench-bucket")
print(url, flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def moto() -> Iterator[str]:
    """A moto S3 server in its own process, with the bucket ``bench-bucket``; its endpoint URL."""
    proc = subprocess.Popen(
        [sys.executable, "-c", MOTO], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        yield proc.stdout.readline().decode().strip()
    finally:
        proc.stdin.close()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    figures: dict[str, list[tuple[float, float, float]]] = {"local": [], "s3": [], "s3-quarter": []}
    with tempfile.TemporaryDirectory() as tmp, server("--image-pool", "8") as url, moto() as endpoint:
        env = {
            "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true", "XDG_STATE_HOME": f"{tmp}/state",
        }  # fmt: skip
        jobs = write_jobs(Path(tmp) / "jobs.jsonl", args.jobs)
        quarter = write_jobs(Path(tmp) / "quarter.jsonl", args.jobs // 4)
        options = ("--concurrency", str(args.concurrency))
        for pair in range(args.pairs):
            order = ("local", "s3") if pair % 2 == 0 else ("s3", "local")
            for side in order:
                out = f"{tmp}/local-{pair}" if side == "local" else f"s3://bench-bucket/run-{pair}"
                run = timed(batchgen(jobs, out, url, *options), env)  # type: ignore[arg-type]
                assert run.code == 0, run.stderr[-800:]
                figures[side].append((args.jobs / run.wall, run.cpu / args.jobs * 1000, run.rss_mb))
            small = timed(batchgen(quarter, f"s3://bench-bucket/quarter-{pair}", url, *options), env)  # type: ignore[arg-type]
            assert small.code == 0, small.stderr[-800:]
            figures["s3-quarter"].append(
                (args.jobs // 4 / small.wall, small.cpu / (args.jobs // 4) * 1000, small.rss_mb)
            )
    summary = {
        side: {
            "jobs_per_s": round(statistics.median(f[0] for f in runs), 1),
            "cpu_ms_per_job": round(statistics.median(f[1] for f in runs), 2),
            "peak_rss_mb": round(max(f[2] for f in runs), 1),
        }
        for side, runs in figures.items()
    }
    print(json.dumps({"jobs": args.jobs, "pairs": args.pairs, "cpus": os.cpu_count(), **summary}, indent=2))


if __name__ == "__main__":
    main()
