"""Shared fixtures: the simulator on 127.0.0.1 (in its own thread), fast settings, job files."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from pg_server import PrivatePostgres

from batchgen.run.runner import RunReport, run_batch
from batchgen.settings import Selection, Settings
from batchgen.simulator import SIMULATOR_KEY, FaultConfig, SimulatorState, start_simulator

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "sample_jobs"


MALFORMED_JOB_FILES = {  # file name -> bytes: each must be one clear job-file error
    "empty.yaml": b"",
    "not-yaml.yaml": b"jobs: [unclosed\n",
    "jobs-not-list.yaml": b"jobs:\n  prompt: hi\n",
    "no-jobs.yaml": b"defaults:\n  model: reve/create-image\n",
    "top-typo.yaml": b"jobz:\n  - prompt: hi\n",
    "scalar-job.yaml": b"jobs:\n  - just a string\n",
    "latin1.yaml": "jobs:\n  - prompt: caf\xe9\n".encode("latin-1"),
    "bad-json.jsonl": b'{"model": "reve/create-image", "prompt": }\n',
    "array-line.jsonl": b"[1, 2]\n",
    "nan.jsonl": b'{"model": "flux/dev/image-to-image", "prompt": "p", "image_url": "https://x.test", "strength": NaN}\n',
    "dup-key.jsonl": b'{"model": "reve/create-image", "prompt": "a", "prompt": "b"}\n',
    "dup-id.jsonl": b'{"id": "x", "model": "reve/create-image", "prompt": "a"}\n{"id": "x", "model": "reve/create-image", "prompt": "b"}\n',
    "missing-image.jsonl": b'{"model": "reve/edit-image", "prompt": "p", "image_url": "nowhere.png"}\n',
    "not-an-image.jsonl": b'{"model": "reve/edit-image", "prompt": "p", "image_url": "not-an-image.jsonl"}\n',
    "too-long.jsonl": json.dumps({"model": "reve/create-image", "prompt": "x" * 2561}).encode() + b"\n",
    "bool-as-string.jsonl": b'{"model": "reve/create-image", "prompt": "p", "convert_base64_to_url": "yes"}\n',
    "null-seed.jsonl": b'{"model": "flux/dev/image-to-image", "prompt": "p", "image_url": "https://x.test", "seed": null}\n',
    "too-many-images.jsonl": json.dumps(
        {"model": "reve/remix-edit-image", "prompt": "p", "image_urls": ["https://x.test"] * 5}
    ).encode()
    + b"\n",
    "empty.jsonl": b"\n\n",
    "int-key.yaml": b"jobs:\n  - 1: x\n    model: reve/create-image\n    prompt: y\n",
    "alias-cycle.yaml": b"jobs:\n  - &a {model: reve/create-image, prompt: [*a]}\n",
    "mixed-keys.yaml": b"jobs:\n  - model: reve/create-image\n    prompt: {1: a, b: c}\n",
    "alias-bomb.yaml": (
        b'a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]\n'
        + b"".join(b"a%d: &a%d [%s]\n" % (i, i, b", ".join([b"*a%d" % (i - 1)] * 9)) for i in range(1, 10))
        + b"jobs:\n  - model: reve/create-image\n    prompt: *a9\n"
    ),
    "deep.yaml": b"jobs:\n  - prompt: " + b"[" * 5000 + b"]" * 5000 + b"\n",
    "deep.jsonl": b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n",
    "dup-key.yaml": b"jobs:\n  - model: reve/create-image\n    prompt: a\n    prompt: b\n",
}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No AIMLAPI_* variable of the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith("AIMLAPI_"):
            monkeypatch.delenv(name)


@dataclass
class ThreadedSimulator:
    """The simulator served from a background thread's event loop, so synchronous tests,
    async tests and subprocesses can all talk to it. ``state`` is live."""

    url: str
    state: SimulatorState
    _loop: asyncio.AbstractEventLoop
    _thread: threading.Thread
    _close: Callable[[], Any]

    @property
    def faults(self) -> FaultConfig:
        """The live fault settings (assign fields to change behaviour mid-run)."""
        return self.state.config

    def close(self) -> None:
        """Stop the server and its thread."""
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def make_simulator() -> Iterator[Callable[..., ThreadedSimulator]]:
    """Factory: ``make_simulator(error_429=0.3, seed=1)`` starts a simulator with those faults."""
    started: list[ThreadedSimulator] = []

    def make(**faults: Any) -> ThreadedSimulator:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        running = asyncio.run_coroutine_threadsafe(start_simulator(FaultConfig(**faults)), loop).result(10)
        sim = ThreadedSimulator(running.url, running.state, loop, thread, running.close)
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.close()


@pytest.fixture
def simulator(make_simulator: Callable[..., ThreadedSimulator]) -> ThreadedSimulator:
    """A fault-free simulator."""
    return make_simulator()


def fast_settings(url: str, **overrides: Any) -> Settings:
    """Settings for tests: the simulator's key, a high rate ceiling, no backoff delay."""
    values: dict[str, Any] = {
        "api_key": SIMULATOR_KEY,
        "base_url": url,
        "concurrency": 4,
        "rpm": 60_000,
        "backoff_base": 0.0,
        "backoff_cap": 0.0,
        "grace": 5.0,
    }
    chosen = {**values, **overrides}
    # (which jobs to send: one Selection in Settings; tests name its parts like the options)
    parts = {k: chosen.pop(k) for k in ("only", "redo", "retry_failed", "frozen") if k in chosen}
    if parts:
        chosen["selection"] = Selection(**parts)
    return Settings(**chosen)


