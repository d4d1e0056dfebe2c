"""Paid as meant (issue "paid as meant"): what a user meant is what gets sent and paid for,
once, and every screen agrees on what it cost. Each case through the CLI, asserting the bodies
the simulator received, exact money, exit codes and messages."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from aiohttp import web
from conftest import create_jobs, manifest, run_cli, write_jsonl

from batchgen import run_batch
from batchgen.api.answers import Answer, ImageRef
from batchgen.cli import ExitCode, main
from batchgen.simulator import SIMULATOR_KEY
from batchgen.simulator.pictures import render_png
from batchgen.store import OutputFolder

SIM_ENV = {"AIMLAPI_KEY": SIMULATOR_KEY}


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """The real CLI, run to completion (bounded by ``timeout``)."""
    return run_cli(*args, key=SIMULATOR_KEY, env=env, timeout=timeout)


def run(job_file: Path, out: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return cli("run", str(job_file), "--out", str(out), "--base-url", url, "--no-progress", *extra)


def status(out: Path) -> dict[str, object]:
    return json.loads(cli("status", str(out), "--json").stdout)


README_DEFAULTS = """\
defaults:
  model: reve/create-image          # common: reaches every job (a job's own `model` wins)
  reve/create-image:
    aspect_ratio: "16:9"
    convert_base64_to_url: false
  flux/dev/image-to-image:
    num_images: 2
    strength: 0.8
jobs:
  - {id: hero, prompt: "a lighthouse at dusk"}
  - {id: hero-variants, model: flux/dev/image-to-image, prompt: "in watercolour", image_url: ref.png}
