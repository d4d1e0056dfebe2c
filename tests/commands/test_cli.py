"""The command line: exit codes, validate/status/schema, signals, the lock, and the secret key."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MALFORMED_JOB_FILES, SAMPLES, create_jobs, manifest, write_jsonl

from batchgen.cli import ExitCode, main
from batchgen.simulator import SIMULATOR_KEY
from batchgen.store import OutputFolder
from batchgen.store.files import DirectoryLock


def batchgen(*args: str, env: dict[str, str] | None = None, **popen) -> subprocess.Popen[bytes]:
    """Start the real CLI in a subprocess."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AIMLAPI_")} | (env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "batchgen", *args],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **popen,
    )


def run_args(job_file: Path, out: Path, url: str, *extra: str) -> list[str]:
    """The argument list of `batchgen run` against the simulator at ``url``."""
    return ["run", str(job_file), "--out", str(out), "--base-url", url, *extra]


def test_help_explains_every_option_with_units(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    for word in (
        "--concurrency",
        "--rpm",
        "per minute",
        "seconds",
        "bytes",
        "--retry-failed",
        "--simulate",
        "--max-usd",
        "--metrics-file",
        "default",
    ):
        assert word in text
    assert "(default: None)" not in text and "(default: False)" not in text  # only defaults worth reading


def test_validate_reports_counts(capsys):
    assert main(["validate", str(SAMPLES / "quickstart.yaml")]) == ExitCode.OK
    assert "5 valid jobs" in capsys.readouterr().out


def test_invalid_job_file_exits_2_and_sends_and_writes_nothing(simulator, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AIMLAPI_KEY", SIMULATOR_KEY)
    job_file = write_jsonl(tmp_path / "bad.jsonl", [{"model": "reve/create-image", "promt": "x"}])
    out = tmp_path / "out"
    code = main(run_args(job_file, out, simulator.url))
    assert code == ExitCode.INVALID_INPUT
    assert "did you mean 'prompt'?" in capsys.readouterr().err
    assert simulator.state.posts == 0 and not out.exists()


@pytest.mark.parametrize("name", sorted(MALFORMED_JOB_FILES))
def test_every_kind_of_malformed_file_exits_2_naming_where(simulator, tmp_path, capsys, monkeypatch, name):
    monkeypatch.setenv("AIMLAPI_KEY", SIMULATOR_KEY)
    job_file = tmp_path / name
    job_file.write_bytes(MALFORMED_JOB_FILES[name])
    out = tmp_path / "out"
    assert main(run_args(job_file, out, simulator.url)) == ExitCode.INVALID_INPUT
    assert f"{job_file}" in capsys.readouterr().err
    assert simulator.state.posts == 0 and not out.exists()


def test_missing_key_is_a_usage_error(tmp_path, capsys):
    code = main(["run", str(SAMPLES / "quickstart.yaml"), "--out", str(tmp_path / "o")])
    assert code == ExitCode.INVALID_INPUT and "AIMLAPI_KEY" in capsys.readouterr().err


def test_exit_codes_for_success_final_failure_and_bad_key(simulator, tmp_path, monkeypatch):
    job_file = write_jsonl(tmp_path / "ok.jsonl", create_jobs(2))
    base = ["--base-url", simulator.url, "--rpm", "6000"]
    monkeypatch.setenv("AIMLAPI_KEY", SIMULATOR_KEY)
    assert main(["run", str(job_file), "--out", str(tmp_path / "a"), *base]) == ExitCode.OK

    bad = write_jsonl(tmp_path / "v.jsonl", [{"model": "reve/create-image", "prompt": "[[violation]]"}])
    assert main(["run", str(bad), "--out", str(tmp_path / "b"), *base]) == ExitCode.JOBS_FAILED

    monkeypatch.setenv("AIMLAPI_KEY", "not-the-key")
    assert main(["run", str(job_file), "--out", str(tmp_path / "c"), *base]) == ExitCode.BAD_KEY


def test_internal_error_exits_70_without_hanging(simulator, tmp_path, monkeypatch):
    async def bug(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(OutputFolder, "finish_with_images", bug)
    monkeypatch.setenv("AIMLAPI_KEY", SIMULATOR_KEY)
    job_file = write_jsonl(tmp_path / "j.jsonl", create_jobs(5))
    code = main(run_args(job_file, tmp_path / "o", simulator.url, "--concurrency", "1"))
    assert code == ExitCode.INTERNAL


def test_status_shows_counts_money_failures_the_last_run_and_who_holds_the_folder(
    simulator, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("AIMLAPI_KEY", SIMULATOR_KEY)
    jobs = [*create_jobs(3), {"id": "bad", "model": "reve/create-image", "prompt": "[[violation]]"}]
    out = tmp_path / "o"
    main(run_args(write_jsonl(tmp_path / "j.jsonl", jobs), out, simulator.url))

    async def leave_one_in_flight() -> None:  # as a run killed between dispatch and answer would
        async with OutputFolder.open(out) as folder:
            await folder.dispatched("lost", "reve/create-image", "bg.lost.00.a1", "2026-01-01T00:00:00Z")

    asyncio.run(leave_one_in_flight())
    capsys.readouterr()
    assert main(["status", str(out), "--json"]) == ExitCode.OK
    status = json.loads(capsys.readouterr().out)
    assert {k: status[k] for k in ("total", "succeeded", "failed", "failed_retryable", "in_progress")} == {
        "total": 5,
        "succeeded": 3,
        "failed": 1,
        "failed_retryable": 0,
        "in_progress": 1,
    }
    assert status["tokens_used"] == 4 * 126000
    assert status["spent"]["usd"] == pytest.approx(0.16) and status["spent"]["credits"] == 4 * 2646
    assert status["running_pid"] is None
    assert status["last_run"]["stop_reason"] is None and status["last_run"]["succeeded"] == 3
    assert status["in_flight_of_a_dead_run"] == [{"id": "lost", "client_request_ids": ["bg.lost.00.a1"]}]
    assert status["failed_jobs"] == [
        {
            "id": "bad",
            "kind": "ContentViolation",
            "message": "the API flagged a content violation; no image is kept",
            "retried_on_resume": False,
        }
    ]
    lock = DirectoryLock(out / ".batchgen" / "lock")
    lock.acquire()  # as a live run holds it
    try:
        assert main(["status", str(out)]) == ExitCode.OK
        text = capsys.readouterr().out
    finally:
        lock.release()
    assert f"a run holds the folder now: pid {os.getpid()}" in text
    assert "failed: bad [violation, failed for good]" in text
    assert main(["status", str(tmp_path / "nothing")]) == ExitCode.INVALID_INPUT


def test_sigterm_finishes_in_flight_requests_and_exits_75(make_simulator, tmp_path):
    sim = make_simulator(latency=0.5)
    job_file = write_jsonl(tmp_path / "j.jsonl", create_jobs(20))
    out = tmp_path / "o"
    args = run_args(job_file, out, sim.url, "--concurrency", "2", "--rpm", "6000")
    proc = batchgen(*args, env={"AIMLAPI_KEY": SIMULATOR_KEY})
    assert sim.state.wait_for(lambda s: s.posts >= 2, timeout=30)

    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)

    assert proc.returncode == ExitCode.RESUMABLE, stderr.decode()
    assert sim.state.generations == sim.state.posts  # in-flight requests were answered, not dropped
    assert len(manifest(out)) == sim.state.generations < 20
    resumed = batchgen(*args, env={"AIMLAPI_KEY": SIMULATOR_KEY})  # the lock was released
    resumed.communicate(timeout=120)
    assert resumed.returncode == ExitCode.OK
    assert sim.state.generations == 20


def test_second_concurrent_run_is_refused_with_73(make_simulator, tmp_path, monkeypatch):
    sim = make_simulator(latency=0.5)
    job_file = write_jsonl(tmp_path / "j.jsonl", create_jobs(6))
    out = tmp_path / "o"
    args = run_args(job_file, out, sim.url, "--concurrency", "1")
    first = batchgen(*args, env={"AIMLAPI_KEY": SIMULATOR_KEY})
    try:
        assert sim.state.wait_for(lambda s: s.posts >= 1, timeout=30)
        posts = sim.state.posts
        monkeypatch.setenv("AIMLAPI_KEY", SIMULATOR_KEY)
        assert main(args) == ExitCode.LOCKED
        assert main(["status", str(out)]) == ExitCode.OK  # status reads a live run's folder
        assert sim.state.posts <= posts + 1  # only the first run's own next request, if any
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)


def test_key_never_appears_in_anything_written(make_simulator, tmp_path):
    sim = make_simulator(error_500=0.3, seed=5)
    job_file = write_jsonl(tmp_path / "j.jsonl", create_jobs(4))
    out = tmp_path / "o"
    ok = batchgen(
        "run",
        str(job_file),
        "--out",
        str(out),
        "--base-url",
        sim.url,
        "--debug",
        "--rpm",
        "6000",
        env={"AIMLAPI_KEY": SIMULATOR_KEY},
    )
    ok_out, ok_err = ok.communicate(timeout=120)
    wrong_key = "sk-live-0123456789abcdef"
    bad = batchgen(
        "run",
        str(job_file),
        "--out",
        str(tmp_path / "o2"),
        "--base-url",
        sim.url,
        "--debug",
        env={"AIMLAPI_KEY": wrong_key},
    )
    bad_out, bad_err = bad.communicate(timeout=120)

    assert ok.returncode == ExitCode.OK and bad.returncode == ExitCode.BAD_KEY
    assert b"<redacted>" in ok_err  # debug logging ran, with Authorization redacted
    written = [ok_out, ok_err, bad_out, bad_err]
    written += [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()]
    assert not any(SIMULATOR_KEY.encode() in blob or wrong_key.encode() in blob for blob in written)


def test_key_file_readable_by_others_is_warned_about(simulator, tmp_path, caplog):
    key_file = tmp_path / "key"
    key_file.write_text(SIMULATOR_KEY + "\n")
    key_file.chmod(0o644)
    job_file = write_jsonl(tmp_path / "j.jsonl", create_jobs(1))
    code = main(run_args(job_file, tmp_path / "o", simulator.url, "--api-key-file", str(key_file)))
    assert code == ExitCode.OK
    assert any("readable by other users" in r.message for r in caplog.records)


def test_simulate_flag_runs_offline(tmp_path):
    out = tmp_path / "o"
    proc = batchgen("run", str(SAMPLES / "quickstart.yaml"), "--out", str(out), "--simulate", "--rpm", "6000")
    proc.communicate(timeout=120)
    assert proc.returncode == ExitCode.OK
    assert len(list((out / "images").glob("*.png"))) == 6


def test_schema_command_prints_json(capsys):
    assert main(["schema"]) == ExitCode.OK
    assert json.loads(capsys.readouterr().out)["title"] == "batchgen job file"


def test_module_and_console_script_agree():
    assert Path(sys.executable).exists()
    proc = batchgen("--help")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and b"validate" in out and b"simulate-server" in out


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("batchgen ")


def test_a_yaml_file_mixing_every_model_sends_exactly_the_merged_fields(simulator, tmp_path, monkeypatch):
    monkeypatch.setenv("AIMLAPI_KEY", SIMULATOR_KEY)
    (tmp_path / "ref.png").write_bytes((SAMPLES / "images" / "t-rex.png").read_bytes())
    job_file = tmp_path / "mixed.yaml"
    job_file.write_text(
        "defaults:\n"
        "  reve/create-image:\n"
        "    aspect_ratio: 16:9\n"  # unquoted: YAML 1.1 would read the number 969
        "  reve/edit-image: {convert_base64_to_url: no}\n"  # `no` stays a string: the API refuses it
        "  flux/dev/image-to-image: {num_images: 2}\n"
        "jobs:\n"
        "  - {id: c, model: reve/create-image, prompt: a}\n"
        "  - {id: e, model: reve/edit-image, prompt: b, image_url: ref.png, convert_base64_to_url: false}\n"
        "  - {id: r, model: reve/remix-edit-image, prompt: c, image_urls: [ref.png]}\n"
        "  - {id: f, model: flux/dev/image-to-image, prompt: d, image_url: ref.png}\n"
    )
    assert main(run_args(job_file, tmp_path / "o", simulator.url, "--no-progress")) == ExitCode.OK
    sent = {
        body["prompt"]: {k: v for k, v in body.items() if k not in ("image_url", "image_urls")}
        for body in simulator.state.bodies
    }
    assert sent == {
        "a": {"model": "reve/create-image", "prompt": "a", "aspect_ratio": "16:9"},
        "b": {"model": "reve/edit-image", "prompt": "b", "convert_base64_to_url": False},
        "c": {"model": "reve/remix-edit-image", "prompt": "c"},
        "d": {"model": "flux/dev/image-to-image", "prompt": "d", "num_images": 2},
    }
    assert all(
        str(body.get("image_url") or body.get("image_urls", [""])[0]).startswith("data:image/png;base64,")
        for body in simulator.state.bodies
        if body["model"] != "reve/create-image"
    )


def test_a_stop_is_explained_once_with_one_piece_of_advice(simulator, tmp_path):
    job_file = write_jsonl(tmp_path / "j.jsonl", create_jobs(3))
    proc = batchgen(*run_args(job_file, tmp_path / "o", simulator.url), env={"AIMLAPI_KEY": "bad"})
    _, raw = proc.communicate(timeout=60)
    err = raw.decode()
    assert proc.returncode == ExitCode.BAD_KEY
    assert err.count("set a valid key in AIMLAPI_KEY or --api-key-file, then run again to resume") == 1
    assert "run the same command again" not in err
    assert err.count("requires a valid API key") == 2  # the log line as it happens; the summary
    assert "stopped at 0/3" in err and "finished" not in err
