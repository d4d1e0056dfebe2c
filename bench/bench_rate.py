"""Issue 19's workloads against ``batchgen simulate-server`` in its own process: the learned limit
(this tree) and the CUBIC controller (``--old CHECKOUT``, a checkout from before issue 19) side by
side, each workload's runs one after the other; and, with no limit, the bare aiohttp client.

    python bench/bench_rate.py --old /tmp/old-checkout [--only w5,in_flight]

Figures per run: exit code, seconds, POSTs, the share answered 429, the 429s in the first 2 s of
POSTs (the opening), generations per second from the first POST to the last as a share of the
limit (``admitted``), the busiest 10 s window (for ``--rpm``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from bench_ab import command
from harness import server, stats, timed, write_jobs

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# name: (jobs, server options, batchgen options, the limit in requests per second or None)
WORKLOADS: dict[str, tuple[int, list[str], list[str], float | None]] = {
    "w5": (
        200,
        ["--rpm-limit", "5", "--limit-window", "1", "--latency", "0.1"],
        ["--concurrency", "16"],
        5.0,
    ),
    "in_flight": (240, ["--max-in-flight", "8", "--latency", "1"], ["--concurrency", "16"], 8.0),
    "w50_10s": (
        300,
        ["--rpm-limit", "50", "--limit-window", "10", "--latency", "0.1"],
        ["--concurrency", "16"],
        5.0,
    ),
    "opening": (
        60,
        ["--rpm-limit", "5", "--limit-window", "1", "--latency", "0.1"],
        ["--concurrency", "64"],
        5.0,
    ),
    "random_429": (600, ["--error-429", "0.15", "--latency", "0.2"], ["--concurrency", "16"], None),
    "clean_200ms": (600, ["--latency", "0.2"], ["--concurrency", "16"], None),
    "rpm_600": (300, ["--latency", "0.1"], ["--concurrency", "16", "--rpm", "600"], 10.0),
    "no_limit_2s": (3000, ["--latency", "2", "--image-pool", "8"], ["--concurrency", "256"], None),
}


def run(checkout: Path | None, name: str, work: Path) -> dict[str, object]:
    """One workload with one checkout's batchgen (None: the bare aiohttp client)."""
    jobs, server_options, options, limit = WORKLOADS[name]
    with server(*server_options) as url:
        job_file = write_jobs(work / f"{name}.jsonl", jobs, b64_every=0)
        out = work / f"{name}-{checkout.name if checkout else 'bare'}"
        if checkout is None:
            line = [
                sys.executable,
                str(HERE / "baseline_aiohttp.py"),
                str(job_file),
                str(out),
                url,
                "--concurrency",
                "256",
            ]
        else:
            line = command(checkout, job_file, out, url, *options, "--max-retries", "30")
        result = timed(line)
        seen = stats(url)
    refused = int(seen["statuses"].get("429", 0))
    figures: dict[str, object] = {
        "exit": result.code,
        "seconds": round(result.wall, 2),
        "posts": seen["posts"],
        "429 share": round(refused / max(seen["posts"], 1), 3),
        "opening 429s": seen["opening_429s"],
        "peak 10 s": seen["peak_10s"],
    }
    if limit is not None and seen["post_span"]:
        figures["admitted"] = round(seen["generations"] / seen["post_span"] / limit, 3)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--old", type=Path, required=True)
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    names = [n for n in WORKLOADS if not args.only or n in args.only.split(",")]
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            sides = {"cubic (old)": args.old, "learned": REPO}
            if name == "no_limit_2s":
                sides["bare aiohttp"] = None  # type: ignore[assignment]
            results[name] = {side: run(checkout, name, Path(tmp)) for side, checkout in sides.items()}
            print(name, json.dumps(results[name]), flush=True)


if __name__ == "__main__":
    main()
