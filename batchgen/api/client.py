"""HTTP to the AIML API over one ``aiohttp.ClientSession``: generate, then stream images.

No retries here (see :mod:`batchgen.run.retry`); every failure becomes a typed
:class:`~batchgen.errors.RequestError` the runner can judge. The key is sent only to the API
host, in ``Authorization`` on the generation request; images are fetched without it, so neither
a CDN nor a redirect target ever sees the key.

Example::

    async with open_session(settings) as session:
        client = ApiClient(session, settings)
        answer = await client.generate(job.body, client_request_id="bg.trex.1a2b.a1")
        async for chunk in client.stream_image(answer.images[0].url):
            ...
"""

from __future__ import annotations

import email.utils
import hashlib
import logging
import re
import ssl
import time
import urllib.request
import zlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp

from batchgen.api.answers import Answer, charged, error_excerpt, parse_answer
from batchgen.errors import (
    AuthenticationError,
    CreditsExhausted,
    DownloadError,
    EndpointNotFound,
    RateLimited,
    RequestError,
    RequestRejected,
    ServerError,
    TransportError,
    Unreachable,
    UsageError,
)
from batchgen.settings import Settings, Timeouts

__all__ = [
    "ENDPOINT",
    "MAX_RETRY_AFTER",
    "ApiClient",
    "client_request_id",
    "open_session",
    "retry_after_seconds",
]

ENDPOINT = "/v1/images/generations"
CHUNK_BYTES = 64 * 1024
_TRANSIENT_4XX = {408, 409, 425}  # timeout, conflict, too early: the same request may pass later
_EXPIRED = {403, 404, 410}  # a CDN's answers for a signed URL past its time
_TRACE_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]")
log = logging.getLogger(__name__)


def client_request_id(job_id: str, attempt: int) -> str:
    """The ``X-Client-Request-Id`` of a job's ``attempt``-th generation request.

    Readable (``bg.<job id, sanitized>.<hash>.a<attempt>``), unique per job and attempt, and
    within the API's rule of 1-128 characters of ``A-Za-z0-9._:-`` (NOTES.md, request tracing).
    """
    slug = _TRACE_UNSAFE.sub("_", job_id)[:80]
    digest = hashlib.sha256(job_id.encode()).hexdigest()[:8]
    return f"bg.{slug}.{digest}.a{attempt}"


@asynccontextmanager
async def open_session(settings: Settings) -> AsyncIterator[aiohttp.ClientSession]:
    """The run's one ``ClientSession``: TLS always verified (``--ca-bundle``/``SSL_CERT_FILE``
    honoured), at most ``2 x concurrency`` connections. Proxies are chosen per request by
    :class:`ApiClient` (``HTTP(S)_PROXY``/``NO_PROXY``)."""
    try:
        context = ssl.create_default_context(cafile=str(settings.ca_bundle) if settings.ca_bundle else None)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot use --ca-bundle {settings.ca_bundle}: {exc}") from exc
    connector = aiohttp.TCPConnector(limit=settings.concurrency * 2, ssl=context)
    traces = [_debug_trace()] if settings.debug_http else []
    async with aiohttp.ClientSession(
        # Not trust_env: aiohttp would re-read the proxy variables and ~/.netrc on every request
        # (a third of the client's CPU at a thousand jobs per second); _Proxies reads them once.
        connector=connector,
        trust_env=False,
        trace_configs=traces,
        raise_for_status=False,
    ) as session:
        yield session


