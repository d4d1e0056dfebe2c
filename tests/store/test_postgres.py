"""The PostgreSQL state backend through the CLI, on a private server (``postgres`` fixture):
``--state postgresql://...`` beside a local output, found again by every reading command.
(The run's core promises on this backend are in ``test_backends.py``.)"""

from __future__ import annotations

import json

import pytest
from conftest import create_jobs, run_cli, write_jsonl

from batchgen.api.answers import Answer, ImageRef
from batchgen.errors import UsageError
from batchgen.outcome import Status
from batchgen.simulator import SIMULATOR_KEY
from batchgen.store import ManifestRecord
from batchgen.store.events import Answered, Dispatched, Finished
from batchgen.store.layout import STATE, STATE_URL
from batchgen.store.postgres import PostgresState, without_password


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


def test_workers_share_a_state_database_but_another_output_is_refused(postgres, tmp_path):
    database = postgres()
    first = PostgresState.open(database, output="/data/a")
    try:
        second = PostgresState.open(database, output="/data/a")  # (a second worker of the run)
        second.close()
        reader = PostgresState.open(database, read_only=True)  # (status reads beside a run)
        assert reader.counts().total == 0
        reader.close()
    finally:
        first.close()
    with pytest.raises(UsageError, match="holds the run of --out /data/a, not /data/b"):
        PostgresState.open(database, output="/data/b")


def test_a_nul_in_an_answer_is_stored_and_read_back(postgres):
    state = PostgresState.open(postgres(), output="/data/a")
    try:
        answer = Answer(images=[ImageRef(url="https://cdn.test/a.png", revised_prompt="a\x00b")])
        state.apply(
            [Dispatched("j", "reve/create-image", "bg.j.1", "2026-12-06T00:00:00Z"), Answered("j", answer)]
        )
        record = ManifestRecord(job_id="j", model="reve/create-image", status=Status.SUCCEEDED, error=None,
                                request={"prompt": "p\x00"})  # fmt: skip
        assert state.apply([Finished(record, record.model_dump_json() + "\n", final=False)]) == [None]
        (read,) = state.current_records()
        assert read.request == {"prompt": "p\ufffd"}
    finally:
        state.close()


def test_a_folder_whose_state_is_in_postgresql_goes_on_using_it_without_the_option(
    postgres, simulator, tmp_path
):
    database = postgres()
    job_file = write_jsonl(tmp_path / "jobs.jsonl", create_jobs(2))
    out = tmp_path / "out"
    env = {"AIMLAPI_BASE_URL": simulator.url}
    assert (
        run_cli(
            "run", str(job_file), "--out", str(out), "--state", database, key=SIMULATOR_KEY, env=env
        ).returncode
        == 0
    )
    again = run_cli("run", str(job_file), "--out", str(out), key=SIMULATOR_KEY, env=env)
    assert again.returncode == 0 and simulator.state.generations == 2 and not (out / STATE).exists()


def test_the_password_is_dropped_from_the_query_too():
    assert (
        without_password("postgresql://u@h/db?password=s3cret&sslmode=require")
        == "postgresql://u@h/db?sslmode=require"
    )
    assert "pw" not in without_password("postgresql://u:pw@h/db?options=-c%20a@b")
