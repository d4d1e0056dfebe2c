"""What every benchmark shares: the simulator in its own process, job files, timed child processes.

Nothing here runs in the measured process: the server is ``batchgen simulate-server`` in one
subprocess, each client (batchgen or a baseline) another, and a child's CPU time is read from
``os.wait4`` (user + sys of that process alone).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KEY = "sim-key-batchgen"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def server(*options: str) -> Iterator[str]:
    """``batchgen simulate-server`` with ``options`` in its own process; yields its base URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchgen", "simulate-server", "--port", str(port), *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):  # bounded: about 20 s for the server to listen
            try:
                urllib.request.urlopen(f"{url}/_sim/stats", timeout=1)
                break
            except OSError:
                time.sleep(0.1)  # polling another process: there is no event to await
        else:
            raise SystemExit("simulator did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def stats(url: str) -> dict[str, Any]:
    """The simulator's counters (``GET /_sim/stats``)."""
    with urllib.request.urlopen(f"{url}/_sim/stats", timeout=10) as response:
        return dict(json.load(response))


def write_jobs(path: Path, count: int, *, b64_every: int = 2, model: str = "reve/create-image") -> Path:
    """``count`` create-image jobs (1:1); every ``b64_every``-th one answered inline as base64."""
    with path.open("w") as out:
        for i in range(count):
            job: dict[str, Any] = {
                "id": f"b{i}",
                "model": model,
                "prompt": f"bench {i}",
                "aspect_ratio": "1:1",
            }
            if b64_every and i % b64_every == 1:
                job["convert_base64_to_url"] = False
            out.write(json.dumps(job) + "\n")
    return path


@dataclass(frozen=True)
class Timed:
    """One child process: exit code, wall seconds, CPU seconds (user + sys), peak RSS (MB), stderr."""

    code: int
    wall: float
    cpu: float
    rss_mb: float
    stderr: str


def timed(command: Sequence[str], env: dict[str, str] | None = None) -> Timed:
    """Run ``command`` and measure that process alone."""
    started = time.monotonic()
    proc = subprocess.Popen(
        list(command),
        env={**os.environ, "AIMLAPI_KEY": KEY, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    stderr = proc.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Timed(proc.returncode, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, stderr)


def batchgen(job_file: Path, out: Path, url: str, *options: str) -> list[str]:
    """The ``batchgen run`` command line against ``url``."""
    return [
        sys.executable, "-m", "batchgen", "run", str(job_file), "--out", str(out),
        "--base-url", url, "--no-progress", *options,
    ]  # fmt: skip
