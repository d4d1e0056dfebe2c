"""The simulated AIML API: ``POST /v1/images/generations`` and a CDN that serves real PNGs.

Faithful to ``../shared/api-docs/``: the API's error body ``{"message", "path", "requestId",
"statusCode", "timestamp"}``; 401 unless ``Authorization: Bearer <SIMULATOR_KEY>``; 400 "Body
validation error!"; reve answers ``{"data": [...], "meta": {"usage": {"tokens_used"}}}`` with
``url`` or ``b64_json`` per ``convert_base64_to_url``; flux answers ``{"images": [...], "seed",
"timings", "has_nsfw_concepts"}`` sized like its reference image; 429 without ``Retry-After``;
``x-inference-id``, ``x-aimlapi-credits-used``, ``x-aimlapi-usd-spent`` and the echoed
``x-client-request-id`` headers. A prompt containing ``[[violation]]`` is flagged as a content
violation. Test hooks: ``GET /_sim/stats``, ``POST /_sim/faults`` (JSON of FaultConfig fields).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import ssl
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from importlib.resources import files
from typing import Any

import aiohttp
from aiohttp import web

from batchgen.simulator.faults import FaultConfig, SimulatorState
from batchgen.simulator.pictures import ASPECT_SIZES, bomb_png, reference_size, render_png
from batchgen.simulator.validation import validate_body

__all__ = ["SIMULATOR_KEY", "VIOLATION_MARKER", "RunningSimulator", "create_app", "start_simulator"]

SIMULATOR_KEY = "sim-key-batchgen"
"""The only API key the simulator accepts."""
VIOLATION_MARKER = "[[violation]]"
"""A prompt containing this is answered as a content violation."""
PATH = "/v1/images/generations"
PRICES_USD = {  # per request (flux: per image); made up: the docs publish none per model
    "reve/create-image": 0.04,
    "reve/edit-image": 0.05,
    "reve/remix-edit-image": 0.05,
    "flux/dev/image-to-image": 0.025,
}


def _usd(body: dict[str, Any]) -> float:
    images = body.get("num_images", 1) if body["model"].startswith("flux/") else 1
    return PRICES_USD.get(body["model"], 0.04) * int(images)


TOKENS = {"reve/create-image": 126000, "reve/edit-image": 210000, "reve/remix-edit-image": 210000}
STATE_KEY: web.AppKey[SimulatorState] = web.AppKey("state", SimulatorState)


def create_app(state: SimulatorState | None = None) -> web.Application:
    """The simulator as an aiohttp application (state: counters and faults; a new one if None)."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATE_KEY] = state or SimulatorState()
    app.router.add_post(PATH, _generate)
    app.router.add_get("/cdn/{name}", _cdn)
    app.router.add_get("/_sim/stats", _stats)
    app.router.add_post("/_sim/faults", _faults)
    return app


@dataclass(slots=True)
class RunningSimulator:
    """A simulator listening on ``url``; stop it with :meth:`close`."""

    url: str
    state: SimulatorState
    runner: web.AppRunner

    async def close(self) -> None:
        """Stop listening and close open connections."""
        await self.runner.cleanup()


