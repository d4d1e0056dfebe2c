"""Memory under a hostile server, run by hand: ``python bench/bench_hostile.py``.

Starts ``batchgen simulate-server`` in a subprocess serving oversized images (200 MB each) and
oversized JSON answers (200 MB), runs ``batchgen run`` against it in another subprocess, and
reports each run's peak RSS next to a clean run's. Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

KEY = "sim-key-batchgen"
JOBS = 5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(*faults: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "batchgen", "simulate-server", "--port", str(port), *faults],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):  # bounded: about 10 s for the server to listen
        try:
            urllib.request.urlopen(f"{url}/_sim/stats", timeout=1)
        except OSError:
            time.sleep(0.1)  # polling a process we cannot await
        else:
            return server, url
    server.kill()
    raise SystemExit("simulator did not start")


# Runs a command and prints its peak RSS (KiB) last on stderr: only that child is measured.
_MEASURE = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)"
)


def run_child(url: str, folder: Path) -> tuple[int, float]:
    jobs = folder / "jobs.jsonl"
    jobs.write_text(
        "".join(json.dumps({"model": "reve/create-image", "prompt": f"p{i}"}) + "\n" for i in range(JOBS))
    )
    command = [
        sys.executable,
        "-m",
        "batchgen",
        "run",
        str(jobs),
        "--out",
        str(folder / "out"),
        "--base-url",
        url,
        "--max-retries",
        "1",
        "--rpm",
        "6000",
        "--no-progress",
    ]
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, *command],
        env={**os.environ, "AIMLAPI_KEY": KEY},
        capture_output=True,
        check=False,
    )
    return proc.returncode, int(proc.stderr.decode().split()[-1]) / 1024


def main() -> None:
    cases = {
        "clean": [],
        "200 MB images (cap 50 MB)": ["--cdn-oversized", "1", "--oversized-bytes", str(200_000_000)],
        "200 MB JSON answers (cap 64 MB)": ["--big-json", "1", "--big-json-bytes", str(200_000_000)],
    }
    for name, faults in cases.items():
        server, url = serve(*faults)
        try:
            with tempfile.TemporaryDirectory() as folder:
                code, peak_mb = run_child(url, Path(folder))
        finally:
            server.terminate()
            server.wait(10)
        print(f"{name}: exit {code}, peak RSS of batchgen {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
