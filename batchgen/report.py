"""``batchgen report DIR``: ``DIR/report.html``, one static page showing every job's outcome.

One card per job (its current record): thumbnails of its images, the prompt and parameters it
sent (local images by path, inline data cut short: never the data itself), model, status, cost,
attempts, and for a failure its error; content violations marked; filters by status and model;
counts and total cost at the top. The page needs no network: thumbnails are JPEG files made
with Pillow in ``DIR/thumbnails/`` (made once per image), linked relatively. Rendered with Jinja2,
autoescaping on: prompts are untrusted text.

Example::

    path = make_report(Path("out/nightly"))   # -> out/nightly/report.html
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from PIL import Image

from batchgen.errors import StorageError
from batchgen.responses import Spend
from batchgen.store import ManifestRecord, Status, read_records, utc_now

__all__ = ["REPORT_NAME", "THUMBNAIL_PIXELS", "make_report"]

REPORT_NAME = "report.html"
THUMBNAIL_PIXELS = 320  # the longest side of a thumbnail
_THUMBNAILS = "thumbnails"


@dataclass(slots=True)
class _Image:
    href: str
    thumbnail: str
    width: int
    height: int


@dataclass(slots=True)
class _Card:
    job_id: str
    model: str
    status: str
    violation: bool
    retried: bool  # a failure a plain resume sends again
    prompt: str
    attempts: int
    cost: str
    request_id: str
    error: str
    parameters: list[tuple[str, str]] = field(default_factory=list)
    images: list[_Image] = field(default_factory=list)


def make_report(out_dir: Path) -> Path:
    """Write ``out_dir/report.html`` (and any missing thumbnails); return its path.

    Raises :class:`~batchgen.errors.UsageError` when ``out_dir`` holds no batchgen run, and
    :class:`~batchgen.errors.StorageError` when the page or a thumbnail cannot be written.
    """
    records = read_records(out_dir)
    cards = [_card(out_dir, record) for record in records]
    spent = sum((Spend.of(r.usd_spent, r.credits_used) or Spend() for r in records), Spend())
    environment = Environment(
        loader=PackageLoader("batchgen", "templates"), autoescape=select_autoescape(["html", "j2"])
    )
    page = environment.get_template("report.html.j2").render(
        title=out_dir.resolve().name,
        cards=cards,
        counts=dict(Counter(card.status for card in cards)),
        models=sorted({card.model for card in cards}),
        spent=spent,
        made_at=utc_now(),
        manifest="manifest.jsonl",
    )
    target = out_dir / REPORT_NAME
    temporary = target.with_name(f".{REPORT_NAME}.tmp")
    try:
        temporary.write_text(page, encoding="utf-8")
        temporary.replace(target)
    except OSError as exc:
        raise StorageError(f"cannot write {target}: {exc.strerror or exc}") from exc
    return target


def _card(out_dir: Path, record: ManifestRecord) -> _Card:
    request = dict(record.request or {})
    prompt = str(request.pop("prompt", ""))
    request.pop("model", None)
    cost = Spend.of(record.usd_spent, record.credits_used)
    error = f"{record.error.kind}: {record.error.message}" if record.error else ""
    images = (
        [_thumbnail(out_dir, image.path) for image in record.images]
        if record.status is Status.SUCCEEDED
        else []
    )
    gone = [image.path for image, shown in zip(record.images, images, strict=False) if shown is None]
    if gone:
        error = f"missing: {', '.join(gone)} (`batchgen verify` checks the folder)"
    return _Card(
        job_id=record.job_id,
        model=record.model,
        status=record.status.value,
        violation=record.content_violation,
        retried=bool(record.error and record.error.retryable),
        prompt=prompt,
        attempts=record.attempts,
        cost=f"${cost.usd:.4g} / {cost.credits:.0f} credits" if cost else "",
        request_id=record.request_id or "",
        error=error,
        parameters=[(name, _shown(value)) for name, value in request.items()],
        images=[image for image in images if image is not None],
    )


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_shown(item) for item in value)
    if isinstance(value, str) and value.startswith("/"):  # a local image, by its absolute path
        return f"{PurePosixPath(value).name} ({value})"
    return value if isinstance(value, str) else json.dumps(value)


def _thumbnail(out_dir: Path, image_path: str) -> _Image | None:
    """The image's thumbnail, made if missing or older than the image; None if the image is gone."""
    source = out_dir / image_path
    if not source.is_file():
        return None
    name = PurePosixPath(image_path).stem + ".jpg"
    target = out_dir / _THUMBNAILS / name
    try:
        if not target.exists() or target.stat().st_mtime < source.stat().st_mtime:
            target.parent.mkdir(exist_ok=True)
            with Image.open(source) as image:
                image.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))
                temporary = target.with_name(f".{name}.tmp")
                image.convert("RGB").save(temporary, "JPEG", quality=85)
                temporary.replace(target)
        with Image.open(target) as thumb:
            width, height = thumb.size
    except OSError as exc:  # (Pillow's UnidentifiedImageError is one too)
        raise StorageError(f"cannot make a thumbnail of {image_path}: {exc}") from exc
    return _Image(image_path, f"{_THUMBNAILS}/{name}", width, height)
