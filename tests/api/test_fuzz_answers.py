"""Fuzz test of answers (hypothesis): whatever a server or CDN sends for some jobs, the run ends,
every healthy job succeeds, the bad ones fail as jobs, and nothing is an internal error."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import tempfile
import urllib.parse
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiohttp import web
from conftest import create_jobs, fast_settings, serving, write_jsonl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchgen.cli import parser as cli_parser
from batchgen.money import Spend, parse_cost
from batchgen.run.runner import run_batch
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


ODD_HEADER_VALUES = st.one_of(
    st.sampled_from(
        [
            "0.04",
            "abc",
            "NaN",
            "-5",
            "1e400",
            "Infinity",
            "0x10",
            "",
            " 0.05 ",
            "9" * 40,
            "1e-30",
            SIMULATOR_KEY,
        ]
    ),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
)


async def headers_run(usd: str, credits: str, retry_after: str, inference_id: str) -> tuple[Any, bytes, int]:
    """Jobs answered with these headers (the first POST a 429 with ``retry_after``), under a
    $0.20 budget; returns the report, every byte the folder stored, and the POSTs sent."""
    seen = {"posts": 0}

    async def handle(request: web.Request) -> web.StreamResponse:
        seen["posts"] += 1
        if seen["posts"] == 1:
            return web.json_response({"message": "slow"}, status=429, headers={"Retry-After": retry_after})
        item = {"b64_json": base64.b64encode(PNG).decode(), "request_id": "r"}
        headers = {
            "x-aimlapi-usd-spent": usd,
            "x-aimlapi-credits-used": credits,
            "x-inference-id": inference_id,
        }
        return web.json_response({"data": [item]}, status=201, headers=headers)

    with tempfile.TemporaryDirectory() as folder:
        job_file = write_jsonl(Path(folder) / "jobs.jsonl", create_jobs(6))
        async with serving(handle) as url:
            settings_ = fast_settings(
                url, max_usd=Decimal("0.20"), assumed_cost=Spend(Decimal("0.01")), ignore_retry_after=True
            )
            report = await run_batch(job_file, Path(folder) / "out", settings_, progress=False)
        stored = b"".join(p.read_bytes() for p in (Path(folder) / "out").rglob("*") if p.is_file())
    return report, stored, seen["posts"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    usd=ODD_HEADER_VALUES,
    credits=ODD_HEADER_VALUES,
    retry_after=ODD_HEADER_VALUES,
    inference=ODD_HEADER_VALUES,
)
def test_odd_response_headers_never_crash_overspend_or_store_the_key(usd, credits, retry_after, inference):
    report, stored, _ = asyncio.run(headers_run(usd, credits, retry_after, inference))
    assert report.crashed == []
    assert SIMULATOR_KEY.encode() not in stored
    price = parse_cost(usd)
    if price is not None and price > 0:  # a readable price: at most one request in flight past the budget
        assert report.tally.spent.usd <= Decimal("0.20") + price * 4
    assert report.tally.spent.usd <= Decimal("0.20") + (price or Decimal("0.01")) * 4


NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**30), 10**30).map(str),
    st.sampled_from(["inf", "-inf", "nan", "1e400", "-0", "0", "", "ten", "1_000", "0x10"]),
)
NUMERIC_OPTIONS = [
    "--concurrency", "--rpm", "--max-retries", "--retry-budget", "--timeout", "--connect-timeout",
    "--read-timeout", "--download-timeout", "--download-read-timeout", "--max-image-bytes",
    "--max-json-bytes", "--grace", "--max-usd", "--max-credits", "--max-usd-per-day", "--assume-usd",
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(option=st.sampled_from(NUMERIC_OPTIONS), value=NUMBERS)
def test_numeric_options_are_finite_and_in_range_or_refused_with_exit_2(option, value):
    argv = ["run", "jobs.yaml", "--out", "o", f"{option}={value}"]
    try:
        args = cli_parser(argv).parse_args(argv)
    except SystemExit as exc:
        assert exc.code == 2
        return
    parsed = getattr(args, option.removeprefix("--").replace("-", "_"))
    if parsed != "off":
        assert math.isfinite(parsed) and parsed >= 0
        assert parsed > 0 or option in ("--max-retries", "--retry-budget", "--grace", "--max-usd",
                                         "--max-credits", "--max-usd-per-day", "--assume-usd")  # fmt: skip
