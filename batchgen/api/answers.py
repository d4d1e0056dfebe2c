"""Every answer shape of the image models, parsed into one normalized :class:`Answer`.

The model pages show seven shapes (``../shared/api-docs/models/INDEX.md``, A-G), all variations on
two places for images:

* ``data[]``: ``{url | b64_json, request_id, content_violation, revised_prompt, mime_type}`` with
  usage in ``meta.usage`` (``tokens_used``, ``credits_used``, ``usd_spent``) or, OpenAI style, a
  top-level ``usage`` (reve pages; A, D, G);
* ``images[]``: ``{url | b64_json, width, height, content_type, file_name}`` with ``seed`` and
  ``has_nsfw_concepts`` (flux pages; B, E, F); C sends both lists (the same images): ``data[]`` is
  used when it holds any image.

An :class:`Answer` is what batchgen makes durable before it fetches anything (write-ahead), so
it is a pydantic model that round-trips through JSON.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, model_validator

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
    revised_prompt: str | None = None  # the prompt the model actually used (OpenAI-style models)

    @model_validator(mode="after")
    def _data_uri_is_inline(self) -> ImageRef:
        # Some flux back ends put a data: URI where the URL goes: those are inline bytes.
        if self.url is not None and self.url.startswith("data:") and not self.b64_json:
            self.b64_json, self.url = self.url, None
        return self


class Answer(BaseModel):
    """A successful generation, normalized across every answer shape.

    ``tokens_used`` (reve) and ``seed`` (flux) are ``None`` where the model does not send them;
    ``usage`` is the answer's own usage object as sent (``meta.usage`` or ``usage``);
    ``content_violation`` is reve's flag or any of flux's ``has_nsfw_concepts``. The header
    fields come from ``x-inference-id``, ``x-aimlapi-credits-used`` and ``x-aimlapi-usd-spent``
    (NOTES.md, "Request tracing and cost headers"); where a header is absent, the cost is the
    body's ``usd_spent`` / ``credits_used`` from its usage, as exact decimal text.
    """

    request_id: str | None = None
    tokens_used: float | int | None = None
    content_violation: bool = False
    seed: int | None = None
    usage: dict[str, Any] | None = None
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


class _Item(_Wire):
    # Only where the image is must be right; anything else an answer holds is kept when it
    # reads as documented and dropped when not (the answer was paid: never refused for it).
    url: str | None = None
    b64_json: str | None = None
    request_id: Any = None
    content_violation: Any = None
    revised_prompt: Any = None
    width: Any = None
    height: Any = None
    content_type: Any = None


class _Response(_Wire):
    data: Any = None  # a list of items; nullable in the API's OpenAPI schema: no image
    images: Any = None
    meta: Any = None
    usage: Any = None
    seed: Any = None
    has_nsfw_concepts: Any = None


_BOOL: TypeAdapter[bool] = TypeAdapter(bool)
_INT: TypeAdapter[int] = TypeAdapter(int)
_FLOAT: TypeAdapter[float] = TypeAdapter(float)


def _lax(adapter: TypeAdapter[Any], value: Any) -> Any:
    """``value`` as the adapter's type (pydantic's lax rules: ``"123"`` is 123), else None."""
    if value is None or isinstance(value, dict | list):
        return None
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return None


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def parse_answer(body: bytes, headers: dict[str, str]) -> Answer:
    """Parse a 2xx body (bytes) and its response headers (lower-case names) into an Answer.

    Raises :class:`~batchgen.errors.MalformedResponse` (transient) with a body excerpt, and the
    cost its headers say was charged, when the body is not a JSON object or does not match its
    shape; :class:`~batchgen.errors.UnrecognizedAnswer` (final) when it is JSON with neither
    ``data`` nor ``images``.
    """
    try:
        # (numbers with a fraction as Decimal: a cost in the body is read exactly)
        document = json.loads(body, parse_float=Decimal)
        if isinstance(document, dict) and ("data" in document or "images" in document):
            answer = _normalize(_Response.model_validate(document))
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
    usage = answer.usage or {}
    answer.credits_used = headers.get("x-aimlapi-credits-used", _text(usage.get("credits_used")))
    answer.usd_spent = headers.get("x-aimlapi-usd-spent", _text(usage.get("usd_spent")))
    answer.usage = _plain(usage) if answer.usage is not None else None
    return answer


def charged(headers: dict[str, str]) -> Spend | None:
    """What a response's cost headers (lower-case names) say it was charged, whatever its
    status or body; None when they say nothing readable."""
    return Spend.of(headers.get("x-aimlapi-usd-spent"), headers.get("x-aimlapi-credits-used"))


def _items(value: Any) -> list[_Item]:
    """The items of ``data`` or ``images`` that read as items (a null, a number, an item whose
    ``url`` is not text: dropped; another list may still hold the images)."""
    found = []
    for item in value if isinstance(value, list) else ():
        try:
            found.append(_Item.model_validate(item))
        except ValidationError:
            continue
    return found


def _normalize(wire: _Response) -> Answer:
    given = [v for v in (wire.data, wire.images) if v is not None]
    if given and not any(isinstance(v, list) for v in given):
        raise ValueError("neither `data` nor `images` is a list")
    data, listed = _items(wire.data), _items(wire.images)
    items = data if any(i.url or i.b64_json for i in data) else listed or data
    meta_usage = wire.meta.get("usage") if isinstance(wire.meta, dict) else None
    usage = (
        meta_usage if isinstance(meta_usage, dict) else wire.usage if isinstance(wire.usage, dict) else None
    )
    tokens = _lax(_FLOAT, (usage or {}).get("tokens_used"))
    flags = wire.has_nsfw_concepts if isinstance(wire.has_nsfw_concepts, list) else []
    return Answer(
        request_id=next(
            (i.request_id for i in items if isinstance(i.request_id, str) and i.request_id), None
        ),
        tokens_used=_whole(tokens) if tokens is not None and math.isfinite(tokens) else None,
        content_violation=any(_lax(_BOOL, i.content_violation) for i in items)
        or any(_lax(_BOOL, f) for f in flags),
        seed=_lax(_INT, wire.seed),
        usage=usage,
        images=[
            ImageRef(
                url=i.url,
                b64_json=i.b64_json,
                width=_lax(_INT, i.width),
                height=_lax(_INT, i.height),
                content_type=_text_or_none(i.content_type),
                revised_prompt=_text_or_none(i.revised_prompt),
            )
            for i in items
            if i.url or i.b64_json
        ],
    )


def _text(value: Any) -> str | None:
    """A cost from the body, as the exact text of its number (None for anything else)."""
    return str(value) if _is_number(value) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _plain(value: Any) -> Any:
    """The body's usage with its decimals back as JSON numbers, for the record."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _whole(value: float) -> float | int:
    return int(value) if value.is_integer() else value


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