@asynccontextmanager
async def serving(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> AsyncIterator[str]:
    """Serve ``handler`` for every method and path on a free 127.0.0.1 port; yield its base URL.

    For stand-ins of servers that the simulator deliberately is not (proxies, Retry-After senders).
    """
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@dataclass
class ThreadedServer:
    """A one-off aiohttp server on 127.0.0.1 in a background thread (for a CLI subprocess)."""

    url: str
    requests: list[tuple[str, str]]  # (method, path) of every request seen, in order


@pytest.fixture
def serve_in_thread() -> Iterator[Callable[..., ThreadedServer]]:
    """Factory: ``serve_in_thread(handler)`` serves ``handler`` for every method and path."""
    stops: list[Callable[[], None]] = []

    def serve(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> ThreadedServer:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        seen: list[tuple[str, str]] = []

        async def recording(request: web.Request) -> web.StreamResponse:
            seen.append((request.method, request.path))
            return await handler(request)

        async def start() -> tuple[web.AppRunner, str]:
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_route("*", "/{tail:.*}", recording)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"

        runner, url = asyncio.run_coroutine_threadsafe(start(), loop).result(10)

        def stop() -> None:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()

        stops.append(stop)
        return ThreadedServer(url, seen)

    yield serve
    for stop in stops:
        stop()


async def run_jobs(job_file: Path, out: Path, url: str, **overrides: Any) -> RunReport:
    """``run_batch`` against the simulator at ``url`` with :func:`fast_settings`, no progress."""
    return await run_batch(job_file, out, fast_settings(url, **overrides), progress=False)


def write_jsonl(path: Path, jobs: list[dict[str, Any]]) -> Path:
    """Write ``jobs`` as a JSONL job file; return its path."""
    path.write_text("".join(json.dumps(job) + "\n" for job in jobs), encoding="utf-8")
    return path


def write_yaml(path: Path, jobs: list[dict[str, Any]], defaults: dict[str, Any] | None = None) -> Path:
    """Write a YAML job file with ``defaults`` and ``jobs``; return its path."""
    document: dict[str, Any] = {"jobs": jobs}
    if defaults:
        document["defaults"] = defaults
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def create_jobs(count: int, **fields: Any) -> list[dict[str, Any]]:
    """``count`` distinct reve/create-image jobs with ids ``job-0``..."""
    return [
        {"id": f"job-{i}", "model": "reve/create-image", "prompt": f"picture number {i}", **fields}
        for i in range(count)
    ]


def manifest(out: Path) -> list[dict[str, Any]]:
    """The records of ``out/manifest.jsonl``."""
    path = out / "manifest.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def run_cli(
    *args: str, key: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """The real CLI as a process, run to completion (bounded by ``timeout``): ``key`` in
    ``AIMLAPI_KEY``, cron's bare environment besides ``PATH`` and ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "batchgen", *args],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "AIMLAPI_KEY": key, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class S3Bucket:
    """A bucket of the session's S3 server (moto, on 127.0.0.1): ``url`` is ``s3://<bucket>``,
    ``env`` the standard variables that reach it (set in this process too), ``client`` boto3's."""

    name: str
    env: dict[str, str]
    client: Any

    def url(self, prefix: str = "out") -> str:
        """``s3://<bucket>/<prefix>``."""
        return f"s3://{self.name}/{prefix}"

    def objects(self, prefix: str = "") -> dict[str, tuple[str, Any]]:
        """Every object under ``prefix``: key -> (ETag, LastModified)."""
        found: dict[str, tuple[str, Any]] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix):
            for item in page.get("Contents", []):
                found[item["Key"]] = (item["ETag"], item["LastModified"])
        return found

    def read(self, key: str) -> bytes:
        """One object's bytes."""
        return bytes(self.client.get_object(Bucket=self.name, Key=key)["Body"].read())


@pytest.fixture(scope="session")
def _s3_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer  # noqa: PLC0415 - only S3 tests start it

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # (a line per request otherwise)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(_s3_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> S3Bucket:
    """A fresh bucket on the session's moto S3 server, its variables set (a state folder in
    ``tmp_path`` through ``XDG_STATE_HOME``)."""
    import boto3  # noqa: PLC0415

    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": _s3_server,
        "AWS_ALLOW_HTTP": "true",
        "XDG_STATE_HOME": str(tmp_path / "state-home"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    client = boto3.client(
        "s3",
        endpoint_url=_s3_server,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    name = f"bucket-{os.urandom(6).hex()}"
    client.create_bucket(Bucket=name)
    return S3Bucket(name, env, client)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PrivatePostgres]:
    """A private PostgreSQL server for the session (:mod:`pg_server`), stopped at the end."""
    try:
        with PrivatePostgres.started() as server:
            yield server
    except FileNotFoundError:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL's initdb/pg_ctl are missing: .ci/run installs the postgresql package")
        pytest.skip("PostgreSQL's initdb/pg_ctl are not installed (apt-get install postgresql)")


@pytest.fixture
def postgres(postgres_server: PrivatePostgres) -> Callable[[], str]:
    """A fresh database on the session's PostgreSQL server for each call: its URL."""
    return postgres_server.new_database
