"""The simulator itself: faithful error bodies, validation, sizes, and its stats endpoint."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from batchgen.simulator import SIMULATOR_KEY
from batchgen.simulator.validation import validate_body

AUTH = {"Authorization": f"Bearer {SIMULATOR_KEY}"}


async def post(sim, body, headers=AUTH):
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{sim.url}/v1/images/generations", json=body, headers=headers) as r,
    ):
        return r.status, await r.json(), r.headers


async def test_error_body_has_the_apis_shape(simulator):
    status, body, _ = await post(simulator, {"model": "reve/create-image"}, headers={})
    assert status == 401
    assert set(body) == {"message", "path", "requestId", "statusCode", "timestamp"}


async def test_extra_fields_are_caught(simulator):
    status, body, _ = await post(simulator, {"model": "reve/create-image", "prompt": "p", "id": "x"})
    assert status == 400 and body["message"].startswith("Body validation error!")


async def test_answer_echoes_tracing_and_cost_headers(simulator):
    headers = {**AUTH, "X-Client-Request-Id": "bg.a.1"}
    status, body, response_headers = await post(
        simulator, {"model": "reve/create-image", "prompt": "p"}, headers
    )
    assert status == 201 and body["meta"]["usage"]["tokens_used"] == 126000
    assert response_headers["x-client-request-id"] == "bg.a.1"
    assert {"x-inference-id", "x-aimlapi-credits-used", "x-aimlapi-usd-spent"} <= {
        h.lower() for h in response_headers
    }


@pytest.mark.parametrize(
    "body",
    [
        {"model": "reve/create-image", "prompt": "x" * 2561},
        {"model": "reve/edit-image", "prompt": "p"},
        {"model": "reve/remix-edit-image", "prompt": "p", "image_urls": []},
        {"model": "flux/dev/image-to-image", "prompt": "p", "image_url": "https://x.test", "num_images": 2.5},
        {
            "model": "flux/dev/image-to-image",
            "prompt": "p",
            "image_url": "https://x.test",
            "guidance_scale": True,
        },
        {"model": "nope"},
        ["not", "an", "object"],
    ],
)
def test_validation_follows_the_docs(body):
    assert validate_body(body) is not None


async def test_stats_endpoint(simulator):
    await post(simulator, {"model": "reve/create-image", "prompt": "p"})
    async with aiohttp.ClientSession() as session, session.get(f"{simulator.url}/_sim/stats") as r:
        stats = await r.json()
    assert stats["posts"] == 1 and stats["generations"] == 1 and stats["statuses"] == {"201": 1}


async def test_a_limit_on_requests_in_flight_refuses_the_one_over_it(make_simulator):
    sim = make_simulator(max_in_flight=2, latency=0.5)
    body = {"model": "reve/create-image", "prompt": "p"}
    statuses = sorted(status for status, _, _ in await asyncio.gather(*(post(sim, body) for _ in range(3))))
    assert statuses == [201, 201, 429]


async def test_a_limit_that_moves_applies_its_new_value_after_the_change(make_simulator):
    sim = make_simulator(rpm_limit=1, limit_window=60.0, limit_change_at=0, limit_then=3)
    body = {"model": "reve/create-image", "prompt": "p"}
    statuses = [(await post(sim, body))[0] for _ in range(4)]
    assert statuses == [201, 201, 201, 429]  # 3 per window from the first POST on, not 1
