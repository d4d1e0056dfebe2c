"""The PostgreSQL state backend through the CLI, on a private server (``postgres`` fixture):
``--state postgresql://...`` beside a local output, found again by every reading command.
(The run's core promises on this backend are in ``test_backends.py``.)"""

from __future__ import annotations

import json

from conftest import create_jobs, run_cli, write_jsonl

from batchgen.simulator import SIMULATOR_KEY
from batchgen.store.layout import STATE, STATE_URL
from batchgen.store.postgres import without_password


def test_a_run_with_its_state_in_postgresql_and_every_reading_command(postgres, simulator, tmp_path):
    database = postgres()
    job_file = write_jsonl(tmp_path / "jobs.jsonl", create_jobs(6))
    out = tmp_path / "out"

    def cli(*args: str):
        return run_cli(*args, key=SIMULATOR_KEY, env={"AIMLAPI_BASE_URL": simulator.url})

    done = cli("run", str(job_file), "--out", str(out), "--state", database, "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]
    assert not (out / STATE).exists() and (out / STATE_URL).read_text().strip() == database
    status = json.loads(cli("status", str(out), "--json").stdout)
    assert (status["succeeded"], status["total"], status["spent"]["usd"]) == (6, 6, 0.24)
    assert cli("verify", str(out)).returncode == 0
    assert cli("failed", str(out)).stdout == ""
    assert cli("report", str(out)).returncode == 0
    plan = json.loads(cli("plan", str(job_file), "--out", str(out), "--json").stdout)
    assert plan["counts"]["to_send"] == 0

    again = cli("run", str(job_file), "--out", str(out), "--state", database, "--no-progress")
    assert again.returncode == 0 and simulator.state.generations == 6


def test_the_password_is_never_kept():
    assert without_password("postgresql://bob:s3cret@db.example/runs") == "postgresql://bob@db.example/runs"
    assert without_password("postgresql://db.example/runs") == "postgresql://db.example/runs"
