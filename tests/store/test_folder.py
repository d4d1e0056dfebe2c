"""The output folder: atomic verified images, manifest repair, lock, planted symlinks."""

from __future__ import annotations

import asyncio
import base64
import errno
import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import create_jobs, manifest, run_jobs, write_jsonl

from batchgen.api.answers import Answer
from batchgen.errors import OutputLockedError, StorageError
from batchgen.images import InvalidImage, decode_b64_image
from batchgen.outcome import Status
from batchgen.simulator.pictures import bomb_png, render_png
from batchgen.store import ImageRecord, ManifestRecord, OutputFolder
from batchgen.store import files as store_files
from batchgen.store.files import safe_name


async def chunks_of(data: bytes, size: int = 1000):
    for start in range(0, len(data), size):
        yield data[start : start + size]


def record(job_id: str, status: Status = Status.SUCCEEDED) -> ManifestRecord:
    return ManifestRecord(job_id=job_id, model="reve/create-image", status=status)


async def save(store: OutputFolder, job_id: str, *sources: bytes | object) -> list[ImageRecord]:
    """Save a job's images as a run does: sent, answered, then images with the record."""
    await store.dispatched(job_id, "reve/create-image", f"bg.{job_id}.a1", "t")
    await store.answered(job_id, Answer(request_id="r"))
    staged = [s if isinstance(s, bytes) else await store.stage(s) for s in sources]
    saved: list[ImageRecord] = []

    def build(images: list[ImageRecord]) -> ManifestRecord:
        saved.extend(images)
        return record(job_id).model_copy(update={"images": images})

    await store.finish_with_images(job_id, staged, build)
    return saved


async def test_saved_image_is_measured_and_named_from_the_job(tmp_path):
    png = render_png(40, 30, 1)
    async with OutputFolder.open(tmp_path) as store:
        image, second = await save(store, "job/1", chunks_of(png), chunks_of(png))
    assert (image.width, image.height, image.bytes, image.content_type) == (40, 30, len(png), "image/png")
    assert image.path.startswith("images/job_1-") and image.path.endswith(".png")
    assert second.path.endswith("-1.png") and second.path != image.path
    assert (tmp_path / image.path).read_bytes() == png
    assert [p.name for p in (tmp_path / "images").iterdir() if p.name.startswith(".tmp")] == []


@pytest.mark.parametrize("data", [b"<html>not an image</html>", bomb_png(), render_png(40, 30, 1)[:200]])
async def test_bad_image_bytes_are_refused_and_leave_nothing(tmp_path, data):
    async with OutputFolder.open(tmp_path) as store:
        with pytest.raises(InvalidImage):
            await save(store, "j", chunks_of(data))
    assert list((tmp_path / "images").iterdir()) == []


async def test_torn_manifest_line_is_cut_and_the_record_restored(tmp_path):
    async with OutputFolder.open(tmp_path) as store:
        await store.finish(record("a", Status.FAILED), final=False)
        await store.finish(record("b", Status.FAILED), final=False)
    path = tmp_path / "manifest.jsonl"
    text = path.read_text()
    path.write_text(text[: len(text) - 15])  # a crash in the middle of the last append

    async with OutputFolder.open(tmp_path):
        pass

    assert [r["job_id"] for r in manifest(tmp_path)] == ["a", "b"]


async def test_lost_state_database_is_rebuilt_from_the_manifest(simulator, tmp_path):
    job_file = write_jsonl(tmp_path / "jobs.jsonl", create_jobs(3))
    out = tmp_path / "out"
    await run_jobs(job_file, out, simulator.url)
    for leftover in (out / ".batchgen").glob("state.sqlite3*"):
        leftover.unlink()

    report = await run_jobs(job_file, out, simulator.url)

    assert report.tally.already_done == 3 and simulator.state.posts == 3
    assert len(manifest(out)) == 3


async def test_second_live_run_is_refused(tmp_path):
    async with OutputFolder.open(tmp_path):
        with pytest.raises(OutputLockedError, match=str(os.getpid())):
            async with OutputFolder.open(tmp_path):
                pass
    async with OutputFolder.open(tmp_path):  # released: free again
        pass


@pytest.mark.parametrize("planted", ["images", ".batchgen", "manifest.jsonl"])
async def test_planted_symlinks_are_not_followed(tmp_path, planted):
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    target = outside / "target"
    if planted == "manifest.jsonl":
        target.write_text("")
    else:
        target.mkdir()
    (out / planted).symlink_to(target)

    with pytest.raises(StorageError):
        async with OutputFolder.open(out):
            pass
    assert not any(p.is_file() and p.stat().st_size for p in outside.rglob("*"))


async def test_a_symlink_where_an_image_goes_is_replaced_not_followed(tmp_path):
    outside = tmp_path / "victim.txt"
    outside.write_text("keep me")
    out = tmp_path / "out"
    async with OutputFolder.open(out) as store:
        (out / "images" / f"{safe_name('j')}.png").symlink_to(outside)
        (image,) = await save(store, "j", chunks_of(render_png(8, 8, 2)))
    assert outside.read_text() == "keep me"
    assert not (out / image.path).is_symlink()


