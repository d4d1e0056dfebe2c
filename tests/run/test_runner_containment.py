"""Containment: no single bad answer, file or folder stops the batch (issue 9's cases).

Each case runs the real CLI in a subprocess against a loopback server that sends the exact
bytes a server or CDN can produce, and checks that the job at fault fails alone, with a kind
and a message in its record, and that nothing hangs or exits 70 for it.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import web
from conftest import create_jobs, manifest, run_cli, write_jsonl
from PIL import Image

from batchgen.cli import ExitCode
from batchgen.jobs import local_images
from batchgen.simulator import SIMULATOR_KEY
from batchgen.simulator.pictures import render_png

KEY = "sk-test-4f9a1c2b7d"
PNG = render_png(64, 48, 7)


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI to completion (bounded by ``timeout``)."""
    return run_cli(*args, key=KEY, env=env, timeout=timeout)


def run(
    job_file: Path, out: Path, url: str, *extra: str, key: str = KEY, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``batchgen run`` against ``url`` with ``key``."""
    args = ("run", str(job_file), "--out", str(out), "--base-url", url, "--no-progress", *extra)
    return cli(*args, env={"AIMLAPI_KEY": key}, timeout=timeout)


def reve(*items: dict[str, object], tokens: int = 126000) -> web.Response:
    return web.json_response({"data": list(items), "meta": {"usage": {"tokens_used": tokens}}}, status=201)


def item(**fields: object) -> dict[str, object]:
    return {"url": None, "b64_json": None, "request_id": "rsid-1", "content_violation": False, **fields}


Reply = Callable[[], web.StreamResponse]


def api(answers: dict[str, Reply], cdn: dict[str, Reply] | None = None):
    """A handler: POST answers keyed by prompt (default: an inline PNG), CDN GETs by path.

    Replies are factories: an aiohttp response is sent once.
    """

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.method == "POST":
            prompt = (await request.json())["prompt"]
            answer = answers.get(prompt)
            return answer() if answer else reve(item(b64_json=base64.b64encode(PNG).decode()))
        response = (cdn or {}).get(request.path)
        return response() if response else web.Response(body=PNG, content_type="image/png")

    return handle


def jobs_file(tmp_path: Path, count: int) -> Path:
    return write_jsonl(tmp_path / "jobs.jsonl", create_jobs(count))


def last_records(out: Path) -> dict[str, dict[str, object]]:
    return {r["job_id"]: r for r in manifest(out)}


def test_1_odd_answers_fail_their_job_alone_and_a_resume_does_not_replay_them(serve_in_thread, tmp_path):
    percent_png = "data:image/png," + urllib.parse.quote_from_bytes(PNG)  # RFC 2397, not base64
    dds = b"DDS " + b"\x7c\x00\x00\x00" + b"\x00" * 120  # a DDS header Pillow cannot decode
    server = serve_in_thread(
        api(
            {
                "picture number 0": lambda: reve(item(url=percent_png)),
                "picture number 1": lambda: reve(item(url="http://[::1/x.png")),
                "picture number 2": lambda: reve(item(url="/cdn/texture.dds")),
            },
            {"/cdn/texture.dds": lambda: web.Response(body=dds, content_type="image/vnd-ms.dds")},
        )
    )
    job_file, out = jobs_file(tmp_path, 40), tmp_path / "out"

    first = run(job_file, out, server.url, "--max-retries", "1")
    again = run(job_file, out, server.url, "--max-retries", "1")

    # 75, not 70: the undecodable download may come out right from the CDN later (fetched, not paid)
    assert first.returncode == ExitCode.RESUMABLE, first.stderr[-3000:]
    records = last_records(out)
    assert records["job-0"]["status"] == "succeeded"  # a percent-encoded data URI is an image too
    assert records["job-1"]["error"]["kind"] == "DownloadError" and not records["job-1"]["error"]["retryable"]
    assert records["job-2"]["status"] == "failed" and "image" in records["job-2"]["error"]["message"]
    assert sum(r["status"] == "succeeded" for r in records.values()) == 38
    assert again.returncode == ExitCode.RESUMABLE
    posts = [r for r in server.requests if r[0] == "POST"]
    assert len(posts) == 40  # the resume sent nothing again


def test_1b_an_unforeseen_error_is_contained_recorded_internal_and_skipped_next_time(simulator, tmp_path):
    job_file, out = jobs_file(tmp_path, 6), tmp_path / "out"
    (out / ".batchgen").mkdir(parents=True)
    # A job whose recorded answer is of a shape nothing foresaw: an image entry that is a number.
    # (Written as the release before versioning wrote its database.)
    db = sqlite3.connect(out / ".batchgen" / "state.sqlite3")
    db.executescript(
        "CREATE TABLE jobs (job_id TEXT PRIMARY KEY, model TEXT NOT NULL, state TEXT NOT NULL,"
        " final INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,"
        " client_request_ids TEXT NOT NULL DEFAULT '[]', answer TEXT, tokens_used REAL, started_at TEXT);"
        "INSERT INTO jobs VALUES ('job-3', 'reve/create-image', 'answered', 0, 1, '[\"bg.x\"]',"
        " '{\"images\": [5]}', 1, 't');"
    )
    db.commit()
    db.close()

    first = run(job_file, out, simulator.url, key=SIMULATOR_KEY)
    again = run(job_file, out, simulator.url, key=SIMULATOR_KEY)

    records = last_records(out)
    assert records["job-3"]["error"]["kind"] == "internal" and not records["job-3"]["error"]["retryable"]
    assert sum(r["status"] == "succeeded" for r in records.values()) == 5
    assert first.returncode == ExitCode.INTERNAL, first.stderr[-3000:]  # a bug was met: said so
    assert again.returncode == ExitCode.JOBS_FAILED  # and not met again
    named = run(job_file, out, simulator.url, "--retry-failed", key=SIMULATOR_KEY)
    assert named.returncode == ExitCode.OK and last_records(out)["job-3"]["status"] == "succeeded"
    assert simulator.state.generations == 6  # paid again only when named (--retry-failed)


def test_2_an_unreadable_state_database_ends_with_a_message_not_a_hang(simulator, tmp_path):
    job_file, out = jobs_file(tmp_path, 2), tmp_path / "out"
    (out / ".batchgen").mkdir(parents=True)
    (out / ".batchgen" / "state.sqlite3").write_bytes(b"garbage, not a database " * 100)

    ran = run(job_file, out, simulator.url, key=SIMULATOR_KEY, timeout=60)
    status = cli("status", str(out), timeout=60)

    assert ran.returncode == ExitCode.RESUMABLE and "state database" in ran.stderr
    assert status.returncode == ExitCode.RESUMABLE and "state database" in status.stderr
    assert simulator.state.posts == 0


def test_3_an_expired_image_url_fails_for_good_after_two_runs_and_retry_failed_generates_it_again(
    serve_in_thread, tmp_path
):
    expired = {"on": True}

    async def cdn(request: web.Request) -> web.StreamResponse:
        if request.method == "POST":
            return reve(item(url=f"/cdn/{(await request.json())['prompt'].replace(' ', '-')}.png"))
        if expired["on"]:
            return web.Response(status=403, text="Request has expired")
        return web.Response(body=PNG, content_type="image/png")

    server = serve_in_thread(cdn)
    job_file, out = jobs_file(tmp_path, 3), tmp_path / "out"

    first = run(job_file, out, server.url)
    second = run(job_file, out, server.url)
    plain = run(job_file, out, server.url)
    expired["on"] = False
    retried = run(job_file, out, server.url, "--retry-failed")

    assert first.returncode == ExitCode.RESUMABLE  # refused through this run's retries: maybe not yet there
    assert {r["error"]["kind"] for r in manifest(out)[:3]} == {"expired"}
    assert [r["error"]["retryable"] for r in manifest(out)[:6]] == [True] * 3 + [False] * 3
    assert second.returncode == plain.returncode == ExitCode.JOBS_FAILED  # not fetched again for ever
    assert retried.returncode == ExitCode.OK
    assert sum(method == "POST" for method, _ in server.requests) == 6  # generated again, once each


def test_4_a_reference_image_deleted_during_the_run_stops_it_resumably(serve_in_thread, tmp_path):
    ref = tmp_path / "ref.png"
    ref.write_bytes(PNG)
    deleted = {"done": False}

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.method == "POST" and not deleted["done"]:
            deleted["done"] = True
            ref.unlink()  # a colleague tidies up while the batch runs
        return await api({})(request)

    server = serve_in_thread(handle)
    jobs = create_jobs(260)
    jobs[-4:] = [
        {"id": f"edit-{i}", "model": "reve/edit-image", "prompt": f"edit {i}", "image_url": "ref.png"}
        for i in range(4)
    ]
    job_file, out = write_jsonl(tmp_path / "jobs.jsonl", jobs), tmp_path / "out"

    stopped = run(job_file, out, server.url)
    ref.write_bytes(PNG)
    resumed = run(job_file, out, server.url)

    assert stopped.returncode == ExitCode.RESUMABLE, stopped.stderr[-3000:]
    assert "job file changed" in stopped.stderr
    assert resumed.returncode == ExitCode.OK
    assert sum(method == "POST" for method, _ in server.requests) == 260  # nobody paid twice


def test_5_a_v1_base_url_works_and_a_wrong_one_stops_without_failing_jobs(simulator, tmp_path):
    job_file = jobs_file(tmp_path, 5)

    wrong = run(job_file, tmp_path / "a", simulator.url + "/api", key=SIMULATOR_KEY)
    right = run(job_file, tmp_path / "a", simulator.url + "/v1", key=SIMULATOR_KEY)

    assert wrong.returncode == ExitCode.RESUMABLE and "base URL" in wrong.stderr
    assert not any(
        r["status"] == "failed"
        for r in manifest(tmp_path / "a")
        if r["error"] and not r["error"]["retryable"]
    )
    assert right.returncode == ExitCode.OK


def test_6_a_null_data_answer_is_recorded_once(serve_in_thread, tmp_path):
    server = serve_in_thread(
        api(
            {
                "picture number 0": lambda: web.json_response(
                    {"data": None, "meta": {"usage": {"tokens_used": 9}}}, status=201
                )
            }
        )
    )
    job_file, out = jobs_file(tmp_path, 2), tmp_path / "out"

    first = run(job_file, out, server.url)
    again = run(job_file, out, server.url)

    assert first.returncode == again.returncode == ExitCode.JOBS_FAILED
    assert last_records(out)["job-0"]["error"]["retryable"] is False
    assert sum(method == "POST" for method, _ in server.requests) == 2


def test_9_a_phone_jpeg_with_a_depth_map_is_sent_as_image_jpeg(serve_in_thread, tmp_path):
    first, second = Image.new("RGB", (32, 24), "red"), Image.new("RGB", (32, 24), "blue")
    mpo = io.BytesIO()
    first.save(mpo, format="MPO", save_all=True, append_images=[second])
    (tmp_path / "phone.jpg").write_bytes(mpo.getvalue())
    bodies: list[dict[str, object]] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.method == "POST":
            bodies.append(await request.json())
        return await api({})(request)

    server = serve_in_thread(handle)
    job_file = write_jsonl(
        tmp_path / "jobs.jsonl",
        [{"id": "p", "model": "reve/edit-image", "prompt": "tidy", "image_url": "phone.jpg"}],
    )
    done = run(job_file, tmp_path / "out", server.url)
    assert done.returncode == ExitCode.OK
    assert str(bodies[0]["image_url"]).startswith("data:image/jpeg;base64,")


def test_11_a_truncated_jpeg_download_is_refused_and_fetched_again(serve_in_thread, tmp_path):
    jpeg = io.BytesIO()
    Image.effect_noise((256, 256), 60).convert("RGB").save(jpeg, format="JPEG")
    whole = jpeg.getvalue()
    cut = {"on": True}

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.method == "POST":
            return reve(item(url="/cdn/x.jpg"))
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        response.enable_chunked_encoding()  # no Content-Length: only decoding can tell
        await response.prepare(request)
        await response.write(whole[: int(len(whole) * 0.6)] if cut["on"] else whole)
        await response.write_eof()
        return response

    server = serve_in_thread(handle)
    job_file, out = jobs_file(tmp_path, 1), tmp_path / "out"

    first = run(job_file, out, server.url, "--max-retries", "1")
    cut["on"] = False
    second = run(job_file, out, server.url)

    assert first.returncode == ExitCode.RESUMABLE
    assert second.returncode == ExitCode.OK
    assert sum(method == "POST" for method, _ in server.requests) == 1  # fetched again, not paid again


def test_12_a_key_echoed_by_the_server_is_never_printed_or_stored(serve_in_thread, tmp_path):
    async def echo(request: web.Request) -> web.StreamResponse:
        quoted = request.headers["Authorization"]
        return web.json_response({"message": f"Body validation error! got header {quoted}"}, status=400)

    server = serve_in_thread(echo)
    job_file, out = jobs_file(tmp_path, 2), tmp_path / "out"
    done = run(job_file, out, server.url)
    assert done.returncode == ExitCode.JOBS_FAILED
    written = [
        done.stdout,
        done.stderr,
        *(p.read_bytes().decode(errors="replace") for p in out.rglob("*") if p.is_file()),
    ]
    assert not any(KEY in text for text in written)
    assert "<redacted>" in manifest(out)[0]["error"]["message"]


def test_minor_cases_are_usage_errors_not_crashes(tmp_path):
    job_file = jobs_file(tmp_path, 1)
    infinite = cli("run", str(job_file), "--out", str(tmp_path / "o"), "--rpm", "inf")
    secret = cli(
        "run", str(job_file), "--out", str(tmp_path / "o"), "--base-url", "https://me:hunter2@example.test"
    )
    assert infinite.returncode == secret.returncode == ExitCode.INVALID_INPUT
    assert "hunter2" not in secret.stderr + secret.stdout


def test_a_jsonl_file_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(create_jobs(1)[0]).encode() + b"\n")
    assert cli("validate", str(path)).returncode == ExitCode.OK


def test_sigterm_during_validation_exits_75(tmp_path):
    job_file = write_jsonl(tmp_path / "jobs.jsonl", create_jobs(300_000))  # seconds to validate
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchgen", "validate", str(job_file)], stderr=subprocess.PIPE, text=True
    )
    fds = Path(f"/proc/{proc.pid}/fd")
    for _ in range(3000):  # until batchgen has the file open: it is validating (at most ~30 s)
        with contextlib.suppress(OSError):
            if any(str(fd.readlink()) == str(job_file) for fd in fds.iterdir()):
                break
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.RESUMABLE, stderr


def test_a_job_file_that_is_a_pipe_is_refused_before_it_is_read(tmp_path):
    fifo = tmp_path / "jobs.jsonl"
    os.mkfifo(fifo)  # nobody writes to it: reading it would wait for ever
    done = cli("validate", str(fifo), timeout=60)
    assert done.returncode == ExitCode.INVALID_INPUT and "not a regular file" in done.stderr


def test_image_files_honour_the_umask(serve_in_thread, tmp_path):
    server = serve_in_thread(api({}))
    job_file, out = jobs_file(tmp_path, 1), tmp_path / "out"
    done = subprocess.run(
        ["sh", "-c", 'umask 027 && exec "$@"', "sh", sys.executable, "-m", "batchgen", "run", str(job_file),
         "--out", str(out), "--base-url", server.url, "--no-progress"],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "AIMLAPI_KEY": KEY},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == ExitCode.OK, done.stderr
    (image,) = (out / "images").iterdir()
    assert image.stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("size", [1024])
def test_the_reference_image_cache_is_bounded(tmp_path, size):
    for i in range(40):
        path = tmp_path / f"ref{i}.png"
        path.write_bytes(render_png(size, size, i))
        stat = path.stat()
        local_images._data_uri(str(path), stat.st_mtime_ns, stat.st_size)
    assert sum(len(v) for v in local_images._URI_CACHE.values()) <= local_images._URI_CACHE_CHARS


def test_8_a_second_job_file_runs_into_the_folder_and_status_counts_the_file_run_last(simulator, tmp_path):
    first_file = write_jsonl(tmp_path / "first.jsonl", create_jobs(3))
    other_file = write_jsonl(
        tmp_path / "other.jsonl", [j | {"id": f"o{i}"} for i, j in enumerate(create_jobs(2))]
    )
    out = tmp_path / "out"

    assert run(first_file, out, simulator.url, key=SIMULATOR_KEY).returncode == ExitCode.OK
    other = run(other_file, out, simulator.url, key=SIMULATOR_KEY)
    status = json.loads(cli("status", str(out), "--json").stdout)

    assert other.returncode == ExitCode.OK and "not in the job file" in other.stderr
    assert status["total"] == 2 and status["succeeded"] == 2 and status["pending"] == 0
    assert status["not_in_job_file"] == 3 and status["not_in_job_file_ids"] == ["job-0", "job-1", "job-2"]


def test_10_a_run_started_on_a_full_disk_exits_75_with_a_message(simulator, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        filler = disk / "filler"
        with filler.open("wb") as out, contextlib.suppress(OSError):
            out.write(b"\0" * 1024 * 1024)  # until the disk is full
        done = run(jobs_file(tmp_path, 2), disk / "out", simulator.url, key=SIMULATOR_KEY, timeout=60)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
    assert done.returncode == ExitCode.RESUMABLE, done.stderr[-2000:]
    assert "No space left" in done.stderr or "cannot" in done.stderr
    assert simulator.state.posts == 0


def test_a_job_removed_from_the_file_while_in_flight_is_not_warned_about_for_ever(simulator, tmp_path):
    job_file, out = jobs_file(tmp_path, 3), tmp_path / "out"
    assert run(job_file, out, simulator.url, key=SIMULATOR_KEY).returncode == ExitCode.OK
    db = sqlite3.connect(out / ".batchgen" / "state.sqlite3")
    db.execute(  # a job another version of the file had, sent by a run that then died
        "INSERT INTO jobs (job_id, model, state, attempts, client_request_ids) "
        "VALUES ('gone', 'reve/create-image', 'dispatched', 1, '[\"bg.gone.1.a1\"]')"
    )
    db.commit()
    db.close()

    again = run(job_file, out, simulator.url, key=SIMULATOR_KEY)

    assert again.returncode == ExitCode.OK and "in flight" not in again.stderr