class _Proxies:
    """``HTTP_PROXY`` / ``HTTPS_PROXY`` / ``NO_PROXY`` as read at the start of the run, per host."""

    def __init__(self) -> None:
        self._environment = urllib.request.getproxies_environment()
        self._chosen: dict[tuple[str, str], str | None] = {}

    def for_url(self, url: str) -> str | None:
        """The proxy URL to send ``url`` through, or None for a direct connection."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        if key not in self._chosen:
            proxy = self._environment.get(parts.scheme)
            if proxy and urllib.request.proxy_bypass_environment(  # type: ignore[attr-defined] # not in typeshed
                parts.hostname or "", self._environment
            ):
                proxy = None
            if len(self._chosen) > 1024:  # noqa: PLR2004 - many CDN hosts: keep the cache bounded
                self._chosen.clear()
            self._chosen[key] = proxy
        return self._chosen[key]


class ApiClient:
    """Generation requests and image downloads for one run; stateless besides the session."""

    def __init__(self, session: aiohttp.ClientSession, settings: Settings) -> None:
        self._session = session
        self._settings = settings
        self._url = settings.base_url + ENDPOINT
        self._proxies = _Proxies()
        self._key = settings.api_key.encode()

    async def generate(self, body: dict[str, Any], *, client_request_id: str) -> Answer:
        """POST one request body; return the normalized answer.

        ``client_request_id`` is sent as ``X-Client-Request-Id`` (1-128 chars of
        ``A-Za-z0-9._:-``, NOTES.md) so the charge can be traced to its job in the usage logs.
        Raises a :class:`RequestError` subclass for every failure (status, transport, shape).
        """
        headers = {
            "Authorization": f"Bearer {self._settings.api_key}",
            "X-Client-Request-Id": client_request_id,
            "Accept": "application/json",
            "Accept-Encoding": "gzip, deflate",  # decompressed by _read_capped, bounded
        }
        answer_headers: dict[str, str] = {}  # (once they came, a failure still says what was charged)
        try:
            async with self._session.post(
                self._url,
                json=body,
                headers=headers,
                allow_redirects=False,
                auto_decompress=False,
                proxy=self._proxies.for_url(self._url),
                timeout=_client_timeout(self._settings.generation_timeout),
            ) as response:
                # (headers first: what a response says it cost counts whatever its body turns out to be)
                answer_headers = self._redacted(response.headers)
                try:
                    payload = await _read_capped(response, self._settings.max_json_bytes)
                except RequestError as error:
                    error.cost = charged(answer_headers)
                    raise
                if self._key and self._key in payload:  # a server echoing the key: never keep it
                    payload = payload.replace(self._key, b"<redacted>")
                if response.status >= 300:  # noqa: PLR2004
                    raise _status_error(response.status, answer_headers, payload)
                return parse_answer(payload, answer_headers)
        except RequestError:
            raise
        except TimeoutError as exc:
            raise TransportError(
                "the API did not answer in time (--timeout)", cost=charged(answer_headers)
            ) from exc
        except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError) as exc:
            raise Unreachable(f"TLS with the API failed: {_describe(exc)}") from exc
        except aiohttp.ClientConnectorDNSError as exc:
            raise Unreachable(f"the API's host name does not resolve: {_describe(exc)}") from exc
        except aiohttp.ClientError as exc:
            raise TransportError(
                f"connection to the API failed: {_describe(exc)}", cost=charged(answer_headers)
            ) from exc

    def _redacted(self, headers: Mapping[str, str]) -> dict[str, str]:
        """Response headers by lower-case name, the key replaced wherever a server echoed it
        (an inference id or a cost header is stored in the records)."""
        key = self._settings.api_key
        return {
            name.lower(): value.replace(key, "<redacted>") if key and key in value else value
            for name, value in headers.items()
        }

    async def stream_image(self, url: str) -> AsyncIterator[bytes]:
        """Yield the bytes of a generated image at ``url`` in chunks, never holding it whole.

        Only http(s) URLs are fetched (a relative one is resolved against the API's base URL),
        without ``Authorization``, following at most ``max_redirects`` redirects; more than
        ``max_image_bytes`` is refused.
        Raises :class:`DownloadError`: permanent for a URL that is refused or malformed, of kind
        ``expired`` for a 403/404/410 (retried: a fresh image may be served a moment later);
        transient otherwise.
        """
        try:
            url = urljoin(self._url, url)
            scheme = urlsplit(url).scheme
        except ValueError as exc:  # e.g. "http://[::1/x.png": not a URL at all
            raise DownloadError(f"refused to fetch {url[:80]!r}: {exc}", transient=False) from exc
        if scheme not in ("http", "https"):
            raise DownloadError(f"refused to fetch {url[:80]!r}: only http(s) URLs", transient=False)
        cap = self._settings.max_image_bytes
        try:
            async with self._session.get(
                url,
                proxy=self._proxies.for_url(url),
                max_redirects=self._settings.max_redirects,
                timeout=_client_timeout(self._settings.download_timeout),
            ) as response:
                if response.status in _EXPIRED:
                    # Retried: a fresh URL may not be served yet (the answer is paid; nothing is
                    # generated again). Final once the retries of this run and an earlier one fail.
                    raise DownloadError(
                        f"the image URL is refused (HTTP {response.status}; signed URLs expire)",
                        status=response.status,
                        kind="expired",
                    )
                if response.status != 200:  # noqa: PLR2004
                    raise DownloadError(
                        f"image download answered HTTP {response.status}", status=response.status
                    )
                if (response.content_length or 0) > cap:
                    raise DownloadError(f"image is {response.content_length} bytes, over the {cap}-byte cap")
                received = 0
                async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                    received += len(chunk)
                    if received > cap:
                        raise DownloadError(f"image is over the {cap}-byte cap")
                    yield chunk
        except DownloadError:
            raise
        except aiohttp.TooManyRedirects as exc:
            raise DownloadError(
                f"image download redirected more than {self._settings.max_redirects} times"
            ) from exc
        except TimeoutError as exc:
            raise DownloadError("image download timed out") from exc
        except aiohttp.InvalidURL as exc:
            raise DownloadError(f"refused to fetch {url[:80]!r}: not a valid URL", transient=False) from exc
        except aiohttp.ClientError as exc:
            raise DownloadError(f"image download failed: {_describe(exc)}") from exc


def _client_timeout(timeouts: Timeouts) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=timeouts.total, connect=timeouts.connect, sock_read=timeouts.read)


MAX_RATIO = 100
"""An answer may decompress to at most this many times its bytes on the wire (plus 1 MiB): JSON
compresses a few times over; a gzip bomb a thousand times. So memory follows traffic."""


async def _read_capped(response: aiohttp.ClientResponse, cap: int) -> bytes:
    """The answer's body, decompressed here (gzip or deflate: what the request accepts) so that
    neither ``cap`` bytes nor :data:`MAX_RATIO` times the bytes received can be passed.
    Raises :class:`ServerError` past either, or for an encoding that was not asked for."""
    if (response.content_length or 0) > cap:
        raise ServerError(f"answer of {response.content_length} bytes is over the {cap}-byte cap")
    coding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if coding in ("gzip", "x-gzip", "deflate"):
        inflater = zlib.decompressobj(zlib.MAX_WBITS | (16 if "gzip" in coding else 0))
    elif coding not in ("", "identity"):
        raise ServerError(f"answer in an encoding that was not asked for ({coding[:40]})")
    else:
        inflater = None
    body = bytearray()
    received = 0
    async for chunk in response.content.iter_chunked(CHUNK_BYTES):
        received += len(chunk)
        allowed = MAX_RATIO * received + 1024 * 1024
        data = chunk
        while inflater is not None and data:
            body += inflater.decompress(data, min(cap, allowed) + 1 - len(body))
            data = inflater.unconsumed_tail if len(body) <= min(cap, allowed) else b""
        if inflater is None:
            body += chunk
        if len(body) > cap:
            raise ServerError(f"answer is over the {cap}-byte cap (--max-json-bytes)")
        if len(body) > allowed:
            raise ServerError(f"answer decompresses over {MAX_RATIO} times its size (a decompression bomb)")
    return bytes(body)


def _status_error(status: int, headers: dict[str, str], payload: bytes) -> RequestError:
    """Map an HTTP error status to its error class, per NOTES.md's status meanings; the error
    carries what the cost headers say was charged (failed requests are not billed, but a server
    that says otherwise is counted)."""
    message, request_id = error_excerpt(payload)
    context: dict[str, Any] = {
        "status": status,
        "request_id": request_id,
        "body_excerpt": message,
        "cost": charged(headers),
    }
    text = f"HTTP {status}: {message}"
    if 300 <= status < 400:  # noqa: PLR2004
        where = headers.get("location", "?")[:200]
        return EndpointNotFound(
            f"HTTP {status}: the API endpoint redirects (to {where}); batchgen does not follow it with"
            " the key (is the base URL the API's?)",
            **context,
        )
    if status in (404, 405):
        return EndpointNotFound(f"{text} (is the base URL the API's?)", **context)
    if status == 429:  # noqa: PLR2004
        return RateLimited(text, retry_after=retry_after_seconds(headers.get("retry-after")), **context)
    rejected = 400 <= status < 500 and status not in _TRANSIENT_4XX  # noqa: PLR2004
    kind = _BY_STATUS.get(status) or (RequestRejected if rejected else ServerError)
    return kind(text, **context)


_BY_STATUS: dict[int, type[RequestError]] = {401: AuthenticationError, 403: CreditsExhausted}


MAX_RETRY_AFTER = 3600.0
"""Seconds: the longest ``Retry-After`` batchgen honours (RFC 9110 puts no bound on it; an hour
is the API's longest limit window, "your free limit for the hour"). A longer one is taken as
this, so no server value can hold a folder for longer."""


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` in seconds from either form (delta-seconds or HTTP date, RFC 9110
    10.2.3), at most :data:`MAX_RETRY_AFTER`; None when absent or unreadable (a negative
    number, a 20-digit one past any clock, a date that is not one: ignored)."""
    if not value or len(value) > 64:  # noqa: PLR2004 - an HTTP date is 29 characters
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return min(float(int(text)), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(text)
        seconds = when.timestamp() - (time.time() if now is None else now)
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _debug_trace() -> aiohttp.TraceConfig:
    """Log each HTTP request and response at DEBUG, with ``Authorization`` redacted."""

    async def on_start(_: Any, __: Any, params: aiohttp.TraceRequestStartParams) -> None:
        headers = {
            k: ("<redacted>" if k.lower() == "authorization" else v) for k, v in params.headers.items()
        }
        log.debug("HTTP %s %s headers=%s", params.method, params.url, headers)

    async def on_end(_: Any, __: Any, params: aiohttp.TraceRequestEndParams) -> None:
        log.debug("HTTP %s %s -> %s", params.method, params.url, params.response.status)

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    trace.on_request_end.append(on_end)
    return trace
