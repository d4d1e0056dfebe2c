"""The object-store output backend: images put once, the manifest in immutable parts, the lock
in the local state folder; against obstore's memory store, then a real S3 API (moto)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import time

import obstore
import pytest
from conftest import create_jobs, run_cli, write_jsonl
from obstore.store import MemoryStore
from PIL import Image

from batchgen.errors import OutputLockedError, StorageError
from batchgen.simulator import SIMULATOR_KEY
from batchgen.store.layout import STATE, default_state_root
from batchgen.store.lease import BucketLease
from batchgen.store.location import locate
from batchgen.store.objects import ObjectStoreOutput


def png(colour: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def output(tmp_path):
    backend = ObjectStoreOutput(MemoryStore(), "memory://test", tmp_path / "state")
    backend.open()
    yield backend
    backend.close()


def test_an_image_is_verified_then_put_once_under_its_name(output):
    record = output.put_image("job-1", [png()], None, max_pixels=10**6)
    assert (record.path, record.width, record.content_type) == ("images/job-1.png", 8, "image/png")
    assert output.sha256(record.path) == record.sha256 == hashlib.sha256(png()).hexdigest()
    assert output.image_size(record.path) == record.bytes and output.image_size("images/none.png") is None


def test_the_same_bytes_already_there_are_a_finished_upload_and_other_bytes_are_replaced(output):
    first = output.put_image("job-1", [png()], None, max_pixels=10**6)
    again = output.put_image("job-1", [png()], None, max_pixels=10**6)  # a crash came before the record
    assert again == first
    other = output.put_image("job-1", [png("blue")], None, max_pixels=10**6)  # listed by no record
    assert output.read_bytes(other.path) == png("blue")


def test_a_spilled_download_is_verified_from_its_scratch_file_and_the_file_removed(output, tmp_path):
    spill = output.spill()
    spill.write(png()[:20])
    spill.write(png()[20:])
    record = output.put_image("big", [], spill, max_pixels=10**6)
    assert output.read_bytes(record.path) == png()
    assert list((tmp_path / "state" / ".batchgen" / "scratch").iterdir()) == []


def test_the_manifest_is_parts_read_in_order_and_a_rewrite_replaces_them(output):
    output.manifest_append(['{"a": 1}\n', '{"a": 2}\n'])
    assert list(output.manifest_lines()) == []  # (the part fills: 4 MiB or 5 s, or the end)
    output.flush_manifest()
    output.manifest_append(['{"a": 3}\n'])
    output.flush_manifest()
    assert list(output.manifest_lines()) == [b'{"a": 1}\n', b'{"a": 2}\n', b'{"a": 3}\n']
    assert output.manifest_parts() == ["manifest/part-00000000.jsonl", "manifest/part-00000001.jsonl"]
    output.manifest_rewrite(['{"a": 9}\n'])
    assert list(output.manifest_lines()) == [b'{"a": 9}\n'] and output.manifest_last_line() == b'{"a": 9}\n'


def test_a_part_is_never_overwritten(output):
    output.manifest_append(['{"a": 1}\n'])
    output.flush_manifest()
    obstore.put(output.store, "manifest/part-00000001.jsonl", b"put by someone else\n")
    output.manifest_append(['{"a": 2}\n'])
    with pytest.raises(Exception, match="part-00000001"):
        output.flush_manifest()


def test_the_lock_is_held_in_the_state_folder(output, tmp_path):
    second = ObjectStoreOutput(output.store, "memory://test", tmp_path / "state")
    with pytest.raises(OutputLockedError):
        second.open()


def test_an_object_store_url_keeps_its_state_in_a_folder_keyed_by_the_url(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    where = locate("s3://bucket-one/nightly/")
    assert where.url == "s3://bucket-one/nightly" and where.root == default_state_root(
        "s3://bucket-one/nightly"
    )
    assert where.root.parent == tmp_path / "batchgen" and where.root.name.startswith("s3-bucket-one-")
    assert locate("s3://bucket-one/other").root != where.root
    assert locate("S3://bucket-one/nightly").root == where.root
    assert locate("s3://bucket-one/nightly", tmp_path / "mine").root == tmp_path / "mine"
    assert locate(tmp_path / "local").url is None


# -- against a real S3 API (moto) ---------------------------------------------------------------


def data_objects(objects: dict) -> dict:
    """The output's images and manifest parts (not its report nor the run's lease)."""
    return {k: v for k, v in objects.items() if "/images/" in k or "/manifest/" in k}


def cli(s3, *args: str, timeout: float = 120):
    return run_cli(*args, key=SIMULATOR_KEY, env=s3.env, timeout=timeout)


def manifest_of(s3, url: str) -> list[dict]:
    done = cli(s3, "manifest", url)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_a_run_into_s3_then_every_reading_command_on_the_url(s3, simulator, tmp_path):
    jobs = [
        *create_jobs(6),
        {"id": "bad", "model": "reve/create-image", "prompt": "x", "aspect_ratio": "1:1"},
    ]
    job_file = write_jsonl(tmp_path / "jobs.jsonl", jobs)
    url = s3.url("nightly")
    done = cli(s3, "run", str(job_file), "--out", url, "--base-url", simulator.url, "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"Manifest: {url}/manifest/" in done.stderr and f"output {url}, API" in done.stderr

    records = manifest_of(s3, url)
    assert sorted(r["job_id"] for r in records) == sorted([f"job-{i}" for i in range(6)] + ["bad"])
    objects = s3.objects("nightly/")
    for r in records:
        for image in r["images"]:
            assert hashlib.sha256(s3.read(f"nightly/{image['path']}")).hexdigest() == image["sha256"]
    listed = {f"nightly/{i['path']}" for r in records for i in r["images"]}
    assert {k for k in objects if k.startswith("nightly/images/")} == listed  # nothing unreferenced
    assert not list((tmp_path / "state-home").rglob("*.png"))  # no image left on the local disk

    assert cli(s3, "verify", url).returncode == 0
    status = json.loads(cli(s3, "status", url, "--json").stdout)
    assert (status["succeeded"], status["total"]) == (7, 7)
    assert cli(s3, "failed", url).stdout == ""
    plan = cli(s3, "plan", str(job_file), "--out", url, "--json")
    assert plan.returncode == 0 and json.loads(plan.stdout)["counts"]["to_send"] == 0, plan.stdout
    assert json.loads(plan.stdout)["out"] == url
    report = cli(s3, "report", url)
    assert report.returncode == 0 and report.stdout.strip() == f"{url}/report.html"
    page = s3.read("nightly/report.html").decode()
    assert "job-3" in page and "missing" not in page and url in page
    thumbnails = [k for k in s3.objects("nightly/thumbnails/")]
    assert len(thumbnails) == 7 and all(f'src="thumbnails/{k.rsplit("/", 1)[1]}"' in page for k in thumbnails)

    # Run again: nothing sent, nothing put
    posts = simulator.state.posts
    again = cli(s3, "run", str(job_file), "--out", url, "--base-url", simulator.url, "--no-progress")
    assert again.returncode == 0 and simulator.state.posts == posts
    assert data_objects(s3.objects("nightly/")) == data_objects(objects)

    # An image deleted from the bucket: verify says so, a run fetches it again for free
    key = sorted(listed)[0]
    s3.client.delete_object(Bucket=s3.name, Key=key)
    assert cli(s3, "verify", url).returncode == 1
    restored = cli(s3, "run", str(job_file), "--out", url, "--base-url", simulator.url, "--no-progress")
    assert restored.returncode == 0 and simulator.state.posts == posts
    assert cli(s3, "verify", url).returncode == 0


def test_the_state_folder_lost_between_runs_pays_for_nothing_recorded(s3, simulator, tmp_path):
    job_file = write_jsonl(tmp_path / "jobs.jsonl", create_jobs(8))
    url = s3.url("lost")
    state = tmp_path / "my-state"
    first = cli(s3, "run", str(job_file), "--out", url, "--state", str(state), "--base-url", simulator.url)
    assert first.returncode == 0, first.stderr[-2000:]
    assert (state / STATE).is_file()
    posts = simulator.state.posts
    for path in sorted(state.rglob("*"), reverse=True):  # the state folder deleted
        path.unlink() if path.is_file() else path.rmdir()
    second = cli(s3, "run", str(job_file), "--out", url, "--state", str(state), "--base-url", simulator.url)
    assert second.returncode == 0, second.stderr[-2000:]
    assert simulator.state.posts == posts
    assert "8 earlier" in second.stderr
    assert len(manifest_of(s3, url)) == 8


def test_a_second_run_on_the_same_url_is_refused_while_the_first_holds_it(s3, tmp_path):
    where = locate(s3.url("held"))
    held = where.output()
    held.open()
    try:
        job_file = write_jsonl(tmp_path / "jobs.jsonl", create_jobs(1))
        done = cli(s3, "run", str(job_file), "--out", s3.url("held"), "--base-url", "http://127.0.0.1:9")
        assert done.returncode == 73, done.stderr
    finally:
        held.close()


def test_state_is_refused_for_a_local_output(tmp_path):
    done = run_cli("status", str(tmp_path), "--state", str(tmp_path / "s"), key="k")
    assert done.returncode == 2 and "--state is for an object-store --out" in done.stderr


def foreign_lease(store) -> None:
    obstore.put(
        store, ".batchgen/lease.json", json.dumps({"holder": "elsewhere", "host": "h2", "pid": 7}).encode()
    )


def lease_of(store) -> dict:
    return json.loads(bytes(obstore.get(store, ".batchgen/lease.json").bytes()))


def test_a_live_lease_of_another_run_refuses_the_run_and_a_stale_one_is_taken_over(tmp_path):
    store = MemoryStore()
    (tmp_path / ".batchgen").mkdir()
    foreign_lease(store)
    with pytest.raises(OutputLockedError, match="in use by a batchgen run on h2"):
        BucketLease(store, "memory://x", tmp_path).acquire()
    stale = BucketLease(store, "memory://x", tmp_path, ttl=0.0)  # (every lease is old by then)
    stale.acquire()
    ours = lease_of(store)
    assert ours["holder"] == (tmp_path / ".batchgen" / "holder").read_text().strip() != "elsewhere"
    stale.release()
    assert lease_of(store)["released"] is True
    again = BucketLease(store, "memory://x", tmp_path)  # a released lease is free at once
    again.acquire()
    again.release()


def test_a_lease_left_by_a_dead_run_of_the_same_state_folder_is_taken_over_at_once(tmp_path):
    store = MemoryStore()
    (tmp_path / ".batchgen").mkdir()
    first = BucketLease(store, "memory://x", tmp_path)
    first.acquire()
    first._stop.set()  # (the run is SIGKILLed: no renewal, no release)
    second = BucketLease(store, "memory://x", tmp_path)
    second.acquire()
    assert lease_of(store)["pid"] == os.getpid() and not lease_of(store)["released"]
    second.release()


def test_a_run_whose_renewals_fail_stops_writing_before_its_lease_can_be_taken(tmp_path):
    store = MemoryStore()
    (tmp_path / ".batchgen").mkdir()
    lease = BucketLease(store, "memory://x", tmp_path, ttl=0.03)
    lease.acquire()
    lease._stop.set()  # (renewals stop: a network cut, a suspended process)
    lease._renewer.join()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # (bounded: two thirds of 30 ms pass long before)
        try:
            lease.check()
        except StorageError as exc:
            assert "could not be renewed" in str(exc)
            break
    else:
        pytest.fail("the lease was trusted past two thirds of its time")


def test_a_lease_taken_over_meanwhile_stops_every_further_put(tmp_path):
    store = MemoryStore()
    output = ObjectStoreOutput(store, "memory://x", tmp_path / "state", lease_seconds=0.03)
    output.open()
    try:
        foreign_lease(store)  # (an unconditional put: the next renewal's ETag no longer matches)
        assert output.lease.lost.wait(10)  # (a renewal comes every 10 ms)
        output.manifest_append(['{"a": 1}\n'])
        with pytest.raises(StorageError, match="took over"):
            output.flush_manifest()
    finally:
        output.close()
    assert obstore.get(store, ".batchgen/lease.json").bytes()  # the other run's lease stays


def test_a_run_from_another_state_folder_is_refused_by_the_lease(s3, tmp_path):
    where = locate(s3.url("leased"))
    held = where.output()
    held.open()
    try:
        job_file = write_jsonl(tmp_path / "jobs.jsonl", create_jobs(1))
        done = cli(
            s3,
            "run",
            str(job_file),
            "--out",
            s3.url("leased"),
            "--state",
            str(tmp_path / "other"),
            "--base-url",
            "http://127.0.0.1:9",
        )
        assert done.returncode == 73, done.stderr
        assert "in use by a batchgen run on" in done.stderr
    finally:
        held.close()
    assert json.loads(s3.read("leased/.batchgen/lease.json"))["released"] is True


def test_a_missing_bucket_or_a_scheme_typo_is_a_clear_error_and_nothing_is_written(s3, tmp_path):
    job_file = write_jsonl(tmp_path / "jobs.jsonl", create_jobs(1))
    missing = cli(
        s3, "run", str(job_file), "--out", "s3://no-such-bucket-here/x", "--base-url", "http://127.0.0.1:9"
    )
    assert (
        missing.returncode == 2 and "no such bucket" in missing.stderr and "Traceback" not in missing.stderr
    )
    typo = cli(s3, "status", "s3:/bucket/x")
    assert typo.returncode == 2 and "did you mean s3://bucket/x?" in typo.stderr


def test_a_part_is_put_once_its_first_record_is_old_even_with_no_new_record(output, monkeypatch):
    monkeypatch.setattr("batchgen.store.objects.ROLL_SECONDS", 0.0)
    output.manifest_append(['{"a": 1}\n'])
    deadline = time.monotonic() + 10
    while not output.manifest_parts() and time.monotonic() < deadline:  # (the timer wakes every second)
        time.sleep(0.1)
    assert list(output.manifest_lines()) == [b'{"a": 1}\n']