async def start_simulator(
    config: FaultConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    ssl_context: ssl.SSLContext | None = None,
) -> RunningSimulator:
    """Start the simulator on ``host:port`` (port 0: a free one) in the running event loop;
    over TLS when given a server ``ssl_context``."""
    state = SimulatorState(config or FaultConfig())
    runner = web.AppRunner(create_app(state), access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    bound = runner.addresses[0][1]
    scheme = "https" if ssl_context else "http"
    return RunningSimulator(f"{scheme}://{host}:{bound}", state, runner)


def _error(status: int, message: str, **headers: str) -> web.Response:
    body = {
        "message": message,
        "path": PATH,
        "requestId": str(uuid.uuid4()),
        "statusCode": status,
        "timestamp": datetime.now(UTC).isoformat(),
    }
    return web.json_response(body, status=status, headers=headers)


async def _generate(request: web.Request) -> web.StreamResponse:  # noqa: PLR0911, PLR0912 - one branch per documented answer
    state = request.app[STATE_KEY]
    faults = state.config
    client_id = request.headers.get("X-Client-Request-Id")
    state.post_times.append(time.monotonic())
    state.note(posts=1)
    if request.headers.get("Authorization") != f"Bearer {SIMULATOR_KEY}":
        return _counted(
            state, _error(401, "This request requires a valid API key. Check the Authorization header.")
        )
    try:
        body = await request.json()
    except ValueError:
        return _counted(state, _error(400, "Body validation error! Expected JSON body"))
    state.bodies.append(body)
    problem = validate_body(body)
    if problem:
        return _counted(state, _error(400, problem))
    if faults.credits is not None and state.generations >= faults.credits:
        return _counted(state, _error(403, "You've run out of credits. Please top up your balance."))
    if faults.hourly_limit is not None and state.generations >= faults.hourly_limit:
        return _counted(state, _error(429, "Free-tier limit: You've reached your free limit for the hour"))
    throttle = {"Retry-After": str(faults.retry_after)} if faults.retry_after is not None else {}
    if state.over_rate_limit() or (
        faults.max_in_flight is not None and state.in_progress >= faults.max_in_flight
    ):
        return _counted(state, _error(429, "Too many requests", **throttle))
    for probability, status in ((faults.error_429, 429), (faults.error_500, 500), (faults.error_503, 503)):
        if state.roll(probability):
            if status == HTTPStatus.TOO_MANY_REQUESTS:
                return _counted(state, _error(status, "Too many requests", **throttle))
            return _counted(state, _error(status, "Internal error"))
    if state.roll(faults.drop):
        assert request.transport is not None
        request.transport.close()
        return web.Response(status=500)  # never reaches the client
    state.in_progress += 1  # (the event loop's thread only: no lock)
    try:
        await asyncio.sleep(faults.latency + (faults.slow_seconds if state.roll(faults.slow) else 0))
    finally:
        state.in_progress -= 1
    if state.roll(faults.malformed):
        return _counted(
            state, web.Response(status=201, text='{"data": [{"url": ', content_type="application/json")
        )
    answer, request_id = await _answer(request, body)
    headers = {
        "x-inference-id": str(uuid.uuid4()),
        "x-aimlapi-credits-used": str(round(_usd(body) * 66150)),
        "x-aimlapi-usd-spent": f"{_usd(body):.4g}",
    }
    if client_id:
        headers["x-client-request-id"] = client_id
    if state.roll(faults.big_json):
        answer["padding"] = "x" * faults.big_json_bytes
    with state.changed:
        state.generated.append((client_id, str(body.get("prompt")), request_id))
    state.note(generations=1)
    # The remix page's schema documents 200; the other model pages show 201.
    status = 200 if body["model"] == "reve/remix-edit-image" else 201
    return _counted(state, web.json_response(answer, status=status, headers=headers))


async def _answer(request: web.Request, body: dict[str, Any]) -> tuple[dict[str, Any], str]:
    state = request.app[STATE_KEY]
    model = body["model"]
    violation = VIOLATION_MARKER in str(body.get("prompt", ""))
    request_id = "rsid-" + uuid.uuid4().hex
    if model == "flux/dev/image-to-image":
        width, height = await asyncio.to_thread(reference_size, body["image_url"])
        count = int(body.get("num_images", 1))
        images = [
            {
                "url": _cdn_url(request, width, height),
                "width": width,
                "height": height,
                "content_type": "image/png",
            }
            for _ in range(count)
        ]
        seed = int(body.get("seed") or state.rng.randrange(1, 2**32))
        answer = {
            "images": images,
            "timings": {"inference": 2.5},
            "seed": seed,
            "has_nsfw_concepts": [violation] * count,
            "prompt": body["prompt"],
        }
        return answer, request_id
    if model not in TOKENS:
        return await _other_answer(request, body, violation), request_id
    width, height = ASPECT_SIZES[body.get("aspect_ratio", "3:2")]
    item: dict[str, Any] = {
        "url": None,
        "b64_json": None,
        "request_id": request_id,
        "content_violation": violation,
    }
    if not violation:
        if body.get("convert_base64_to_url", True):
            item["url"] = _cdn_url(request, width, height)
        else:
            png = await asyncio.to_thread(render_png, width, height, state.picture_seed())
            item["b64_json"] = base64.b64encode(png).decode("ascii")
    return {"data": [item], "meta": {"usage": {"tokens_used": TOKENS[model]}}}, request_id


async def _other_answer(request: web.Request, body: dict[str, Any], violation: bool) -> dict[str, Any]:
    """Every other model's answer, in the shape its page shows (INDEX.md's letters, written by
    ``scripts/convert_model_schemas.py``): A ``data[]`` + ``meta.usage``; B ``images[]`` +
    ``timings``, ``seed``, ``has_nsfw_concepts``; C both; D OpenAI-style (``created``,
    ``data[{url | b64_json, revised_prompt}]``, ``usage``); E ``images[{url, content_type,
    file_name, file_size}]`` + ``description``; F ``images[]`` alone; G ``data[{mime_type, url,
    prompt}]``."""
    state = request.app[STATE_KEY]
    count = 0 if violation else int(body.get("num_images", body.get("n", 1)) or 1)
    shape = answer_shapes().get(str(body["model"]), "A")
    if body.get("response_format") == "b64_json" and shape in "AD":
        pngs = [await asyncio.to_thread(render_png, 1024, 1024, state.picture_seed()) for _ in range(count)]
        data = [{"b64_json": base64.b64encode(png).decode("ascii")} for png in pngs]
    else:
        data = [{"url": _cdn_url(request, 1024, 1024)} for _ in range(count)]
    prompt = body.get("prompt")
    usage = {"usage": {"credits_used": 4200 * max(1, count)}}
    images = [{**item, "width": 1024, "height": 1024, "content_type": "image/png"} for item in data]
    openai = [{**item, "revised_prompt": prompt} for item in data]
    files_ = [
        {**item, "content_type": "image/png", "file_name": "output.png", "file_size": 1} for item in data
    ]
    answers: dict[str, dict[str, Any]] = {
        "A": {"data": data, "meta": usage},
        "B": {"images": images, "timings": {}, "seed": 42, "has_nsfw_concepts": [violation] * count},
        "C": {"images": images, "data": data, "meta": usage, "seed": 42},
        "D": {"created": int(time.time()), "data": openai, "usage": {"total_tokens": 4160}},
        "E": {"images": files_, "description": ""},
        "F": {"images": data},
        "G": {"data": [{**item, "mime_type": "image/png", "prompt": prompt} for item in data]},
    }
    return answers[shape]


@functools.cache
def answer_shapes() -> dict[str, str]:
    """Model id -> the answer shape letter its page shows."""
    shapes: dict[str, str] = json.loads((files("batchgen.simulator") / "answer_shapes.json").read_text())
    return shapes


def _cdn_url(request: web.Request, width: int, height: int) -> str:
    state = request.app[STATE_KEY]
    if state.roll(state.config.bad_scheme):
        return "file:///etc/passwd"
    return f"{request.scheme}://{request.host}/cdn/{width}x{height}-{state.picture_seed():012x}.png"


async def _cdn(request: web.Request) -> web.StreamResponse:  # noqa: PLR0911 - one branch per fault
    state = request.app[STATE_KEY]
    faults = state.config
    state.note(cdn_gets=1, cdn_with_auth=int("Authorization" in request.headers))
    name = request.match_info["name"]
    if state.roll(faults.cdn_redirect_loop):
        raise web.HTTPFound(f"/cdn/{name}")
    if state.roll(faults.cdn_fail):
        if state.rng.random() < 0.5:  # noqa: PLR2004
            return web.Response(status=500, text="CDN error")
        return await _truncated(request)
    if state.roll(faults.cdn_not_image):
        return web.Response(text="<html>not an image</html>", content_type="image/png")
    if state.roll(faults.cdn_oversized):
        return await _endless(request, faults.oversized_bytes)
    if state.roll(faults.cdn_bomb):
        return web.Response(body=bomb_png(), content_type="image/png")
    if state.not_there_yet(name):  # a fresh URL the CDN does not serve yet: it will, a moment later
        return web.Response(status=404, text="no such file (yet)")
    try:
        size, seed = name.removesuffix(".png").split("-")
        width, height = (int(v) for v in size.split("x"))
        png = await asyncio.to_thread(render_png, width, height, int(seed, 16))
    except ValueError:
        return web.Response(status=404, text="no such file")
    return web.Response(body=png, content_type="image/png")


async def _endless(request: web.Request, size: int) -> web.StreamResponse:
    """``size`` bytes of junk, chunked with no Content-Length: a client must count as it reads."""
    response = web.StreamResponse(headers={"Content-Type": "image/png"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    chunk = b"\0" * (1024 * 1024)
    try:
        for start in range(0, size, len(chunk)):
            await response.write(chunk[: size - start])
        await response.write_eof()
    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
        pass  # the client hung up at its cap, as it should
    return response


async def _truncated(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "image/png", "Content-Length": "100000"})
    await response.prepare(request)
    await response.write(b"\x89PNG\r\n\x1a\n" + b"\0" * 1000)
    assert request.transport is not None
    request.transport.close()
    return response


def _counted(state: SimulatorState, response: web.Response) -> web.Response:
    with state.changed:
        state.statuses[response.status] += 1
        if response.status == HTTPStatus.TOO_MANY_REQUESTS:
            state.refused_times.append(time.monotonic())
    return response


async def _stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE_KEY].stats())


async def _faults(request: web.Request) -> web.Response:
    try:
        request.app[STATE_KEY].config.update(json.loads(await request.text()))
    except (ValueError, KeyError, AttributeError) as exc:
        return _error(400, f"bad fault settings: {exc}")
    return web.json_response({"ok": True})
