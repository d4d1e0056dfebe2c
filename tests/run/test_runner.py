"""End-to-end runs of job files against the simulator: every model, faults, stops and resume."""

from __future__ import annotations

import base64
import hashlib
import itertools

import pytest
from aiohttp import web
from conftest import SAMPLES, create_jobs, fast_settings, manifest, run_jobs, serving, write_jsonl, write_yaml

from batchgen.outcome import StopReason
from batchgen.run.runner import run_batch
from batchgen.simulator import VIOLATION_MARKER


async def test_quickstart_runs_every_model_and_matches_what_the_server_sent(simulator, tmp_path):
    out = tmp_path / "out"
    report = await run_batch(SAMPLES / "quickstart.yaml", out, fast_settings(simulator.url), progress=False)

    assert report.complete and report.stop_reason is None
    records = {r["job_id"]: r for r in manifest(out)}
    assert set(records) == {"trex-beach", "trex-beach-b64", "trex-crown", "trex-cafe", "trex-bird"}
    assert {r["model"] for r in records.values()} == {
        "reve/create-image",
        "reve/edit-image",
        "reve/remix-edit-image",
        "flux/dev/image-to-image",
    }
    sent = {prompt_and_id[2]: prompt_and_id for prompt_and_id in simulator.state.generated}
    for record in records.values():
        assert record["status"] == "succeeded"
        assert record["content_violation"] is False
        for image in record["images"]:
            data = (out / image["path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == image["sha256"]
            assert len(data) == image["bytes"]
            assert data.startswith(b"\x89PNG")
        if record["model"].startswith("reve/"):
            assert record["request_id"] in sent
            assert record["tokens_used"] in (126000, 210000)
    assert records["trex-beach"]["images"][0]["width"] == 1360  # 16:9, as in the docs' example
    assert records["trex-beach"]["images"][0]["height"] == 768
    assert records["trex-beach-b64"]["images"][0]["url"] is None  # decoded from b64_json
    flux = records["trex-bird"]
    assert len(flux["images"]) == 2 and flux["request_id"] is None and flux["seed"] is not None
    assert (flux["images"][0]["width"], flux["images"][0]["height"]) == (512, 384)  # reference size
    assert simulator.state.cdn_with_auth == 0


async def test_body_sent_is_exactly_the_jobs_fields_with_local_files_as_data_uris(simulator, tmp_path):
    reference = (SAMPLES / "images" / "t-rex.png").read_bytes()
    (tmp_path / "ref.png").write_bytes(reference)
    job_file = write_yaml(
        tmp_path / "jobs.yaml",
        [{"id": "a", "prompt": "edit it", "image_url": "ref.png"}],
        defaults={"model": "reve/edit-image"},
    )
    await run_jobs(job_file, tmp_path / "out", simulator.url)

    expected_uri = "data:image/png;base64," + base64.b64encode(reference).decode()
    assert simulator.state.bodies == [
        {"model": "reve/edit-image", "prompt": "edit it", "image_url": expected_uri}
    ]


async def test_second_run_sends_nothing(simulator, tmp_path):
    job_file = write_jsonl(tmp_path / "jobs.jsonl", create_jobs(6))
    out = tmp_path / "out"
    await run_jobs(job_file, out, simulator.url)
    posts = simulator.state.posts

    report = await run_jobs(job_file, out, simulator.url)

    assert simulator.state.posts == posts == 6
    assert report.tally.already_done == 6 and report.complete
    assert len(manifest(out)) == 6


async def test_injected_faults_are_recovered(make_simulator, tmp_path):
    sim = make_simulator(
        seed=3, error_429=0.2, error_500=0.1, error_503=0.1, drop=0.1, malformed=0.1, cdn_fail=0.2
    )
    job_file = write_jsonl(tmp_path / "jobs.jsonl", create_jobs(20))
    out = tmp_path / "out"

    report = await run_jobs(job_file, out, sim.url, max_retries=10)

    assert report.complete, report
    assert sim.state.statuses[429] + sim.state.statuses[500] + sim.state.statuses[503] > 0
    records = manifest(out)
    assert sorted(r["job_id"] for r in records) == sorted(f"job-{i}" for i in range(20))
    assert all(r["status"] == "succeeded" for r in records)
    # A failed download is fetched again, never generated again: one generation per job.
    assert sim.state.generations == 20


async def test_401_stops_the_run_and_nothing_more_is_sent(simulator, tmp_path):
    job_file = write_jsonl(tmp_path / "jobs.jsonl", create_jobs(30))
    settings = fast_settings(simulator.url, api_key="wrong-key", concurrency=3)

    report = await run_batch(job_file, tmp_path / "out", settings, progress=False)

    assert report.stop_reason is StopReason.BAD_KEY
    assert simulator.state.posts <= 3  # at most the requests already in flight
    assert manifest(tmp_path / "out") == []  # no answer, no record: all stay pending


async def test_403_midway_stops_then_resume_completes_after_top_up(make_simulator, tmp_path):
    sim = make_simulator(credits=4)
    job_file = write_jsonl(tmp_path / "jobs.jsonl", create_jobs(12))
    out = tmp_path / "out"

    first = await run_jobs(job_file, out, sim.url, concurrency=2)
    assert first.stop_reason is StopReason.NO_CREDITS
    assert sim.state.generations == 4
    assert sim.state.statuses[403] <= 2  # concurrency: at most the in-flight ones hit the wall

    sim.faults.credits = None  # credits topped up
    second = await run_jobs(job_file, out, sim.url)

    assert second.complete
    assert second.tally.already_done == 4 and second.tally.succeeded == 8
    assert sim.state.generations == 12


async def test_hourly_limit_ends_the_run_resumable_without_retrying(make_simulator, tmp_path):
    sim = make_simulator(hourly_limit=2)
    job_file = write_jsonl(tmp_path / "jobs.jsonl", create_jobs(10))

    report = await run_jobs(job_file, tmp_path / "out", sim.url, concurrency=1)

    assert report.stop_reason is StopReason.HOURLY_LIMIT
    assert sim.state.statuses[429] == 1


async def test_dead_api_exhausts_the_retry_budget_and_stops(make_simulator, tmp_path):
    sim = make_simulator(error_503=1.0)
    job_file = write_jsonl(tmp_path / "jobs.jsonl", create_jobs(50))

    report = await run_jobs(job_file, tmp_path / "out", sim.url, retry_budget=20)

    assert report.stop_reason is StopReason.RETRY_BUDGET
    assert sim.state.posts < 50  # stopped long before trying every job


async def test_content_violation_is_final_and_not_resent(simulator, tmp_path):
    jobs = [{"id": "bad", "model": "reve/create-image", "prompt": f"something {VIOLATION_MARKER}"}]
    job_file = write_jsonl(tmp_path / "jobs.jsonl", jobs)
    out = tmp_path / "out"

    report = await run_jobs(job_file, out, simulator.url)
    again = await run_jobs(job_file, out, simulator.url)

    assert report.tally.failed_final == 1 and again.tally.failed_final == 1
    assert simulator.state.posts == 1
    (record,) = manifest(out)
    assert record["status"] == "failed" and record["content_violation"] is True
    assert record["request_id"] and record["tokens_used"] == 126000

    retried = await run_jobs(job_file, out, simulator.url, retry_failed=frozenset({"violation"}))
    assert simulator.state.posts == 2 and retried.tally.failed_final == 1


async def test_failed_download_is_fetched_again_on_resume_not_generated(make_simulator, tmp_path):
    sim = make_simulator(cdn_fail=1.0)
    job_file = write_jsonl(tmp_path / "jobs.jsonl", create_jobs(3))
    out = tmp_path / "out"

    first = await run_jobs(job_file, out, sim.url, max_retries=1)
    assert first.tally.failed_retryable == 3
    assert all(r["error"]["retryable"] for r in manifest(out))

    sim.faults.cdn_fail = 0.0
    second = await run_jobs(job_file, out, sim.url)

    assert second.complete and sim.state.generations == 3
    last = {r["job_id"]: r for r in manifest(out)}
    assert all(r["status"] == "succeeded" for r in last.values())


@pytest.mark.parametrize(
    "job_id", ["../../x", "/etc/passwd", "..", "con", "a/../../b", "C:\\x", "   .hidden"]
)
async def test_hostile_job_ids_write_only_inside_the_output_folder(simulator, tmp_path, job_id):
    out = tmp_path / "deep" / "out"
    job_file = write_jsonl(
        tmp_path / "jobs.jsonl", [{"id": job_id, "model": "reve/create-image", "prompt": "x"}]
    )

    report = await run_jobs(job_file, out, simulator.url, create_parents=True)

    assert report.complete
    everything = {p for p in tmp_path.rglob("*") if p.is_file()}
    assert all(out in p.parents for p in everything - {job_file})
    (record,) = manifest(out)
    image = (out / record["images"][0]["path"]).resolve()
    assert image.parent == (out / "images").resolve()


async def test_two_ids_that_look_alike_get_different_files(simulator, tmp_path):
    jobs = [{"id": i, "model": "reve/create-image", "prompt": i} for i in ("a/b", "a_b", "A_B", "a:b")]
    out = tmp_path / "out"
    await run_batch(
        write_jsonl(tmp_path / "j.jsonl", jobs), out, fast_settings(simulator.url), progress=False
    )

    paths = [r["images"][0]["path"].lower() for r in manifest(out)]
    assert len(set(paths)) == 4


async def test_rate_ceiling_spaces_requests_from_the_start(simulator, tmp_path):
    job_file = write_jsonl(tmp_path / "jobs.jsonl", create_jobs(6))

    await run_jobs(job_file, tmp_path / "out", simulator.url, rpm=600, concurrency=6)

    times = sorted(simulator.state.post_times)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.09  # 600 rpm: one request per 0.1 s, no initial burst


async def test_unannounced_server_limit_is_found_and_respected(make_simulator, tmp_path):
    # The server takes 20 requests per second and says so only by 429s without Retry-After.
    sim = make_simulator(rpm_limit=20, limit_window=1.0)
    job_file = write_jsonl(tmp_path / "jobs.jsonl", create_jobs(60))
    settings = fast_settings(sim.url, rpm=6000, concurrency=8, max_retries=20)

    report = await run_batch(job_file, tmp_path / "out", settings, progress=False)

    assert report.complete
    assert sim.state.statuses[429] > 0  # it had to find the limit
    assert sim.state.statuses[429] < 60  # ...but did not retry into it for every job


async def test_data_uri_in_place_of_an_image_url_is_decoded_not_fetched(tmp_path):
    png = (SAMPLES / "images" / "t-rex.png").read_bytes()
    answer = {
        "images": [
            {"url": "data:image/png;base64," + base64.b64encode(png).decode(), "width": 512, "height": 384}
        ],
        "seed": 7,
    }

    async def flux(request: web.Request) -> web.Response:
        return web.json_response(answer, status=201)

    async with serving(flux) as url:
        job = {
            "id": "f",
            "model": "flux/dev/image-to-image",
            "prompt": "p",
            "image_url": "https://x.test/a.png",
        }
        out = tmp_path / "out"
        report = await run_jobs(write_jsonl(tmp_path / "j.jsonl", [job]), out, url)
    assert report.complete
    (record,) = manifest(out)
    assert (out / record["images"][0]["path"]).read_bytes() == png and record["images"][0]["url"] is None
