"""``--metrics-file`` (a Prometheus textfile) and ``--summary-json``, read back as a monitoring
system and a wrapper script would read them."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from conftest import create_jobs, manifest, write_jsonl
from prometheus_client.parser import text_string_to_metric_families

from batchgen.cli import ExitCode, main
from batchgen.simulator import SIMULATOR_KEY


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_the_metrics_file_parses_and_its_job_counts_are_the_manifests(make_simulator, tmp_path, monkeypatch):
    monkeypatch.setenv("AIMLAPI_KEY", SIMULATOR_KEY)
    sim = make_simulator(error_429=0.3, seed=1)
    jobs = [*create_jobs(12), {"id": "flagged", "model": "reve/create-image", "prompt": "[[violation]]"}]
    out = tmp_path / "o"
    prom, summary = tmp_path / "batchgen.prom", tmp_path / "summary.json"
    args = ["run", str(write_jsonl(tmp_path / "j.jsonl", jobs)), "--out", str(out), "--base-url", sim.url]
    code = main([*args, "--metrics-file", str(prom), "--summary-json", str(summary)])
    assert code == ExitCode.JOBS_FAILED

    found = samples(prom.read_text())
    last = {record["job_id"]: record["status"] for record in manifest(out)}  # the last record is the outcome
    by_status = Counter(last.values())
    assert found[("batchgen_jobs", (("outcome", "succeeded"),))] == by_status["succeeded"] == 12
    assert found[("batchgen_jobs", (("outcome", "failed"),))] == by_status["failed"] == 1
    assert found[("batchgen_jobs", (("outcome", "pending"),))] == 0
    assert found[("batchgen_run_jobs", (("outcome", "succeeded"),))] == 12
    assert found[("batchgen_run_images", ())] == 12
    assert found[("batchgen_run_usd", ())] == pytest.approx(13 * 0.04)
    assert found[("batchgen_run_requests", ())] == sim.state.posts
    assert found[("batchgen_run_throttled", ())] == sim.state.posts - sim.state.generations > 0
    assert found[("batchgen_run_retries", ())] >= found[("batchgen_run_throttled", ())]
    assert found[("batchgen_last_success_timestamp_seconds", ())] > 0
    assert not list(tmp_path.glob("*.prom.*"))  # written to a temporary file and renamed

    wrapped = json.loads(summary.read_text())
    assert wrapped["exit_code"] == ExitCode.JOBS_FAILED and wrapped["total"] == 13
    assert wrapped["jobs"]["succeeded"] == 12 and wrapped["jobs"]["failed_final"] == 1
    assert wrapped["stop_reason"] is None and wrapped["usd"] == pytest.approx(0.52)
