"""The store's seams hold: the run's core promises, run through ``run_batch`` on every state
and output backend (SQLite in a local folder; the in-memory pair of ``memory_backends``; a
PostgreSQL state, on a private server, beside a local folder),
with the same assertions. What a backend must keep: one record per finished attempt, images
put once and measured, nothing paid twice on a resume, a job in flight reported, a lost state
rebuilt from the manifest, a budget that stops the run, a changed job generated anew."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import random
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import create_jobs, fast_settings, write_jsonl
from memory_backends import MemoryBackends, MemoryState
from PIL import Image

from batchgen.api.answers import Answer
from batchgen.errors import OutputLockedError
from batchgen.outcome import JobState, Status, StopReason
from batchgen.run.runner import RunReport, run_batch
from batchgen.store import Backends, ManifestRecord, OutputFolder, TransitionError
from batchgen.store.folder import SPILL_BYTES
from batchgen.store.local import LocalFolder
from batchgen.store.postgres import PostgresState


@dataclass
class Output:
    """One output under test, whichever its backends; read back the same way for both."""

    kind: str
    out: Path
    memory: MemoryBackends | None = None
    database: str | None = None  # a PostgreSQL state's URL (the images and manifest local)

    def backends(self) -> Backends | None:
        if self.database is not None:
            database = self.database
            return Backends(state=lambda: PostgresState.open(database), output=LocalFolder(self.out))
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

    def lose_image(self, path: str) -> None:
        if self.memory:
            del self.memory.output.objects[path]
        else:
            (self.out / path).unlink()

    def lose_manifest_tail(self, lines: int) -> None:
        """A crash between a commit and its manifest append: the last ``lines`` records missing."""
        if self.memory:
            del self.memory.output.manifest[-lines:]
        else:
            path = self.out / "manifest.jsonl"
            kept = path.read_text().splitlines(keepends=True)[:-lines]
            path.write_text("".join(kept))

    def lose_state(self) -> None:
        if self.database is not None:
            with psycopg.connect(self.database, autocommit=True) as db:
                db.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        elif self.memory:
            self.memory.state = MemoryState()
        else:
            for name in ("state.sqlite3", "state.sqlite3-wal", "state.sqlite3-shm"):
                (self.out / ".batchgen" / name).unlink(missing_ok=True)


@pytest.fixture(params=["local", "memory", "postgres"])
def output(request: pytest.FixtureRequest, tmp_path: Path) -> Output:
    if request.param == "postgres":
        return Output("postgres", tmp_path / "out", database=request.getfixturevalue("postgres")())
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


async def test_a_missing_image_is_fetched_again_from_its_recorded_url_not_generated(
    output, simulator, tmp_path
):
    jobs = write_jsonl(tmp_path / "jobs.jsonl", create_jobs(2))
    await output.run(jobs, simulator.url)
    lost = output.records()[0]["images"][0]
    output.lose_image(lost["path"])
    report = await output.run(jobs, simulator.url)
    assert report.restored == [output.records()[0]["job_id"]] and simulator.state.generations == 2
    assert hashlib.sha256(output.image(lost["path"])).hexdigest() == lost["sha256"]


async def test_records_a_crash_kept_from_the_manifest_are_appended_again(output, simulator, tmp_path):
    jobs = write_jsonl(tmp_path / "jobs.jsonl", create_jobs(4))
    await output.run(jobs, simulator.url)
    whole = output.records()
    output.lose_manifest_tail(2)
    again = await output.run(jobs, simulator.url)
    assert output.records() == whole and again.tally.already_done == 4
    assert simulator.state.generations == 4


async def test_a_large_download_spills_and_is_put_whole(output, tmp_path):
    picture = io.BytesIO()
    noise = random.Random(1).randbytes(900 * 700 * 3)  # (noise does not compress: > 1 MiB as PNG)
    Image.frombytes("RGB", (900, 700), noise).save(picture, format="PNG")
    data = picture.getvalue()
    assert len(data) > SPILL_BYTES

    async def chunks():
        for start in range(0, len(data), 64 * 1024):
            yield data[start : start + 64 * 1024]

    async with OutputFolder.open(output.out, backends=output.backends()) as folder:
        await folder.dispatched("big", "reve/create-image", "bg.big.1", "t")
        staged = await folder.stage(chunks())
        assert staged.spilled is not None

        def record(saved):
            return ManifestRecord(
                job_id="big", model="reve/create-image", status=Status.SUCCEEDED, images=saved
            )

        await folder.finish_with_images("big", [staged], record, answer=Answer(images=[{"b64_json": "x"}]))
    (saved,) = output.records()[0]["images"]
    assert output.image(saved["path"]) == data and saved["bytes"] == len(data)


async def test_one_refused_change_in_a_group_costs_the_others_nothing(output):
    async with OutputFolder.open(output.out, backends=output.backends()) as folder:
        answer = Answer(images=[{"url": "https://cdn.test/a.png"}])
        results = await asyncio.gather(
            folder.dispatched("a", "m", "bg.a.1", "t"),
            folder.answered("never-sent", answer),  # a bug: no such job in flight
            folder.dispatched("b", "m", "bg.b.1", "t"),
            return_exceptions=True,
        )
        assert results[0] is None and results[2] is None and isinstance(results[1], TransitionError)
        rows = await folder.rows(["a", "b", "never-sent"])
        assert set(rows) == {"a", "b"} and all(r.state is JobState.DISPATCHED for r in rows.values())
