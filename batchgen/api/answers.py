"""The API's two answer shapes, parsed into one normalized :class:`Answer`.

* reve models: ``{"data": [{url | b64_json, request_id, content_violation}],
  "meta": {"usage": {"tokens_used"}}}`` (reve model pages);
* flux/dev/image-to-image: ``{"images": [{url, width, height, content_type}], seed, timings,
  has_nsfw_concepts}`` (flux page; it has no ``request_id`` or ``tokens_used``).

An :class:`Answer` is what batchgen makes durable before it fetches anything (write-ahead), so
it is a pydantic model that round-trips through JSON.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from batchgen.errors import MalformedResponse, UnrecognizedAnswer
from batchgen.money import Spend

__all__ = ["Answer", "ImageRef", "charged", "error_excerpt", "parse_answer"]

EXCERPT_CHARS = 300  # how much of a bad body the manifest keeps


class ImageRef(BaseModel):
    """One generated image as the API announced it: a URL to fetch or inline base64 bytes.

    ``width``, ``height`` and ``content_type`` are the API's claims (flux only); the saved file's
    own values are measured from its bytes.
    """

    url: str | None = None
    b64_json: str | None = None
    width: int | None = None
    height: int | None = None
    content_type: str | None = None

    @model_validator(mode="after")
    def _data_uri_is_inline(self) -> ImageRef:
        # Some flux back ends put a data: URI where the URL goes: those are inline bytes.
        if self.url is not None and self.url.startswith("data:") and not self.b64_json:
            self.b64_json, self.url = self.url, None
        return self


class Answer(BaseModel):
    """A successful generation, normalized across both response shapes.

    ``tokens_used`` (reve) and ``seed`` (flux) are ``None`` where the model does not send them;
    ``content_violation`` is reve's flag or any of flux's ``has_nsfw_concepts``. The header
    fields come from ``x-inference-id``, ``x-aimlapi-credits-used`` and ``x-aimlapi-usd-spent``
    (NOTES.md, "Request tracing and cost headers").
    """

    request_id: str | None = None
    tokens_used: float | int | None = None
    content_violation: bool = False
    seed: int | None = None
    images: list[ImageRef] = []
    inference_id: str | None = None
    credits_used: str | None = None
    usd_spent: str | None = None

    @property
    def cost(self) -> Spend | None:
        """What this answer cost, from its headers; None when it says nothing readable of it."""
        return Spend.of(self.usd_spent, self.credits_used)


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _ReveItem(_Wire):
    url: str | None = None
    b64_json: str | None = None
    request_id: str | None = None
    content_violation: bool | None = None


class _Usage(_Wire):
    tokens_used: float | int | None = None


class _Meta(_Wire):
    usage: _Usage | None = None


class _ReveResponse(_Wire):
    data: list[_ReveItem] | None  # nullable in the API's OpenAPI schema: no image
    meta: _Meta | None = None


class _FluxImage(_Wire):
    url: str | None = None
    width: int | None = None
    height: int | None = None
    content_type: str | None = None


class _FluxResponse(_Wire):
    images: list[_FluxImage]
    seed: int | None = None
    has_nsfw_concepts: list[bool] | None = None


def parse_answer(body: bytes, headers: dict[str, str]) -> Answer:
    """Parse a 2xx body (bytes) and its response headers (lower-case names) into an Answer.

    Raises :class:`~batchgen.errors.MalformedResponse` (transient) with a body excerpt, and the
    cost its headers say was charged, when the body is not a JSON object or does not match its
    shape; :class:`~batchgen.errors.UnrecognizedAnswer` (final) when it is JSON with neither
    ``data`` nor ``images``.
    """
    try:
        document = json.loads(body)
        if isinstance(document, dict) and "data" in document:
            answer = _from_reve(_ReveResponse.model_validate(document))
        elif isinstance(document, dict) and "images" in document:
            answer = _from_flux(_FluxResponse.model_validate(document))
        elif isinstance(document, dict):  # JSON, but no image where any page puts one: paid for
            raise UnrecognizedAnswer(
                # (field names as JSON: escaped, whatever characters an answer holds)
                "an answer of an unknown shape (fields: "
                + (", ".join(sorted(map(json.dumps, document))) or "none")
                + ")",
                body_excerpt=body[:EXCERPT_CHARS].decode("utf-8", "replace"),
                cost=charged(headers),
            )
        else:
            raise ValueError("the answer is not a JSON object")
    except (ValueError, ValidationError) as exc:
        excerpt = body[:EXCERPT_CHARS].decode("utf-8", "replace")
        reason = str(exc).splitlines()[0]
        raise MalformedResponse(
            f"malformed answer from the API: {reason}", body_excerpt=excerpt, cost=charged(headers)
        ) from exc
    answer.inference_id = headers.get("x-inference-id")
    answer.credits_used = headers.get("x-aimlapi-credits-used")
    answer.usd_spent = headers.get("x-aimlapi-usd-spent")
    return answer


def charged(headers: dict[str, str]) -> Spend | None:
    """What a response's cost headers (lower-case names) say it was charged, whatever its
    status or body; None when they say nothing readable."""
    return Spend.of(headers.get("x-aimlapi-usd-spent"), headers.get("x-aimlapi-credits-used"))


def _from_reve(wire: _ReveResponse) -> Answer:
    usage = wire.meta.usage if wire.meta else None
    tokens = usage.tokens_used if usage else None
    items = wire.data or []
    return Answer(
        request_id=next((i.request_id for i in items if i.request_id), None),
        tokens_used=_whole(tokens),
        content_violation=any(bool(i.content_violation) for i in items),
        images=[ImageRef(url=i.url, b64_json=i.b64_json) for i in items if i.url or i.b64_json],
    )


def _from_flux(wire: _FluxResponse) -> Answer:
    return Answer(
        seed=wire.seed,
        content_violation=any(wire.has_nsfw_concepts or []),
        images=[ImageRef(**image.model_dump()) for image in wire.images if image.url],
    )


def _whole(value: float | int | None) -> float | int | None:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def error_excerpt(body: bytes) -> tuple[str, str | None]:
    """Read the API's error body ``{"message", "requestId", ...}``: (message, requestId).

    Falls back to a text excerpt when the body is not that JSON.
    """
    try:
        document: Any = json.loads(body)
        if isinstance(document, dict) and "message" in document:
            request_id = document.get("requestId")
            return str(document["message"])[:EXCERPT_CHARS], str(request_id) if request_id else None
    except ValueError:
        pass
    return body[:EXCERPT_CHARS].decode("utf-8", "replace").strip() or "(empty body)", None
