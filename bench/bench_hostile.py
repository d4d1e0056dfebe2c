"""Memory under a hostile server, run by hand: ``python bench/bench_hostile.py``.

Starts ``batchgen simulate-server`` in a subprocess serving oversized images (200 MB each) and
oversized JSON answers (200 MB), runs ``batchgen run`` against it in another subprocess, and
reports each run's peak RSS next to a clean run's. Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from harness import batchgen, server, timed

JOBS = 5


def main() -> None:
    cases = {
        "clean": [],
        "200 MB images (cap 50 MB)": ["--cdn-oversized", "1", "--oversized-bytes", str(200_000_000)],
        "200 MB JSON answers (cap 64 MB)": ["--big-json", "1", "--big-json-bytes", str(200_000_000)],
    }
    for name, faults in cases.items():
        with server(*faults) as url, tempfile.TemporaryDirectory() as folder:
            jobs = Path(folder) / "jobs.jsonl"
            jobs.write_text(
                "".join(
                    json.dumps({"model": "reve/create-image", "prompt": f"p{i}"}) + "\n" for i in range(JOBS)
                )
            )
            result = timed(batchgen(jobs, Path(folder) / "out", url, "--max-retries", "1"))
        print(f"{name}: exit {result.code}, peak RSS of batchgen {result.rss_mb:.0f} MB")


if __name__ == "__main__":
    main()
