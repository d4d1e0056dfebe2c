"""Crash suite: the real CLI killed with SIGKILL at many moments, then resumed.

Kill points are driven by what the simulator has seen (the k-th request received, the k-th
answer sent, the k-th image served), so they land before an answer, between an answer and the
image write, and between the image write and the manifest record. After each resume:
every job has exactly one succeeded record, every listed image matches its sha256, and no job
whose answer was recorded was generated again (paid generations <= jobs + in flight at the kill).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import create_jobs, write_jsonl

from batchgen.simulator import SIMULATOR_KEY
from batchgen.store import read_status
from batchgen.store.sqlite import SqliteState

JOBS = 24


def start_run(
    job_file: Path, out: Path | str, url: str, *extra: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "batchgen",
            "run",
            str(job_file),
            "--out",
            str(out),
            "--base-url",
            url,
            "--concurrency",
            "4",
            "--rpm",
            "6000",
            "--no-progress",
            *extra,
        ],
        env={"AIMLAPI_KEY": SIMULATOR_KEY, "PATH": "/usr/bin:/bin", **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def dispatched_jobs(out: Path) -> set[str]:
    """Jobs the state database shows as sent with no recorded answer (possibly charged);
    ``out``: the output folder, or the state folder of an object-store output."""
    path = out / ".batchgen" / "state.sqlite3"
    if not path.exists():
        return set()

    db = SqliteState.open(path, read_only=True)
    try:
        return {job_id for job_id, _ in db.in_flight()}
    finally:
        db.close()


def check_folder(out: Path, job_ids: set[str]) -> None:
    """Exactly one succeeded record per job, each the job's last, every image intact."""
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    succeeded = Counter(r["job_id"] for r in records if r["status"] == "succeeded")
    assert set(succeeded) == job_ids and set(succeeded.values()) == {1}
    for r in records:
        for image in r["images"]:
            assert hashlib.sha256((out / image["path"]).read_bytes()).hexdigest() == image["sha256"]


def generations_per_job(sim) -> Counter[str]:
    return Counter(prompt.removeprefix("picture number ") for _, prompt, _ in sim.state.generated)


def mixed_jobs(count: int) -> list[dict[str, object]]:
    """Jobs answered with a URL, and every third one with inline base64 bytes."""
    return [
        job | ({"convert_base64_to_url": False} if i % 3 == 2 else {})
        for i, job in enumerate(create_jobs(count))
    ]


KILL_POINTS = [("posts", k) for k in (1, 3, 6, 10, 15, 20, 23)]
KILL_POINTS += [("generations", k) for k in (1, 2, 5, 9, 14, 19, 24)]
KILL_POINTS += [("cdn_gets", k) for k in (1, 3, 6, 9, 12, 14, 16)]  # 16 of the 24 jobs answer with URLs


@pytest.mark.parametrize(("counter", "k"), KILL_POINTS, ids=[f"{c}-{k}" for c, k in KILL_POINTS])
def test_sigkill_then_resume_loses_nothing_and_pays_once(make_simulator, tmp_path, counter, k):
    sim = make_simulator(latency=0.02, seed=k)
    job_file = write_jsonl(tmp_path / "jobs.jsonl", mixed_jobs(JOBS))
    out = tmp_path / "out"

    proc = start_run(job_file, out, sim.url)
    reached = sim.state.wait_for(lambda s: getattr(s, counter) >= k, timeout=60)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert reached
    in_flight = dispatched_jobs(out)
    before = generations_per_job(sim)

    resumed = start_run(job_file, out, sim.url)
    _, stderr = resumed.communicate(timeout=120)

    assert resumed.returncode == 0, stderr.decode()[-2000:]
    check_folder(out, {f"job-{i}" for i in range(JOBS)})
    after = generations_per_job(sim)
    regenerated = {f"job-{n}" for n, count in after.items() if count > 1}
    assert regenerated <= in_flight  # only jobs with no recorded answer were sent again
    assert sim.state.generations <= JOBS + len(in_flight)
    assert sum(before.values()) <= sim.state.generations
    if in_flight:
        assert b"in flight" in stderr
    # Exact money: each job's one recorded answer is charged once ($0.04 each, the simulator's
    # reve/create-image price), whatever the kill lost; the server billed at least that.
    spent = asyncio.run(read_status(out))["spent"]["usd"]
    assert spent == Decimal("0.04") * JOBS <= Decimal("0.04") * sim.state.generations


