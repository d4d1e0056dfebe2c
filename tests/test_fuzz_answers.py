"""Fuzz test of answers (hypothesis): whatever a server or CDN sends for some jobs, the run ends,
every healthy job succeeds, the bad ones fail as jobs, and nothing is an internal error."""

from __future__ import annotations

import asyncio
import base64
import json
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

from aiohttp import web
from conftest import create_jobs, fast_settings, serving, write_jsonl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchgen.runner import run_batch
from batchgen.simulator import SIMULATOR_KEY
from batchgen.simulator.pictures import render_png

PNG = render_png(40, 30, 3)

IMAGE_BYTES = st.one_of(
    st.just(PNG),
    st.integers(1, len(PNG) - 1).map(lambda n: PNG[:n]),  # truncated
    st.binary(max_size=300),  # not an image
    st.just(b"GIF89a" + b"\0" * 20),  # a header and nothing else
)
ODD_URLS = st.one_of(
    st.sampled_from(
        [
            "http://[::1/x.png",
            "ftp://cdn.test/x.png",
            "file:///etc/passwd",
            "",
            "/cdn/fuzz",
            "cdn/fuzz",
            "http://",
            "https://999.999.999.999:99999/x",
            "data:",
            "data:image/png;base64,!!!",
            "javascript:alert(1)",
        ]
    ),
    IMAGE_BYTES.map(lambda b: "data:image/png;base64," + base64.b64encode(b).decode()),
    IMAGE_BYTES.map(lambda b: "data:image/png," + urllib.parse.quote_from_bytes(b)),
    st.text(max_size=40),
)
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
REVE_ITEM = st.fixed_dictionaries(
    {},
    optional={
        "url": st.none() | ODD_URLS,
        "b64_json": st.none()
        | st.text(max_size=40)
        | IMAGE_BYTES.map(lambda b: base64.b64encode(b).decode()),
        "request_id": st.none() | st.text(max_size=10) | st.integers(),
        "content_violation": st.none() | st.booleans() | st.text(max_size=3),
    },
)
ANSWERS = st.one_of(
    st.fixed_dictionaries(
        {"data": st.none() | st.lists(REVE_ITEM, max_size=3)},
        optional={"meta": st.none() | st.fixed_dictionaries({"usage": st.none() | JSONISH})},
    ),
    st.fixed_dictionaries(
        {
            "images": st.lists(
                st.fixed_dictionaries({}, optional={"url": ODD_URLS, "width": JSONISH}), max_size=3
            )
        },
        optional={"seed": JSONISH, "has_nsfw_concepts": JSONISH},
    ),
    JSONISH,
).map(lambda document: json.dumps(document).encode())


async def one_run(answer: bytes, cdn: bytes, status: int) -> tuple[Any, dict[str, str]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        if request.method == "POST":
            if "healthy" in (await request.json())["prompt"]:
                item = {"b64_json": base64.b64encode(PNG).decode(), "request_id": "r"}
                return web.json_response({"data": [item], "meta": {"usage": {"tokens_used": 1}}}, status=201)
            return web.Response(body=answer, status=status, content_type="application/json")
        return web.Response(body=cdn, content_type="image/png")

    jobs = [job | {"prompt": f"healthy {job['id']}"} for job in create_jobs(2)]
    jobs += [job | {"id": f"fuzz-{i}"} for i, job in enumerate(create_jobs(2))]
    with tempfile.TemporaryDirectory() as folder:
        job_file = write_jsonl(Path(folder) / "jobs.jsonl", jobs)
        async with serving(handle) as url:
            settings_ = fast_settings(url, api_key=SIMULATOR_KEY, max_retries=1, retry_budget=1000)
            report = await run_batch(job_file, Path(folder) / "out", settings_, progress=False)
        lines = (Path(folder) / "out" / "manifest.jsonl").read_text().splitlines()
        outcome = {}
        for line in lines:
            record = json.loads(line)
            outcome[record["job_id"]] = record["status"]
    return report, outcome


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answer=ANSWERS, cdn=IMAGE_BYTES, status=st.sampled_from([200, 201]))
def test_any_answer_fails_its_own_job_at_worst(answer, cdn, status):
    report, outcome = asyncio.run(one_run(answer, cdn, status))
    assert report.crashed == []  # no internal error, whatever the bytes
    assert outcome["job-0"] == outcome["job-1"] == "succeeded"
    assert report.stop_reason is None
    assert report.tally.seen == 4
