"""The simulator itself: faithful error bodies, validation, sizes, and its stats endpoint."""

from __future__ import annotations

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
