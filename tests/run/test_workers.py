"""Workers of one run (issue 22): several ``batchgen run`` processes with the same job file,
output and PostgreSQL state (a private server), against the simulator in this process.

What must hold: every job ends with exactly one succeeded record; no job is paid twice
(billed generations per job, as the simulator counts them) unless it is reported as possibly
billed with its X-Client-Request-Id; a killed worker's unsent jobs are taken over within its
lease + 5 s; a shared budget is passed by no more than what was in flight; a restart of
PostgreSQL mid-run loses nothing. (Throughput against a hidden limit: ``bench/bench_workers.py``.)
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from conftest import create_jobs, manifest, write_jsonl

from batchgen.simulator import SIMULATOR_KEY

LEASE = 3  # seconds: --worker-lease of the workers under test


def start_worker(
    job_file: Path, out: Path | str, url: str, database: str, *extra: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """One worker: ``batchgen run`` with the shared state."""
    return subprocess.Popen(
        [
            sys.executable, "-m", "batchgen", "run", str(job_file), "--out", str(out), "--base-url", url,
            "--state", database, "--concurrency", "4", "--worker-lease", str(LEASE), "--no-progress",
            "--max-retries", "30", *extra,
        ],
        env={"AIMLAPI_KEY": SIMULATOR_KEY, "PATH": "/usr/bin:/bin", **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip


def finish(*workers: subprocess.Popen[bytes]) -> list[int]:
    """Wait for ``workers``; their exit codes (stderr shown on a failure)."""
    codes = []
    for worker in workers:
        _, stderr = worker.communicate(timeout=240)
        if worker.returncode not in (0, 1):
            print(stderr.decode()[-3000:], file=sys.stderr)
        codes.append(worker.returncode)
    return codes


def billed(sim) -> Counter[str]:
    """Billed generations per job (the simulator's count)."""
    return Counter(prompt.replace("picture number ", "job-") for _, prompt, _ in sim.state.generated)


def status(out: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "batchgen", "status", str(out), "--json"], capture_output=True, check=False
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return json.loads(done.stdout)


def succeeded_once(out: Path) -> Counter[str]:
    return Counter(r["job_id"] for r in manifest(out) if r["status"] == "succeeded")


def test_workers_share_the_jobs_and_a_hidden_limit_and_pay_for_each_once(make_simulator, postgres, tmp_path):
    sim = make_simulator(latency=0.05, rpm_limit=20, limit_window=1.0)
    job_file = write_jsonl(tmp_path / "jobs.jsonl", create_jobs(60))
    out, database = tmp_path / "out", postgres()

    codes = finish(*[start_worker(job_file, out, sim.url, database) for _ in range(3)])

    assert codes == [0, 0, 0]
    jobs = {f"job-{i}" for i in range(60)}
    assert set(succeeded_once(out)) == jobs and set(succeeded_once(out).values()) == {1}
    assert len(manifest(out)) == 60  # (the manifest: each record once, whoever committed it)
    assert set(billed(sim).values()) == {1}  # no job paid twice
    with psycopg.connect(database) as db:
        assert db.execute("SELECT COUNT(DISTINCT worker_id) FROM claims").fetchone()[0] >= 2
    shown = status(out)
    assert shown["succeeded"] == 60 and shown["in_flight_of_a_dead_run"] == []
    assert len(shown["workers"]) == 3 and not any(w["alive"] for w in shown["workers"])


def unsent_claims_of(database: str, worker_pid: int) -> int:
    """Jobs the worker with ``worker_pid`` still holds that it never sent."""
    with psycopg.connect(database) as db:
        row = db.execute(
            "SELECT COUNT(*) FROM claims c JOIN workers w ON w.worker_id = c.worker_id"
            " LEFT JOIN jobs j ON j.job_id = c.job_id WHERE w.pid = %s AND (j.state IS NULL OR j.state = 'pending')",
            (worker_pid,),
        ).fetchone()
    return int(row[0])


@pytest.mark.parametrize("kills", [1, 2], ids=["one-killed", "two-killed"])
def test_killed_workers_lose_nothing_and_what_they_sent_is_reported_not_resent(
    make_simulator, postgres, tmp_path, kills
):
    sim = make_simulator(latency=0.4, seed=kills)
    jobs = {f"job-{i}" for i in range(48)}
    job_file = write_jsonl(tmp_path / "jobs.jsonl", create_jobs(48))
    out, database = tmp_path / "out", postgres()
    workers = [start_worker(job_file, out, sim.url, database) for _ in range(3)]

    replacements = []
    for k, victim in enumerate(workers[:kills]):
        assert sim.state.wait_for(lambda s, k=k: s.generations >= 8 + 10 * k, timeout=60)
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=30)
        killed_at = time.monotonic()
        replacements.append(start_worker(job_file, out, sim.url, database))
        # its unsent claims pass to the others within the lease + 5 s
        for _ in range(200):  # bounded: 20 s
            if unsent_claims_of(database, victim.pid) == 0:
                break
            time.sleep(0.1)  # (another process's state: no event to await)
        assert unsent_claims_of(database, victim.pid) == 0
        assert time.monotonic() - killed_at <= LEASE + 5

    codes = finish(*workers[kills:], *replacements)

    shown = status(out)
    possibly = {job["id"]: job["client_request_ids"][-1] for job in shown["in_flight_of_a_dead_run"]}
    assert set(codes) <= {0, 1} and (1 in codes) == bool(possibly)  # (1: jobs wait for the user's word)
    done = succeeded_once(out)
    assert set(done.values()) <= {1} and set(done) | set(possibly) == jobs and not set(done) & set(possibly)
    paid = billed(sim)
    assert all(n == 1 for n in paid.values())  # nothing paid twice...
    assert set(paid) <= jobs and set(done) <= set(paid)  # ... and what was paid is a record or reported
    assert all(
        client.startswith(f"bg.{job}.") for job, client in possibly.items()
    )  # (what the usage logs match)

    # The user's word: send the possibly billed ones again (each may then be paid twice, knowingly)
    again = finish(start_worker(job_file, out, sim.url, database, "--resend-possibly-billed"))
    assert again == [0]
    assert set(succeeded_once(out)) == jobs and set(succeeded_once(out).values()) == {1}
    assert all(n <= 1 + (job in possibly) for job, n in billed(sim).items())