"""


def test_1_a_models_defaults_reach_a_job_whose_model_is_a_common_default(simulator, tmp_path):
    shutil.copy(Path(__file__).parents[1] / "sample_jobs" / "images" / "t-rex.png", tmp_path / "ref.png")
    job_file = tmp_path / "mixed.yaml"
    job_file.write_text(README_DEFAULTS)  # the README's example, as written

    shown = cli("validate", str(job_file), "--show-bodies")
    done = run(job_file, tmp_path / "out", simulator.url)

    bodies = {json.loads(line)["id"]: json.loads(line)["body"] for line in shown.stdout.splitlines()}
    assert bodies["hero"] == {
        "model": "reve/create-image",
        "aspect_ratio": "16:9",
        "convert_base64_to_url": False,
        "prompt": "a lighthouse at dusk",
    }
    assert done.returncode == ExitCode.OK, done.stderr
    sent = {body["prompt"]: body for body in simulator.state.bodies}
    assert sent["a lighthouse at dusk"] == bodies["hero"]  # the body sent is the body shown
    assert sent["in watercolour"]["num_images"] == 2 and sent["in watercolour"]["strength"] == 0.8
    hero = next(r for r in manifest(tmp_path / "out") if r["job_id"] == "hero")
    assert (hero["images"][0]["width"], hero["images"][0]["height"]) == (1360, 768)  # 16:9, not 3:2


def test_2_the_retry_file_of_batchgen_failed_never_starts_a_re_pay_loop(simulator, tmp_path):
    jobs = [*create_jobs(4), {"id": "bad", "model": "reve/create-image", "prompt": "a cat [[violation]]"}]
    main_file, out = write_jsonl(tmp_path / "shop.jsonl", jobs), tmp_path / "out"
    assert run(main_file, out, simulator.url).returncode == ExitCode.JOBS_FAILED

    retry = cli("failed", str(out)).stdout.replace(" [[violation]]", "")  # the user fixes the prompt
    retry_file = tmp_path / "retry.jsonl"
    retry_file.write_text(retry)
    rounds = [run(retry_file, out, simulator.url), run(main_file, out, simulator.url)]
    rounds += [run(retry_file, out, simulator.url), run(main_file, out, simulator.url)]

    assert [r.returncode for r in rounds] == [ExitCode.OK] * 4, rounds[0].stderr
    assert simulator.state.generations == 6  # 5 jobs, and the fixed one once more: never again
    assert [r["job_id"] for r in manifest(out)].count("bad") == 2
    counts = status(out)
    assert (counts["total"], counts["succeeded"], counts["pending"]) == (5, 5, 0)


def test_3_a_moved_job_file_just_works_and_plan_agrees(simulator, tmp_path):
    first = write_jsonl(tmp_path / "products.jsonl", create_jobs(40))
    out = tmp_path / "out"
    assert run(first, out, simulator.url).returncode == ExitCode.OK
    (tmp_path / "shop").mkdir()
    moved = first.rename(tmp_path / "shop" / "renamed.jsonl")

    plan = json.loads(cli("plan", str(moved), "--out", str(out), "--json").stdout)
    again = run(moved, out, simulator.url)

    assert plan["counts"]["to_send"] == plan["counts"]["changed"] == 0 and plan["counts"]["succeeded"] == 40
    assert again.returncode == ExitCode.OK and simulator.state.generations == 40
    counts = status(out)
    assert (counts["total"], counts["succeeded"], counts["pending"], counts["not_in_job_file"]) == (
        40,
        40,
        0,
        0,
    )


def test_3b_jobs_that_left_the_file_are_marked_in_status_and_the_report(simulator, tmp_path):
    job_file, out = write_jsonl(tmp_path / "j.jsonl", create_jobs(3)), tmp_path / "out"
    assert run(job_file, out, simulator.url).returncode == ExitCode.OK
    write_jsonl(job_file, create_jobs(2))  # job-2 removed

    assert run(job_file, out, simulator.url).returncode == ExitCode.OK
    text = cli("status", str(out)).stdout

    assert "not in the job file: 1 job(s), records kept: job-2" in text
    assert "total: 2" in text and "not in the job file" in (out / "report.html").read_text()


def test_4_every_screen_shows_the_same_exact_money(serve_in_thread, tmp_path):
    png = base64.b64encode(render_png(8, 8, 1)).decode()

    async def handle(request: web.Request) -> web.StreamResponse:  # 5 x $0.359 = $1.795 exactly
        return web.json_response(
            {"data": [{"b64_json": png}]},
            status=201,
            headers={"x-aimlapi-usd-spent": "0.359", "x-aimlapi-credits-used": "23.3"},
        )

    server = serve_in_thread(handle)
    job_file, out = write_jsonl(tmp_path / "j.jsonl", create_jobs(5)), tmp_path / "out"
    metrics, summary = tmp_path / "m.prom", tmp_path / "s.json"
    done = run(job_file, out, server.url, "--metrics-file", str(metrics), "--summary-json", str(summary))
    text, data = cli("status", str(out)).stdout, status(out)

    assert done.returncode == ExitCode.OK
    assert "spent this run: $1.80 / 117 credits; in this folder, all runs: $1.80 / 117 credits" in done.stderr
    assert "spent in this folder, all runs: $1.80 / 117 credits" in text
    assert Decimal(str(data["spent"]["usd"])) == Decimal("1.795")
    written = json.loads(summary.read_text())
    assert Decimal(str(written["usd"])) == Decimal(str(written["folder_usd"])) == Decimal("1.795")
    assert (
        "batchgen_folder_usd 1.795" in metrics.read_text() and "batchgen_run_usd 1.795" in metrics.read_text()
    )
    assert "spent in this folder, all runs: $1.80 / 117 credits" in (out / "report.html").read_text()


def test_5_a_fresh_image_url_that_404s_a_moment_is_saved_in_the_same_run(make_simulator, tmp_path):
    sim = make_simulator(cdn_404=0.05, seed=3)
    job_file, out = write_jsonl(tmp_path / "j.jsonl", create_jobs(200)), tmp_path / "out"

    done = run(job_file, out, sim.url, "--concurrency", "8")

    assert done.returncode == ExitCode.OK, done.stderr[-2000:]
    assert sim.state.cdn_404s >= 3  # the fault happened
    assert sim.state.generations == 200 and len(manifest(out)) == 200  # none paid twice


def test_6_the_crontab_line_works_with_crons_bare_environment(tmp_path):
    batchgen = Path(sys.executable).with_name("batchgen")  # the virtualenv's, as the README's line names it
    sample = Path(__file__).parents[1] / "sample_jobs" / "quickstart.yaml"
    log = tmp_path / "batchgen.log"
    line = (
        f"cd {sample.parents[1]} && {batchgen} run {sample} --out {tmp_path}/nightly --simulate >> {log} 2>&1"
    )

    done = subprocess.run(["env", "-i", "sh", "-c", line], timeout=180, check=False)

    assert done.returncode == ExitCode.OK, log.read_text()[-2000:]
    started = next(line for line in log.read_text().splitlines() if "run started" in line)
    assert "run started: batchgen 0.1.0, job file" in started and f"{tmp_path}/nightly" in started


def test_7_exit_codes_that_mean_what_they_say(simulator, tmp_path):
    job_file = write_jsonl(tmp_path / "j.jsonl", create_jobs(2))
    a_file = tmp_path / "a-file"
    a_file.write_text("")

    typo = run(job_file, tmp_path / "typo" / "ouut", simulator.url)
    not_a_folder = run(job_file, a_file, simulator.url)
    unknown = run(job_file, tmp_path / "o", simulator.url, "--only", "no-such-id")
    parents = run(job_file, tmp_path / "new" / "nightly", simulator.url, "--parents")

    assert typo.returncode == ExitCode.INVALID_INPUT and "--parents" in typo.stderr
    assert not (tmp_path / "typo").exists()
    assert not_a_folder.returncode == ExitCode.INVALID_INPUT
    assert unknown.returncode == ExitCode.INVALID_INPUT and not (tmp_path / "o").exists()
    assert parents.returncode == ExitCode.OK
    assert simulator.state.posts == 2


def test_7b_a_read_only_output_folder_is_a_permanent_error(simulator, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        done = run(write_jsonl(tmp_path / "j.jsonl", create_jobs(1)), folder, simulator.url)
    finally:
        subprocess.run(["umount", str(folder)], check=False)
    assert done.returncode == ExitCode.INVALID_INPUT and "cannot be written" in done.stderr
    assert simulator.state.posts == 0


def test_8_closed_pipes_and_busy_ports(simulator, tmp_path):
    out = tmp_path / "out"
    assert run(write_jsonl(tmp_path / "j.jsonl", create_jobs(30)), out, simulator.url).returncode == 0
    for command in (["status", str(out)], ["failed", str(out)], ["schema"]):
        for _ in range(5):
            proc = subprocess.Popen(
                [sys.executable, "-m", "batchgen", *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            assert proc.stdout is not None
            proc.stdout.read(1)
            proc.stdout.close()  # as `| head -c1` does
            _, stderr = proc.communicate(timeout=60)
            assert proc.returncode == ExitCode.OK and b"internal error" not in stderr, stderr

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = cli("simulate-server", "--port", str(taken.getsockname()[1]), timeout=60)
    assert busy.returncode == ExitCode.INVALID_INPUT and "cannot listen" in busy.stderr
    assert "Traceback" not in busy.stderr
    for option in (["--error-429", "1.5"], ["--latency", "-1"], ["--port", "70000"]):
        bad = cli("simulate-server", *option, timeout=60)
        assert bad.returncode == ExitCode.INVALID_INPUT and option[0] in bad.stderr


def test_9_a_second_ctrl_c_names_the_requests_it_cancelled_and_the_next_run_warns_first(
    make_simulator, tmp_path
):
    sim = make_simulator(latency=30.0)
    job_file, out = write_jsonl(tmp_path / "j.jsonl", create_jobs(6)), tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchgen", "run", str(job_file), "--out", str(out), "--base-url", sim.url,
         "--no-progress", "--concurrency", "4"],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **SIM_ENV}, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    with sim.state.changed:
        assert sim.state.changed.wait_for(lambda: sim.state.posts >= 4, timeout=60)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    sim.faults.latency = 0.0
    resumed = run(job_file, out, sim.url)

    assert proc.returncode == ExitCode.RESUMABLE
    assert "4 request(s) cancelled in flight, each possibly charged once" in stderr
    assert "X-Client-Request-Id bg.job-" in stderr
    warned = resumed.stderr.index("was in flight when an earlier run stopped")
    assert warned < resumed.stderr.index("6 jobs:") and resumed.returncode == ExitCode.OK


def test_10_a_daily_cap_kept_in_the_folder_holds_for_every_later_run(simulator, tmp_path):
    job_file, out = write_jsonl(tmp_path / "j.jsonl", create_jobs(5)), tmp_path / "out"

    capped = run(job_file, out, simulator.url, "--max-usd-per-day", "0.10", "--concurrency", "1")
    later = run(job_file, out, simulator.url)  # cron's next hourly retry, without the option
    lifted = run(job_file, out, simulator.url, "--max-usd-per-day", "off")

    assert capped.returncode == later.returncode == ExitCode.RESUMABLE
    assert "budget of" in later.stderr and "in this folder, all runs" in later.stderr
    assert lifted.returncode == ExitCode.OK and simulator.state.generations == 5
    assert len(manifest(out)) == 5


def test_11_the_library_call_takes_plain_strings_and_makes_the_report(simulator, tmp_path, monkeypatch):
    write_jsonl(tmp_path / "jobs.jsonl", create_jobs(2))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AIMLAPI_KEY", SIMULATOR_KEY)
    monkeypatch.setenv("AIMLAPI_BASE_URL", simulator.url)

    report = asyncio.run(run_batch("jobs.jsonl", "out", progress=False))

    assert report.complete and report.tally.succeeded == 2
    assert (tmp_path / "out" / "report.html").is_file()


def test_11b_plan_with_nothing_to_send_has_a_known_cost(simulator, tmp_path):
    job_file, out = write_jsonl(tmp_path / "j.jsonl", create_jobs(2)), tmp_path / "out"
    assert run(job_file, out, simulator.url).returncode == ExitCode.OK
    plan = cli("plan", str(job_file), "--out", str(out)).stdout
    assert "cost unknown" not in plan and "total: 0 requests, 0 images, ~$0.00" in plan


def test_11c_the_help_lists_every_reason_to_resume(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "spend budget reached" in text and "(INT, TERM, HUP)" in text


async def test_1b_an_edit_of_a_job_paid_but_not_yet_saved_is_still_generated_anew(simulator, tmp_path):
    job_file = write_jsonl(
        tmp_path / "j.jsonl", [{"id": "pet", "model": "reve/create-image", "prompt": "a cat"}]
    )
    out = tmp_path / "out"
    paid = await asyncio.to_thread(lambda: run(job_file, out, simulator.url))
    assert paid.returncode == ExitCode.OK
    async with OutputFolder.open(
        out, source=str(job_file.resolve())
    ) as folder:  # as a kill mid-download leaves it
        cat = (await folder.rows(["pet"]))["pet"]
        await folder.dispatched(
            "pet",
            "reve/create-image",
            "bg.pet.x.a2",
            "2026-01-01T00:00:00Z",
            fingerprint=cat.fingerprint or "",
        )
        await folder.answered("pet", Answer(images=[ImageRef(url=f"{simulator.url}/cdn/1360x768-0a.png")]))
    write_jsonl(job_file, [{"id": "pet", "model": "reve/create-image", "prompt": "a dog"}])

    resumed = await asyncio.to_thread(lambda: run(job_file, out, simulator.url))  # saves the paid cat
    plan = json.loads(
        (await asyncio.to_thread(lambda: cli("plan", str(job_file), "--out", str(out), "--json"))).stdout
    )

    assert resumed.returncode == ExitCode.OK
    assert plan["counts"]["changed"] == 1  # the dog is still to be made: the edit was not lost