async def test_hostile_cdn_answers_fail_each_job_with_a_reason(make_simulator, tmp_path):
    sim = make_simulator(cdn_not_image=1.0)
    job_file = write_jsonl(tmp_path / "jobs.jsonl", create_jobs(2))
    out = tmp_path / "out"
    report = await run_jobs(job_file, out, sim.url, max_retries=1)

    assert report.tally.failed_retryable == 2
    assert all("not an acceptable image" in r["error"]["message"] for r in manifest(out))

    sim.faults.cdn_not_image, sim.faults.cdn_bomb = 0.0, 1.0
    (tmp_path / "b").mkdir()
    await run_jobs(job_file, tmp_path / "b", sim.url, max_retries=0)
    assert all("pixels" in r["error"]["message"] for r in manifest(tmp_path / "b"))

    sim.faults.cdn_bomb, sim.faults.bad_scheme = 0.0, 1.0
    await run_jobs(job_file, tmp_path / "c", sim.url)
    records = manifest(tmp_path / "c")
    assert all("only http(s)" in r["error"]["message"] and not r["error"]["retryable"] for r in records)


async def test_malformed_answer_keeps_an_excerpt_in_the_manifest(make_simulator, tmp_path):
    sim = make_simulator(malformed=1.0)
    job_file = write_jsonl(tmp_path / "jobs.jsonl", create_jobs(1))
    await run_jobs(job_file, tmp_path / "out", sim.url, max_retries=0)
    (failed,) = manifest(tmp_path / "out")
    assert failed["error"]["kind"] == "MalformedResponse" and '{"data"' in failed["error"]["body_excerpt"]
    assert json.loads((tmp_path / "out" / "manifest.jsonl").read_bytes())["status"] == "failed"


async def test_full_disk_stops_the_run_resumably(simulator, tmp_path, monkeypatch):
    job_file = write_jsonl(tmp_path / "jobs.jsonl", create_jobs(4))
    out = tmp_path / "out"
    real_open = store_files.os.open

    def full(path, flags, *args, **kwargs):
        if Path(path).name.startswith(store_files.TEMP_PREFIX):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(store_files.os, "open", full)
    first = await run_jobs(job_file, out, simulator.url, concurrency=1)
    assert first.stop_reason == "storage" and "No space left" in first.stop_message
    generated = simulator.state.generations
    assert generated == 1  # the answer is recorded; no further request went out

    monkeypatch.setattr(store_files.os, "open", real_open)
    second = await run_jobs(job_file, out, simulator.url)
    assert second.complete and simulator.state.generations == 4  # the recorded answer was reused


async def test_b64_images_tolerate_a_data_uri_prefix_and_line_breaks(tmp_path):
    png = render_png(16, 16, 3)
    encoded = base64.b64encode(png).decode()
    wrapped = "data:image/png;base64," + "\n".join(encoded[i : i + 60] for i in range(0, len(encoded), 60))
    async with OutputFolder.open(tmp_path) as store:
        (image,) = await save(store, "j", decode_b64_image(wrapped))
    with pytest.raises(InvalidImage):
        decode_b64_image("not base64!")
    assert (tmp_path / image.path).read_bytes() == png


class SmallDisk:
    """A tmpfs mounted at ``path``; ``resize`` changes its size (e.g. ``"16m"``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def mount(self, size: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(self.path)],
            capture_output=True,
            check=False,
        )

    def resize(self, size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True)

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)


@pytest.fixture
def small_disk(tmp_path):
    """A 600 KiB tmpfs mounted for the test (skipped where mounting is not allowed)."""
    disk = SmallDisk(tmp_path / "disk")
    disk.path.mkdir()
    mounted = disk.mount("600k")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield disk
    disk.unmount()


async def test_real_full_disk_stops_cleanly_and_resumes_when_space_returns(simulator, small_disk, tmp_path):
    jobs = 40
    job_file = write_jsonl(tmp_path / "jobs.jsonl", create_jobs(jobs, aspect_ratio="1:1"))
    out = small_disk.path / "out"

    first = await run_jobs(job_file, out, simulator.url, concurrency=2)
    assert first.stop_reason == "storage" and first.tally.succeeded < jobs

    await asyncio.to_thread(small_disk.resize, "16m")  # space returns
    async with OutputFolder.open(out) as folder:
        unrecorded = len(await folder.in_flight())  # answered while the disk was full: not recordable
    second = await run_jobs(job_file, out, simulator.url)
    assert second.complete
    records = [r for r in manifest(out) if r["status"] == "succeeded"]
    assert sorted(r["job_id"] for r in records) == sorted(f"job-{i}" for i in range(jobs))
    for r in records:
        assert (
            hashlib.sha256((out / r["images"][0]["path"]).read_bytes()).hexdigest()
            == r["images"][0]["sha256"]
        )
    # Every recorded answer was reused; only answers that could not be recorded were paid again.
    assert simulator.state.generations <= jobs + unrecorded
    assert len(second.in_flight_before) == unrecorded  # and the resume said so


async def test_the_output_folder_itself_may_be_a_users_symlink(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    async with OutputFolder.open(tmp_path / "link") as store:
        (image,) = await save(store, "j", chunks_of(render_png(8, 8, 4)))
    assert (real / image.path).is_file()


async def test_a_line_deleted_from_the_middle_of_the_manifest_is_restored(tmp_path):
    async with OutputFolder.open(tmp_path) as store:
        for job_id in "abcd":
            await store.finish(record(job_id, Status.FAILED), final=False)
    path = tmp_path / "manifest.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:1] + lines[2:]))  # someone deletes "b"

    async with OutputFolder.open(tmp_path):
        pass

    assert [r["job_id"] for r in manifest(tmp_path)] == ["a", "b", "c", "d"]
