"""The HTTP client against the simulator: both answer shapes, error mapping, hostile answers."""

from __future__ import annotations

import gzip
import json
import re
import ssl
from types import SimpleNamespace

import pytest
import trustme
from aiohttp import web
from conftest import fast_settings, serving

from batchgen.api.client import MAX_RATIO, ApiClient, client_request_id, open_session
from batchgen.errors import (
    AuthenticationError,
    CreditsExhausted,
    DownloadError,
    MalformedResponse,
    RateLimited,
    RequestRejected,
    ServerError,
    TransportError,
    UsageError,
)
from batchgen.settings import Timeouts
from batchgen.simulator import VIOLATION_MARKER, start_simulator

CREATE = {"model": "reve/create-image", "prompt": "a T-rex"}
FLUX = {
    "model": "flux/dev/image-to-image",
    "prompt": "a bird",
    "image_url": "https://x.test/a.png",
    "num_images": 3,
}


async def generate(sim, body, **overrides):
    async with open_session(fast_settings(sim.url, **overrides)) as session:
        return await ApiClient(session, fast_settings(sim.url, **overrides)).generate(
            body, client_request_id="bg.t.1.a1"
        )


async def fetch(sim, url, **overrides):
    settings = fast_settings(sim.url, **overrides)
    async with open_session(settings) as session:
        return b"".join([chunk async for chunk in ApiClient(session, settings).stream_image(url)])


async def test_reve_answer_is_normalized_with_cost_headers(simulator):
    answer = await generate(simulator, CREATE)
    assert answer.request_id.startswith("rsid-") and answer.tokens_used == 126000
    assert answer.content_violation is False and answer.images[0].url.startswith(simulator.url)
    assert answer.inference_id and answer.credits_used and answer.usd_spent


async def test_reve_b64_answer(simulator):
    answer = await generate(simulator, {**CREATE, "convert_base64_to_url": False})
    assert answer.images[0].url is None and answer.images[0].b64_json


async def test_flux_answer_has_seed_and_every_image(simulator):
    answer = await generate(simulator, FLUX)
    assert (
        len(answer.images) == 3 and answer.seed and answer.request_id is None and answer.tokens_used is None
    )


async def test_content_violation_flags(simulator):
    reve = await generate(simulator, {**CREATE, "prompt": VIOLATION_MARKER})
    flux = await generate(simulator, {**FLUX, "prompt": VIOLATION_MARKER})
    assert reve.content_violation and flux.content_violation


async def test_client_request_id_is_sent_and_follows_the_api_rule(simulator):
    await generate(simulator, CREATE)
    assert simulator.state.generated[0][0] == "bg.t.1.a1"
    for job_id in ("../../x", "é" * 300, "a b/c", ""):
        value = client_request_id(job_id, 12)
        assert re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", value)
    assert client_request_id("a/b", 1) != client_request_id("a_b", 1)


@pytest.mark.parametrize(
    ("faults", "body", "error", "transient", "stops"),
    [
        ({}, {"model": "reve/create-image"}, RequestRejected, False, False),
        ({"credits": 0}, CREATE, CreditsExhausted, True, True),
        ({"hourly_limit": 0}, CREATE, RateLimited, True, True),
        ({"error_429": 1.0}, CREATE, RateLimited, True, False),
        ({"error_500": 1.0}, CREATE, ServerError, True, False),
        ({"error_503": 1.0}, CREATE, ServerError, True, False),
        ({"drop": 1.0}, CREATE, TransportError, True, False),
        ({"malformed": 1.0}, CREATE, MalformedResponse, True, False),
    ],
)
async def test_errors_are_typed_per_the_api_docs(make_simulator, faults, body, error, transient, stops):
    sim = make_simulator(**faults)
    with pytest.raises(error) as caught:
        await generate(sim, body)
    assert caught.value.transient is transient and caught.value.stops_run is stops


async def test_401_names_the_fix_but_never_the_key(simulator):
    with pytest.raises(AuthenticationError) as caught:
        await generate(simulator, CREATE, api_key="sk-very-secret-key")
    assert "AIMLAPI_KEY" in str(caught.value) and "sk-very-secret" not in str(caught.value)
    assert caught.value.request_id  # the API's requestId, for support


async def test_400_keeps_the_apis_message(simulator):
    with pytest.raises(RequestRejected) as caught:
        await generate(simulator, {"model": "reve/create-image", "prompt": 5})
    assert "Body validation error!" in caught.value.message and caught.value.status == 400


async def test_slow_answer_times_out(make_simulator):
    sim = make_simulator(slow=1.0, slow_seconds=3)
    with pytest.raises(TransportError):
        await generate(sim, CREATE, generation_timeout=Timeouts(connect=1, read=0.3, total=0.5))


async def test_oversized_answer_is_refused(make_simulator):
    sim = make_simulator(big_json=1.0, big_json_bytes=2_000_000)
    with pytest.raises(ServerError, match="cap"):
        await generate(sim, CREATE, max_json_bytes=1_000_000)