def test_workers_into_an_object_store_one_killed_leave_one_record_per_job_and_no_orphan(
    make_simulator, postgres, s3, tmp_path
):
    sim = make_simulator(latency=0.2, seed=3)
    jobs = {f"job-{i}" for i in range(30)}
    job_file = write_jsonl(tmp_path / "jobs.jsonl", create_jobs(30))
    url, database = s3.url("shared"), postgres()
    workers = [start_worker(job_file, url, sim.url, database, env=s3.env) for _ in range(2)]
    assert sim.state.wait_for(lambda s: s.generations >= 8, timeout=60)
    workers[0].send_signal(signal.SIGKILL)
    workers[0].communicate(timeout=30)

    codes = finish(workers[1], start_worker(job_file, url, sim.url, database, env=s3.env))
    if 1 in codes:  # (the killed worker had sent some: the user's word sends them)
        assert finish(
            start_worker(job_file, url, sim.url, database, "--resend-possibly-billed", env=s3.env)
        ) == [0]

    keys = sorted(k for k in s3.objects("shared/manifest/") if k.endswith(".jsonl"))
    records = [json.loads(line) for key in keys for line in s3.read(key).decode().splitlines()]
    done = Counter(r["job_id"] for r in records if r["status"] == "succeeded")
    assert set(done) == jobs and set(done.values()) == {1} and len(records) == 30
    listed = {image["path"] for r in records for image in r["images"]}
    images = {k.removeprefix("shared/") for k in s3.objects("shared/images/")}
    assert images == listed  # (no orphan, none missing)


def test_a_budget_shared_by_four_workers_is_passed_by_no_more_than_was_in_flight(
    make_simulator, postgres, tmp_path
):
    sim = make_simulator(latency=0.2)
    job_file = write_jsonl(tmp_path / "jobs.jsonl", create_jobs(80))
    out, database = tmp_path / "out", postgres()
    cap = Decimal("0.60")  # 15 generations at $0.04

    codes = finish(*[start_worker(job_file, out, sim.url, database, "--max-usd", str(cap)) for _ in range(4)])

    assert set(codes) == {75}  # every worker stopped at the budget, resumably
    spent = Decimal(str(status(out)["spent"]["usd"]))
    in_flight_at_most = 4 * 4 * Decimal("0.04")  # (workers x --concurrency x price)
    assert Decimal("0.04") * len(sim.state.generated) == spent
    assert cap - Decimal("0.04") < spent <= cap + in_flight_at_most


def test_a_restart_of_postgresql_mid_run_loses_nothing(make_simulator, postgres, postgres_server, tmp_path):
    sim = make_simulator(latency=0.1)
    jobs = {f"job-{i}" for i in range(40)}
    job_file = write_jsonl(tmp_path / "jobs.jsonl", create_jobs(40))
    out, database = tmp_path / "out", postgres()
    workers = [start_worker(job_file, out, sim.url, database) for _ in range(2)]
    assert sim.state.wait_for(lambda s: s.generations >= 10, timeout=60)

    postgres_server.restart()

    codes = finish(*workers)
    assert set(codes) <= {0, 75}  # (they wait for it and go on, or stop resumably)
    possibly = {job["id"] for job in status(out)["in_flight_of_a_dead_run"]}
    if 75 in codes:  # (a commit cut by the restart: whether it landed is unknown, so it stopped)
        assert finish(start_worker(job_file, out, sim.url, database, "--resend-possibly-billed")) == [0]
    assert set(succeeded_once(out)) == jobs and set(succeeded_once(out).values()) == {1}
    assert all(n == 1 or job in possibly for job, n in billed(sim).items())
