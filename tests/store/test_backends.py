"""The store's seams hold: the run's core promises, run through ``run_batch`` on both state
and output backends (SQLite in a local folder; the in-memory pair of ``memory_backends``),
with the same assertions. What a backend must keep: one record per finished attempt, images
put once and measured, nothing paid twice on a resume, a job in flight reported, a lost state
rebuilt from the manifest, a budget that stops the run, a changed job generated anew."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import create_jobs, fast_settings, write_jsonl
from memory_backends import MemoryBackends, MemoryState

from batchgen.errors import OutputLockedError
from batchgen.outcome import JobState, StopReason
from batchgen.run.runner import RunReport, run_batch
from batchgen.store import Backends, OutputFolder


@dataclass
class Output:
    """One output under test, whichever its backends; read back the same way for both."""

    kind: str
    out: Path
    memory: MemoryBackends | None = None

    def backends(self) -> Backends | None:
        return self.memory.backends() if self.memory else None

    async def run(self, job_file: Path, url: str, **overrides: Any) -> RunReport:
        return await run_batch(
            job_file, self.out, fast_settings(url, **overrides), progress=False, backends=self.backends()
        )

    def records(self) -> list[dict[str, Any]]:
        if self.memory:
            return self.memory.output.records()
        path = self.out / "manifest.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]

    def image(self, path: str) -> bytes:
        return self.memory.output.objects[path] if self.memory else (self.out / path).read_bytes()

    def lose_state(self) -> None:
        if self.memory:
            self.memory.state = MemoryState()
        else:
            for name in ("state.sqlite3", "state.sqlite3-wal", "state.sqlite3-shm"):
                (self.out / ".batchgen" / name).unlink(missing_ok=True)


@pytest.fixture(params=["local", "memory"])
def output(request: pytest.FixtureRequest, tmp_path: Path) -> Output:
    return Output(request.param, tmp_path / "out", MemoryBackends() if request.param == "memory" else None)


async def test_every_job_is_recorded_once_with_its_images_put_and_measured(output, simulator, tmp_path):
    jobs = write_jsonl(tmp_path / "jobs.jsonl", create_jobs(5))
    report = await output.run(jobs, simulator.url)
    assert report.complete and report.tally.succeeded == 5
    records = output.records()
    assert sorted(r["job_id"] for r in records) == [f"job-{i}" for i in range(5)]
    for record in records:
        (image,) = record["images"]
        data = output.image(image["path"])
        assert len(data) == image["bytes"] and hashlib.sha256(data).hexdigest() == image["sha256"]
    assert report.folder is not None and report.folder.succeeded == 5


async def test_a_resume_pays_for_nothing_done(output, simulator, tmp_path):
    jobs = write_jsonl(tmp_path / "jobs.jsonl", create_jobs(4))
    await output.run(jobs, simulator.url)
    again = await output.run(jobs, simulator.url)
    assert simulator.state.generations == 4
    assert again.tally.already_done == 4 and len(output.records()) == 4


async def test_a_job_left_in_flight_is_reported_and_sent_again(output, simulator, tmp_path):
    jobs = write_jsonl(tmp_path / "jobs.jsonl", create_jobs(2))
    async with OutputFolder.open(output.out, backends=output.backends()) as folder:
        await folder.dispatched("job-0", "reve/create-image", "bg.job-0.lost.a1", "2026-12-06T00:00:00Z")
    report = await output.run(jobs, simulator.url)
    assert report.in_flight_before == [("job-0", ["bg.job-0.lost.a1"])]
    assert report.complete and simulator.state.generations == 2


async def test_a_lost_state_is_rebuilt_from_the_manifest_without_paying_again(output, simulator, tmp_path):
    jobs = write_jsonl(tmp_path / "jobs.jsonl", create_jobs(3))
    first = await output.run(jobs, simulator.url)
    output.lose_state()
    again = await output.run(jobs, simulator.url)
    assert simulator.state.generations == 3 and again.tally.already_done == 3
    assert again.folder is not None and again.folder.total_spent == first.folder.total_spent


async def test_a_violation_fails_for_good_and_is_not_sent_again(output, simulator, tmp_path):
    jobs = write_jsonl(tmp_path / "jobs.jsonl", create_jobs(1, prompt="a [[violation]] here"))
    first = await output.run(jobs, simulator.url)
    again = await output.run(jobs, simulator.url)
    assert first.tally.failed_final == 1 and again.tally.failed_final == 1
    assert simulator.state.generations == 1
    assert [r["error"]["kind"] for r in output.records()] == ["ContentViolation"]


async def test_a_budget_stops_the_run_and_the_folder_spend_is_exact(output, simulator, tmp_path):
    jobs = write_jsonl(tmp_path / "jobs.jsonl", create_jobs(6))
    report = await output.run(jobs, simulator.url, max_usd=Decimal("0.1"), concurrency=1)
    assert report.stop_reason is StopReason.BUDGET
    assert report.folder is not None
    spent = report.folder.total_spent.usd
    assert 0 < spent <= Decimal("0.1") and spent == report.tally.spent.usd


async def test_a_changed_job_is_generated_anew_under_new_image_names(output, simulator, tmp_path):
    path = tmp_path / "jobs.jsonl"
    await output.run(write_jsonl(path, create_jobs(1)), simulator.url)
    report = await output.run(write_jsonl(path, create_jobs(1, aspect_ratio="16:9")), simulator.url)
    assert report.changed == ["job-0"] and simulator.state.generations == 2
    first, second = (r["images"][0]["path"] for r in output.records())
    assert first != second and output.image(first) and output.image(second)


async def test_a_second_run_on_the_same_output_is_refused(output, simulator, tmp_path):
    async with OutputFolder.open(output.out, backends=output.backends()) as folder:
        await folder.dispatched("a", "reve/create-image", "bg.a.1", "t")
        with pytest.raises(OutputLockedError):
            async with OutputFolder.open(output.out, backends=output.backends()):
                pass
        assert (await folder.rows(["a"]))["a"].state is JobState.DISPATCHED
