"""The README's examples run as written: every YAML job file validates, every `batchgen` command
of its shell blocks runs (against the simulator, `/data` and `/srv`, `/etc`, `/var/log` moved
into a temporary folder), its Python block runs, and its crontab lines run in cron's bare
environment. Only the quick start's first block (it makes a virtualenv and installs) is left to
CI and to a new user's fresh clone."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from batchgen.simulator import SIMULATOR_KEY

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, flags=re.DOTALL)


def blocks(language: str) -> list[str]:
    return [text for lang, text in BLOCKS if lang == language]


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A checkout's job files in a temporary folder, with the places the examples name."""
    shutil.copytree(ROOT / "jobs", tmp_path / "srv" / "jobs")
    shutil.copytree(ROOT / "sample_jobs", tmp_path / "srv" / "sample_jobs")
    (tmp_path / "srv" / ".venv").symlink_to(Path(sys.prefix))  # the quick start's virtualenv
    for folder in ("data", "etc/batchgen", "var/log", "home/.config/batchgen"):
        (tmp_path / folder).mkdir(parents=True)
    for key in (tmp_path / "etc/batchgen/key", tmp_path / "home/.config/batchgen/key"):
        key.write_text(SIMULATOR_KEY)
        key.chmod(0o600)
    return tmp_path


def moved(text: str, site: Path) -> str:
    """``text`` with the places the examples name moved into ``site``."""
    places = {
        "/data/": f"{site}/data/",
        "/srv/batchgen": f"{site}/srv",
        "/etc/batchgen/": f"{site}/etc/batchgen/",
        "/var/log/": f"{site}/var/log/",
        "~/.config/": f"{site}/home/.config/",
    }
    return re.sub("|".join(map(re.escape, places)), lambda m: places[m.group(0)], text)


def test_every_yaml_example_is_a_valid_job_file(tmp_path):
    shutil.copy(ROOT / "sample_jobs" / "images" / "t-rex.png", tmp_path / "ref.png")
    examples = blocks("yaml")
    assert examples
    for number, text in enumerate(examples):
        job_file = tmp_path / f"example-{number}.yaml"
        job_file.write_text(text)
        done = subprocess.run(
            [sys.executable, "-m", "batchgen", "validate", str(job_file)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, f"README YAML example {number}:\n{text}\n{done.stderr}"


def test_every_batchgen_command_of_the_shell_examples_runs(simulator, site):
    commands = [
        line.split("#")[0].strip()
        for text in blocks("sh")[1:]  # (the first block is the quick start's install)
        for line in text.splitlines()
        if line.startswith("batchgen ")
        and "simulate-server" not in line  # (that one serves until stopped)
        and "s3://" not in line  # (test_the_object_store_examples_run)
    ]
    assert len(commands) >= 10
    run_each(commands, site, {"AIMLAPI_BASE_URL": simulator.url})
    assert simulator.state.generations == 2  # the nightly file's two jobs, paid once


def run_each(commands: list[str], site: Path, env: dict[str, str]) -> None:
    """Run each README command line in the site's ``srv`` folder; each must exit 0."""
    env = {**os.environ, "AIMLAPI_KEY": SIMULATOR_KEY, **env}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    for command in commands:
        done = subprocess.run(
            ["sh", "-c", moved(command, site)], cwd=site / "srv", env=env, capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"


def test_the_python_example_runs(simulator, site, monkeypatch):
    (code,) = blocks("python")
    monkeypatch.chdir(site / "srv")
    monkeypatch.setenv("AIMLAPI_KEY", SIMULATOR_KEY)
    monkeypatch.setenv("AIMLAPI_BASE_URL", simulator.url)
    code = moved(code, site).replace(
        'api_key="..."', f'api_key="{SIMULATOR_KEY}", base_url="{simulator.url}"'
    )
    exec(compile(code, "README.md", "exec"), {})
    assert (site / "data" / "nightly" / "report.html").is_file() and simulator.state.generations == 2


def test_the_crontab_lines_run_in_crons_bare_environment(simulator, site):
    lines = [
        line for text in blocks("cron") for line in text.splitlines() if line and not line.startswith("#")
    ]
    assert len(lines) == 2
    for line in lines:
        command = moved(line.split(None, 5)[5], site)
        done = subprocess.run(
            ["env", "-i", f"AIMLAPI_BASE_URL={simulator.url}", "sh", "-c", command], timeout=120, check=False
        )
        log = (site / "var" / "log" / "batchgen.log").read_text()
        assert done.returncode == 0, log[-3000:]
    assert log.count("run started: batchgen") == 2 and simulator.state.generations == 2


def test_the_quick_starts_run_works_in_a_fresh_checkout(site):
    quick_start = blocks("sh")[0]
    first = next(line for line in quick_start.splitlines() if line.startswith("python3 -m venv"))
    commands = [part.strip() for part in first.split("&&") if part.strip().startswith("batchgen ")]
    assert commands == ["batchgen run sample_jobs/quickstart.yaml --out out/quickstart --parents --simulate"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    for _ in range(2):  # the second time it sends nothing
        done = subprocess.run(["sh", "-c", commands[0]], cwd=site / "srv", env=env, capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
    assert (site / "srv" / "out" / "quickstart" / "report.html").is_file()
    assert "succeeded now, 0 earlier" not in done.stderr and " 0 succeeded now" in done.stderr


def test_the_object_store_examples_run(simulator, site, s3, postgres):
    commands = [
        line.split("#")[0].strip()
        for text in blocks("sh")
        for line in text.splitlines()
        if line.startswith("batchgen ") and "s3://" in line
    ]
    assert len(commands) >= 5
    s3.client.create_bucket(Bucket="my-bucket")
    run_each(commands, site, {**s3.env, "AIMLAPI_BASE_URL": simulator.url, "DATABASE_URL": postgres()})
    assert simulator.state.generations == 4  # (the nightly jobs, into two outputs: one run, one worker)
    listed = s3.client.list_objects_v2(Bucket="my-bucket", Prefix="datasets/nightly/")["Contents"]
    assert [item["Key"] for item in listed] == ["datasets/nightly/part-000000.parquet"]
