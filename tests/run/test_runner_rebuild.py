"""Changed jobs are generated anew (as a build tool rebuilds changed inputs), ``--frozen`` and
``--redo``; ``verify`` finds missing and altered images, and a resume fetches a missing one again
from its recorded URL. Everything through the CLI against the simulator."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from conftest import manifest, write_jsonl

from batchgen.cli import ExitCode, main
from batchgen.simulator import SIMULATOR_KEY


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIMLAPI_KEY", SIMULATOR_KEY)


def run(job_file: Path, out: Path, url: str, *extra: str) -> int:
    return main(["run", str(job_file), "--out", str(out), "--base-url", url, "--no-progress", *extra])


def jobs(**prompts: str) -> list[dict[str, object]]:
    return [
        {"id": job_id, "model": "reve/create-image", "prompt": prompt} for job_id, prompt in prompts.items()
    ]


def images(out: Path) -> set[str]:
    return {p.name for p in (out / "images").iterdir()}


def test_an_edited_prompt_is_sent_once_and_the_old_image_and_record_stay(simulator, tmp_path, capsys):
    out = tmp_path / "out"
    job_file = write_jsonl(tmp_path / "j.jsonl", jobs(a="a red fox", b="a blue whale"))
    assert run(job_file, out, simulator.url) == ExitCode.OK
    before = images(out)
    write_jsonl(job_file, jobs(a="a red fox in the snow", b="a blue whale"))
    capsys.readouterr()

    assert run(job_file, out, simulator.url) == ExitCode.OK
    assert [body["prompt"] for body in simulator.state.bodies[2:]] == ["a red fox in the snow"]
    assert "1 job(s) changed since their record and were sent anew: a" in capsys.readouterr().err
    assert before < images(out) and len(images(out)) == 3  # the first image of `a` is still there
    records = [r for r in manifest(out) if r["job_id"] == "a"]
    assert len(records) == 2 and records[0]["images"][0]["path"] != records[1]["images"][0]["path"]
    assert records[0]["request_fingerprint"] != records[1]["request_fingerprint"]

    assert run(job_file, out, simulator.url) == ExitCode.OK  # and once only
    assert simulator.state.posts == 3
    main(["status", str(out), "--json"])
    assert json.loads(capsys.readouterr().out)["generated_anew"] == 1


def test_frozen_sends_nothing_and_names_the_changed_jobs(simulator, tmp_path, capsys):
    out = tmp_path / "out"
    job_file = write_jsonl(tmp_path / "j.jsonl", jobs(a="a red fox", b="a blue whale"))
    assert run(job_file, out, simulator.url) == ExitCode.OK
    write_jsonl(job_file, jobs(a="a red fox", b="a grey whale"))
    capsys.readouterr()
    assert (
        run(job_file, out, simulator.url, "--frozen") == ExitCode.JOBS_FAILED
    )  # a changed job left unsent is not success
    assert simulator.state.posts == 2
    assert "1 job(s) changed since their record, not sent (--frozen): b" in capsys.readouterr().err


def test_a_second_file_reusing_an_id_follows_the_same_rule(simulator, tmp_path, capsys):
    out = tmp_path / "out"
    first = write_jsonl(tmp_path / "first.jsonl", jobs(a="a red fox"))
    second = write_jsonl(tmp_path / "second.jsonl", jobs(a="a red fox at night"))
    assert run(first, out, simulator.url) == ExitCode.OK
    capsys.readouterr()
    assert run(second, out, simulator.url, "--add-job-file") == ExitCode.OK
    assert [body["prompt"] for body in simulator.state.bodies] == ["a red fox", "a red fox at night"]
    assert "sent anew: a" in capsys.readouterr().err


def test_redo_generates_a_named_job_again(simulator, tmp_path, capsys):
    out = tmp_path / "out"
    job_file = write_jsonl(tmp_path / "j.jsonl", jobs(a="a red fox", b="a blue whale"))
    assert run(job_file, out, simulator.url) == ExitCode.OK
    capsys.readouterr()
    assert run(job_file, out, simulator.url, "--redo", "b") == ExitCode.OK
    assert [body["prompt"] for body in simulator.state.bodies] == [
        "a red fox",
        "a blue whale",
        "a blue whale",
    ]
    assert "1 job(s) generated again (--redo): b" in capsys.readouterr().err
    assert len(images(out)) == 3


def test_verify_names_a_deleted_and_an_altered_image_and_a_resume_fetches_the_deleted_one(
    simulator, tmp_path, capsys
):
    out = tmp_path / "out"
    by_url = {"id": "u", "model": "reve/create-image", "prompt": "by URL"}
    inline = {"id": "i", "model": "reve/create-image", "prompt": "inline", "convert_base64_to_url": False}
    job_file = write_jsonl(tmp_path / "j.jsonl", [by_url, inline])
    assert run(job_file, out, simulator.url) == ExitCode.OK
    paths = {r["job_id"]: out / r["images"][0]["path"] for r in manifest(out)}
    paths["u"].unlink()
    altered = bytearray(paths["i"].read_bytes())
    altered[-20] ^= 0xFF  # same size, other bytes
    paths["i"].write_bytes(altered)
    capsys.readouterr()

    assert main(["verify", str(out)]) == ExitCode.JOBS_FAILED
    printed = capsys.readouterr().out
    assert f"{paths['u'].relative_to(out)}: missing (job u)" in printed
    assert f"{paths['i'].relative_to(out)}: altered: its SHA-256 is not the recorded one (job i)" in printed

    assert run(job_file, out, simulator.url) == ExitCode.OK
    assert simulator.state.posts == 2  # fetched again from the recorded URL, not generated again
    assert "1 job(s) had missing images fetched again: u" in capsys.readouterr().err
    assert paths["u"].is_file()
    assert main(["verify", str(out)]) == ExitCode.JOBS_FAILED
    printed = capsys.readouterr().out
    assert "job u" not in printed and "(job i)" in printed  # an altered image is reported, not replaced


def test_a_folder_from_schema_1_resumes_and_its_jobs_learn_their_request(simulator, tmp_path):
    out = tmp_path / "out"
    job_file = write_jsonl(tmp_path / "j.jsonl", jobs(a="a red fox"))
    assert run(job_file, out, simulator.url) == ExitCode.OK
    with sqlite3.connect(out / ".batchgen" / "state.sqlite3") as raw:  # as release 1 left it
        for column in ("fingerprint", "generation", "record_seq"):
            raw.execute(f"ALTER TABLE jobs DROP COLUMN {column}")
        raw.execute("PRAGMA user_version=1")
    assert main(["status", str(out)]) == ExitCode.OK  # read as it is, without upgrading it
    assert main(["plan", str(job_file), "--out", str(out)]) == ExitCode.OK

    assert run(job_file, out, simulator.url) == ExitCode.OK  # unchanged: nothing sent
    assert simulator.state.posts == 1
    write_jsonl(job_file, jobs(a="a red fox in the snow"))
    assert run(job_file, out, simulator.url) == ExitCode.OK  # changed since: sent anew
    assert [body["prompt"] for body in simulator.state.bodies] == ["a red fox", "a red fox in the snow"]