@pytest.mark.parametrize(
    ("faults", "match"),
    [
        ({"cdn_redirect_loop": 1.0}, "redirected"),
        ({"cdn_oversized": 1.0, "oversized_bytes": 3_000_000}, "cap"),
        ({"cdn_fail": 1.0, "seed": 1}, "download"),
    ],
)
async def test_hostile_downloads_fail_cleanly(make_simulator, faults, match):
    sim = make_simulator(**faults)
    with pytest.raises(DownloadError, match=match):
        await fetch(sim, f"{sim.url}/cdn/64x64-00ff.png", max_image_bytes=1_000_000)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://x.test/a.png", "data:image/png;base64,AAAA"])
async def test_only_http_urls_are_fetched(simulator, url):
    with pytest.raises(DownloadError) as caught:
        await fetch(simulator, url)
    assert caught.value.transient is False


async def test_images_are_fetched_without_the_key(simulator):
    data = await fetch(simulator, f"{simulator.url}/cdn/64x48-abc.png")
    assert data.startswith(b"\x89PNG") and simulator.state.cdn_with_auth == 0


async def test_http_proxy_from_the_environment_is_used_and_no_proxy_honoured(simulator, monkeypatch):
    seen: list[str] = []

    async def proxy(request: web.Request) -> web.Response:
        seen.append(str(request.url))
        return web.Response(status=502, text="proxy says no")

    async with serving(proxy) as proxy_url:
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        with pytest.raises(ServerError, match="502"):
            await generate(simulator, CREATE)
        assert len(seen) == 1 and seen[0].endswith("/v1/images/generations")

        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        answer = await generate(simulator, CREATE)
        assert answer.request_id and len(seen) == 1


async def test_unusable_ca_bundle_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="ca-bundle"):
        async with open_session(fast_settings("http://127.0.0.1:9", ca_bundle=tmp_path / "missing.pem")):
            pass


@pytest.mark.parametrize(
    ("header", "low", "high", "stops"),
    [("7", 7, 7, False), ("Wed, 21 Oct 2099 07:28:00 GMT", 3600, None, True), ("3600", 3600, 3600, True)],
)
async def test_retry_after_in_either_form_is_read(header, low, high, stops):
    async def throttled(request: web.Request) -> web.Response:
        return web.json_response(
            {"message": "Too many requests"}, status=429, headers={"Retry-After": header}
        )

    async with serving(throttled) as url:
        settings = fast_settings(url)
        async with open_session(settings) as session:
            with pytest.raises(RateLimited) as caught:
                await ApiClient(session, settings).generate(CREATE, client_request_id="bg.x.1.a1")
    assert caught.value.retry_after >= low and (high is None or caught.value.retry_after <= high)
    assert caught.value.stops_run is stops  # a wait of more than minutes ends the run, resumable


async def test_relative_image_urls_resolve_against_the_api(simulator):
    data = await fetch(simulator, "/cdn/32x24-0abc.png")
    assert data.startswith(b"\x89PNG") and simulator.state.cdn_gets == 1


@pytest.fixture
async def tls_simulator(tmp_path):
    """The simulator over TLS, its certificate from a throwaway CA; yields (url, CA file)."""
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    sim = await start_simulator(ssl_context=server_context)
    yield sim.url, ca_file
    await sim.close()


async def test_tls_is_always_verified_and_a_private_ca_can_be_trusted(tls_simulator, monkeypatch):
    url, ca_file = tls_simulator
    assert url.startswith("https://")
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with pytest.raises(TransportError, match=r"(?i)certificate"):
        await generate(SimpleNamespace(url=url), CREATE)

    answer = await generate(SimpleNamespace(url=url), CREATE, ca_bundle=ca_file)  # --ca-bundle
    assert answer.request_id

    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # the standard variable works too
    assert (await generate(SimpleNamespace(url=url), CREATE)).request_id


async def test_a_gzip_answer_is_read_and_a_gzip_bomb_is_refused_at_a_bounded_size():
    answer = json.dumps({"data": [{"url": "https://cdn.test/a.png", "request_id": "r"}]}).encode()
    bomb = gzip.compress(b" " * (300 * 1024 * 1024), compresslevel=9)  # ~300 KB on the wire, 300 MiB inside
    bodies = iter([gzip.compress(answer), bomb])

    async def handle(request: web.Request) -> web.StreamResponse:
        assert request.headers["Accept-Encoding"] == "gzip, deflate"
        return web.Response(body=next(bodies), status=201, headers={"Content-Encoding": "gzip"})

    async with serving(handle) as url:
        settings = fast_settings(url)
        async with open_session(settings) as session:
            client = ApiClient(session, settings)
            first = await client.generate(CREATE, client_request_id="bg.t.1.a1")
            with pytest.raises(ServerError, match="decompresses over 100 times its size"):
                await client.generate(CREATE, client_request_id="bg.t.1.a2")
    assert first.images[0].url == "https://cdn.test/a.png"
    assert len(bomb) * MAX_RATIO < 64 * 1024 * 1024  # refused by ratio well before --max-json-bytes
