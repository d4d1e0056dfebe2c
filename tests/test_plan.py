"""``batchgen plan``: what a run would do and cost, judged as a run judges, sending and writing
nothing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from conftest import write_jsonl

from batchgen.cli import ExitCode, main
from batchgen.simulator import SIMULATOR_KEY


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIMLAPI_KEY", SIMULATOR_KEY)


def job(job_id: str, prompt: str = "a red fox") -> dict[str, object]:
    return {"id": job_id, "model": "reve/create-image", "prompt": f"{prompt} {job_id}"}


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (state files included), by its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }


def test_plan_counts_every_kind_of_job_and_sends_and_writes_nothing(make_simulator, tmp_path, capsys):
    out = tmp_path / "out"
    job_file = tmp_path / "j.jsonl"
    healthy = make_simulator()
    write_jsonl(job_file, [job("done1"), job("done2"), job("bad", "[[violation]]")])
    assert main(["run", str(job_file), "--out", str(out), "--base-url", healthy.url]) == ExitCode.JOBS_FAILED
    broken_cdn = make_simulator(cdn_fail=1.0)
    write_jsonl(job_file, [job("done1"), job("done2"), job("bad", "[[violation]]"), job("paid")])
    args = ["run", str(job_file), "--out", str(out), "--base-url", broken_cdn.url, "--max-retries", "0"]
    assert main(args) == ExitCode.RESUMABLE  # `paid`: answered, its image not downloaded
    write_jsonl(job_file, [job("done1"), job("done2"), job("bad", "[[violation]]"), job("paid"), job("new")])
    before = snapshot(out)
    posts = (healthy.state.posts, broken_cdn.state.posts)
    capsys.readouterr()

    assert main(["plan", str(job_file), "--out", str(out), "--json"]) == ExitCode.OK
    plan = json.loads(capsys.readouterr().out)
    assert plan["jobs"] | {"changed": [], "redo": [], "frozen": []} == {
        "to_send": ["new"],
        "succeeded": ["done1", "done2"],
        "failed_final": ["bad"],
        "download_only": ["paid"],
        "changed": [],
        "redo": [],
        "frozen": [],
    }
    assert plan["models"] == {
        "reve/create-image": {
            "requests": 1,
            "images": 1,
            "usd": 0.04,
            "credits": 2646.0,
            "basis": "median of 4 recorded reve/create-image requests",
        }
    }
    assert (healthy.state.posts, broken_cdn.state.posts) == posts  # nothing sent
    assert snapshot(out) == before  # nothing written

    assert main(["plan", str(job_file), "--out", str(tmp_path / "elsewhere")]) == ExitCode.OK
    text = capsys.readouterr().out
    assert "to send (new, or tried without an answer): 5" in text and "cost unknown" in text
    assert not (tmp_path / "elsewhere").exists()
    assert main(["plan", str(job_file), "--out", str(tmp_path / "elsewhere"), "--history", str(out)]) == 0
    assert "~$0.20 / 13230 credits" in capsys.readouterr().out


def test_plan_of_an_invalid_file_exits_2(tmp_path, capsys):
    job_file = write_jsonl(tmp_path / "j.jsonl", [{"model": "reve/create-image", "promt": "x"}])
    assert main(["plan", str(job_file), "--out", str(tmp_path / "o")]) == ExitCode.INVALID_INPUT
    assert "did you mean 'prompt'?" in capsys.readouterr().err