def test_faulty_api_and_three_random_kills_end_with_every_job_once(make_simulator, tmp_path):
    rpm = 3000
    sim = make_simulator(
        seed=42, error_429=0.1, error_500=0.05, error_503=0.05, drop=0.05, cdn_fail=0.1, latency=0.01
    )
    jobs = 200
    job_file = write_jsonl(tmp_path / "jobs.jsonl", mixed_jobs(jobs))
    out = tmp_path / "out"
    rng = random.Random(7)
    in_flight: set[str] = set()
    extra = ("--rpm", str(rpm), "--max-retries", "10")

    for _ in range(3):
        proc = start_run(job_file, out, sim.url, *extra)
        target = sim.state.posts + rng.randrange(10, 60)
        sim.state.wait_for(lambda s, t=target: s.posts >= t, timeout=60)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        in_flight |= dispatched_jobs(out)
    final = start_run(job_file, out, sim.url, *extra)
    _, stderr = final.communicate(timeout=300)

    assert final.returncode == 0, stderr.decode()[-2000:]
    check_folder(out, {f"job-{i}" for i in range(jobs)})
    regenerated = {f"job-{n}" for n, count in generations_per_job(sim).items() if count > 1}
    assert regenerated <= in_flight
    # Sending rate: no 1-second window holds more than rpm/60 requests, plus one per restart.
    times = sorted(sim.state.post_times)
    peak = max(sum(1 for t in times[i:] if t < start + 1.0) for i, start in enumerate(times))
    assert peak <= rpm / 60 + 4, peak


@pytest.mark.parametrize("delay", [0.0, 0.05])
def test_kill_during_startup_or_repair_is_harmless(simulator, tmp_path, delay):
    job_file = write_jsonl(tmp_path / "jobs.jsonl", create_jobs(5))
    out = tmp_path / "out"
    proc = start_run(job_file, out, simulator.url)
    time.sleep(delay)  # a moment with no observable event: before the first request
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    resumed = start_run(job_file, out, simulator.url)
    resumed.communicate(timeout=120)
    assert resumed.returncode == 0
    check_folder(out, {f"job-{i}" for i in range(5)})


def test_random_kills_of_a_run_into_s3_end_with_every_job_once_and_no_stray_object(
    make_simulator, s3, tmp_path
):
    sim = make_simulator(seed=3, error_500=0.03, cdn_fail=0.05, latency=0.01)
    jobs = 300
    job_file = write_jsonl(tmp_path / "jobs.jsonl", mixed_jobs(jobs))
    url, state = s3.url("crash"), tmp_path / "state"
    extra = ("--state", str(state), "--rpm", "6000", "--max-retries", "10")
    rng = random.Random(11)
    in_flight: set[str] = set()
    for _ in range(3):
        proc = start_run(job_file, url, sim.url, *extra, env=s3.env)
        target = sim.state.posts + rng.randrange(20, 80)
        sim.state.wait_for(lambda s, t=target: s.posts >= t, timeout=60)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        in_flight |= dispatched_jobs(state)
    final = start_run(job_file, url, sim.url, *extra, env=s3.env)
    _, stderr = final.communicate(timeout=300)
    assert final.returncode == 0, stderr.decode()[-2000:]

    # every job: exactly one succeeded record, its images under the prefix with their SHA-256
    records = [json.loads(line) for line in read_parts(s3, "crash/manifest/")]
    succeeded = Counter(r["job_id"] for r in records if r["status"] == "succeeded")
    assert set(succeeded) == {f"job-{i}" for i in range(jobs)} and set(succeeded.values()) == {1}
    listed = set()
    for r in records:
        for image in r["images"]:
            listed.add(f"crash/{image['path']}")
            assert hashlib.sha256(s3.read(f"crash/{image['path']}")).hexdigest() == image["sha256"]
    # no generation repeated for a job whose answer was recorded
    regenerated = {f"job-{n}" for n, count in generations_per_job(sim).items() if count > 1}
    assert regenerated <= in_flight
    # no unreferenced object
    objects = s3.objects("crash/")
    assert {k for k in objects if k.startswith("crash/images/")} == listed
    # a further run sends nothing and puts nothing
    posts = sim.state.posts
    again = start_run(job_file, url, sim.url, *extra, env=s3.env)
    again.communicate(timeout=120)
    assert again.returncode == 0 and sim.state.posts == posts
    verify = subprocess.run(
        [sys.executable, "-m", "batchgen", "verify", url, "--state", str(state)],
        env={"PATH": "/usr/bin:/bin", **s3.env}, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    unchanged = {
        k: v for k, v in s3.objects("crash/").items() if "/.batchgen/" not in k
    }  # (the lease is put)
    assert unchanged == {k: v for k, v in objects.items() if "/.batchgen/" not in k}


def read_parts(s3, prefix: str) -> list[str]:
    """The manifest's lines, part after part, read straight from the bucket."""
    keys = sorted(k for k in s3.objects(prefix) if k.endswith(".jsonl"))
    return [line for key in keys for line in s3.read(key).decode().splitlines()]
