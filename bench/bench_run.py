"""Benchmarks, run by hand (never in the test suite): ``python bench/bench_run.py``.

1. throughput: N jobs against the simulator at a high ceiling (jobs/s, peak RSS);
2. ceiling: the sending rate never exceeds --rpm, in any 10-second window, from the start;
3. discovery: a server with an unannounced limit (429s, no Retry-After): achieved rate vs limit;
4. scan: validating a large JSONL job file (time, peak memory: it is streamed).

Everything runs on 127.0.0.1 against the built-in simulator.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path

from batchgen.jobfile import scan_job_file
from batchgen.runner import run_batch
from batchgen.settings import Settings
from batchgen.simulator import SIMULATOR_KEY, FaultConfig, start_simulator


def write_jobs(path: Path, count: int) -> Path:
    with path.open("w") as out:
        for i in range(count):
            out.write(
                json.dumps(
                    {
                        "id": f"b{i}",
                        "model": "reve/create-image",
                        "prompt": f"bench {i}",
                        "aspect_ratio": "1:1",
                    }
                )
                + "\n"
            )
    return path


async def timed_run(count: int, rpm: float, concurrency: int, faults: FaultConfig) -> dict[str, float]:
    sim = await start_simulator(faults)
    try:
        with tempfile.TemporaryDirectory() as folder:
            job_file = write_jobs(Path(folder) / "jobs.jsonl", count)
            settings = Settings(
                api_key=SIMULATOR_KEY,
                base_url=sim.url,
                rpm=rpm,
                concurrency=concurrency,
                max_retries=30,
                backoff_base=0.2,
                backoff_cap=5,
            )
            started = time.monotonic()
            report = await run_batch(job_file, Path(folder) / "out", settings, progress=False)
            elapsed = time.monotonic() - started
        times = sorted(sim.state.post_times)
        peak10 = max(sum(1 for t in times[i:] if t < s + 10) for i, s in enumerate(times))
        accepted = sim.state.statuses[201]
        return {
            "jobs": count,
            "succeeded": report.tally.succeeded,
            "seconds": round(elapsed, 2),
            "jobs_per_s": round(count / elapsed, 1),
            "posts": sim.state.posts,
            "429s": sim.state.statuses[429],
            "peak_10s_window": peak10,
            "accepted_per_s": round(accepted / elapsed, 2),
        }
    finally:
        await sim.close()


def scan(count: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        path = write_jobs(Path(folder) / "big.jsonl", count)
        tracemalloc.start()
        started = time.monotonic()
        summary = scan_job_file(path)
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return {
            "jobs": summary.count,
            "file_mb": round(path.stat().st_size / 1e6, 1),
            "seconds": round(elapsed, 2),
            "peak_traced_mb": round(peak / 1e6, 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--scan-jobs", type=int, default=200_000)
    args = parser.parse_args()
    results = {
        "throughput (rpm 60000, concurrency 16)": asyncio.run(
            timed_run(args.jobs, 60_000, 16, FaultConfig())
        ),
        "ceiling (rpm 600, concurrency 16, 150 jobs)": asyncio.run(timed_run(150, 600, 16, FaultConfig())),
        "discovery (server limit 10/s, rpm 6000)": asyncio.run(
            timed_run(args.jobs, 6000, 16, FaultConfig(rpm_limit=10, limit_window=1.0))
        ),
        "scan": scan(args.scan_jobs),
    }
    results["peak RSS MB (whole process)"] = {
        "mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    }
    for name, figures in results.items():
        print(f"{name}: {figures}")


if __name__ == "__main__":
    main()
