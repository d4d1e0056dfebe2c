"""Selective re-runs through the CLI: ``--only`` / ``--only-file``, ``--retry-failed`` by kind,
and ``batchgen failed`` writing the failed jobs as a job file to edit and run again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SAMPLES, write_jsonl

from batchgen.cli import ExitCode, main
from batchgen.simulator import SIMULATOR_KEY


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIMLAPI_KEY", SIMULATOR_KEY)


def run(job_file: Path, out: Path, url: str, *extra: str) -> int:
    return main(["run", str(job_file), "--out", str(out), "--base-url", url, "--no-progress", *extra])


def job(job_id: str, prompt: str = "a red fox") -> dict[str, object]:
    return {"id": job_id, "model": "reve/create-image", "prompt": prompt}


def test_only_runs_the_named_jobs(simulator, tmp_path, capsys):
    job_file = write_jsonl(tmp_path / "j.jsonl", [job("a"), job("b"), job("c"), job("d")])
    out = tmp_path / "o"
    assert run(job_file, out, simulator.url, "--only", "b", "--only", "nope") == ExitCode.INVALID_INPUT
    assert "--only names job(s) that" in capsys.readouterr().err and not out.exists()  # a typo: nothing made
    assert run(job_file, out, simulator.url, "--only", "b") == ExitCode.OK
    assert "1 jobs: 1 succeeded now" in capsys.readouterr().err
    (tmp_path / "ids.txt").write_text("# ids\nc\n\nd\n")
    assert run(job_file, out, simulator.url, "--only-file", str(tmp_path / "ids.txt")) == ExitCode.OK
    assert [json.loads(line)["job_id"] for line in (out / "manifest.jsonl").read_text().splitlines()] == [
        "b",
        "c",
        "d",
    ]
    assert run(job_file, out, simulator.url) == ExitCode.OK
    assert simulator.state.posts == 4


def test_retry_failed_sends_again_only_the_kinds_named_and_violations_only_by_name(
    simulator, tmp_path, capsys
):
    job_file = write_jsonl(tmp_path / "j.jsonl", [job("ok"), job("flagged", "[[violation]]")])
    out = tmp_path / "o"
    assert run(job_file, out, simulator.url) == ExitCode.JOBS_FAILED
    assert run(job_file, out, simulator.url, "--retry-failed") == ExitCode.JOBS_FAILED
    assert run(job_file, out, simulator.url, "--retry-failed=expired,internal") == ExitCode.JOBS_FAILED
    assert simulator.state.posts == 2  # a violation is not sent again unless named
    assert run(job_file, out, simulator.url, "--retry-failed=violation") == ExitCode.JOBS_FAILED
    assert simulator.state.posts == 3
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        run(job_file, out, simulator.url, "--retry-failed=sever")
    assert exited.value.code == ExitCode.INVALID_INPUT
    assert "unknown kind(s) sever; choose from" in capsys.readouterr().err


def test_failed_prints_a_job_file_that_runs_again(simulator, tmp_path, capsys):
    (tmp_path / "ref.png").write_bytes((SAMPLES / "images" / "t-rex.png").read_bytes())
    edit = {"id": "e", "model": "reve/edit-image", "prompt": "[[violation]] a hat", "image_url": "ref.png"}
    job_file = write_jsonl(tmp_path / "j.jsonl", [job("ok"), job("flagged", "[[violation]]"), edit])
    out = tmp_path / "o"
    assert run(job_file, out, simulator.url) == ExitCode.JOBS_FAILED
    capsys.readouterr()

    assert main(["failed", str(out)]) == ExitCode.OK
    captured = capsys.readouterr()
    jobs = [json.loads(line) for line in captured.out.splitlines()]
    assert jobs == [
        {**edit, "image_url": str(tmp_path / "ref.png")},  # a local image by its absolute path
        {"id": "flagged", "model": "reve/create-image", "prompt": "[[violation]]"},
    ]
    assert "2 failed job(s) written as JSONL" in captured.err
    again = tmp_path / "elsewhere" / "failed.jsonl"
    again.parent.mkdir()
    again.write_text(captured.out)
    assert main(["validate", str(again)]) == ExitCode.OK
