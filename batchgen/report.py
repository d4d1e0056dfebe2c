"""``batchgen report DIR``: ``DIR/report.html``, one static page showing every job's outcome.

A gallery for the person who asked for the pictures: one card per job (its current record),
problems first (failures, content violations, jobs no longer in the job file), each with its
picture(s) and prompt, the reference images of an edit, remix or image-to-image job shown beside
the result (before -> after), several images of one job as a compact strip. A search box (id and
prompt), filters by status and model, a sort, and paging (the first 120 cards, then more on
demand; images load lazily) keep a folder of thousands usable. Engineer detail (request id,
cost, attempts, parameters, paths) is folded away in each card. The page needs no network:
thumbnails are JPEG files made with Pillow in ``DIR/thumbnails/`` (made once per image), linked
relatively. Rendered with Jinja2, autoescaping on: prompts are untrusted text.

Example::

    path = make_report(Path("out/nightly"))   # -> out/nightly/report.html
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from PIL import Image

from batchgen.errors import BatchgenError, StorageError
from batchgen.models.catalog import IMAGE_FIELDS
from batchgen.money import Spend
from batchgen.outcome import Status
from batchgen.store import (
    ManifestRecord,
    OutputBackend,
    manifest_path,
    read_report_view,
    report_path,
    thumbnails_path,
    utc_now,
)
from batchgen.store.layout import MANIFEST_PARTS, THUMBNAILS

__all__ = ["REPORT_AT_RUN_END", "THUMBNAIL_PIXELS", "make_report", "refresh_report"]

log = logging.getLogger(__name__)

THUMBNAIL_PIXELS = 320  # the longest side of a thumbnail


@dataclass(slots=True)
class _Image:
    href: str
    thumbnail: str  # "" when the image cannot be read
    width: int
    height: int
    name: str = ""


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
    finished_at: str
    parameters: list[tuple[str, str]] = field(default_factory=list)
    images: list[_Image] = field(default_factory=list)
    references: list[_Image] = field(default_factory=list)  # before: what an edit started from
    not_in_file: bool = False  # the job file last run into the folder no longer holds it

    @property
    def problem(self) -> bool:
        """Shown first: a failure, a content violation, a job that left the file."""
        return self.status != Status.SUCCEEDED or self.violation or self.not_in_file


REPORT_AT_RUN_END = 10_000  # jobs; past that a refresh takes long: `batchgen report` makes it
REPORT_UNASKED = 100  # jobs; a folder this small gets a report at a run's end without asking
PAGE = 120  # cards shown before "show more"


def refresh_report(out_dir: Path, jobs: int) -> None:
    """A run's end makes ``report.html`` for a folder of up to :data:`REPORT_UNASKED` jobs, and
    refreshes one that exists (new images get thumbnails, ~15 ms each) up to
    :data:`REPORT_AT_RUN_END` jobs, where that would take minutes. Never raises: a report that
    cannot be made is logged (the run's outcome is not the report's)."""
    if jobs > REPORT_AT_RUN_END or (jobs > REPORT_UNASKED and not report_path(out_dir).exists()):
        log.info("report.html not refreshed (%d jobs): `batchgen report %s` makes it", jobs, out_dir)
        return
    try:
        make_report(out_dir)
    except BatchgenError as exc:
        log.warning("report.html not refreshed: %s", exc)


def make_report(out_dir: Path, *, output: OutputBackend | None = None, name: str | None = None) -> Path:
    """Write ``out_dir/report.html`` (and any missing thumbnails); return its path.

    ``output``: where the images are when not in ``out_dir`` (an object store, named ``name``;
    ``out_dir`` is then its state folder): each image is looked up there, fetched once for its
    thumbnail, and the page and the new thumbnails are put beside the images.

    An image that cannot be read (damaged, not an image) is marked on its card; the page is
    made all the same. Raises :class:`~batchgen.errors.UsageError` when ``out_dir`` holds no
    batchgen run, and :class:`~batchgen.errors.StorageError` when the page or a thumbnail
    cannot be written.
    """
    started = time.time()
    view = read_report_view(out_dir)
    cards = [_card(out_dir, record, record.job_id in view.not_in_file, output) for record in view.records]
    cards.sort(key=lambda card: (not card.problem, card.job_id))
    environment = Environment(
        loader=PackageLoader("batchgen", "templates"), autoescape=select_autoescape(["html", "j2"])
    )
    page = environment.get_template("report.html.j2").render(
        title=name or out_dir.resolve().name,
        cards=cards,
        counts=dict(Counter(card.status for card in cards)),
        problems=sum(card.problem for card in cards),
        models=sorted({card.model for card in cards}),
        spent=view.spent,
        made_at=utc_now(),
        manifest=f"{name}/{MANIFEST_PARTS}/" if output is not None else manifest_path(out_dir).name,
        page=PAGE,
    )
    target = report_path(out_dir)
    temporary = target.with_name(f".{target.name}.tmp")
    try:
        temporary.write_text(page, encoding="utf-8")
        temporary.replace(target)
    except OSError as exc:
        raise StorageError(f"cannot write {target}: {exc.strerror or exc}") from exc
    if output is not None:
        thumbnails = thumbnails_path(out_dir)
        for made in sorted(thumbnails.glob("*.jpg")) if thumbnails.is_dir() else []:
            if made.stat().st_mtime >= started - 1:  # (new ones: the others were put before)
                output.put_file(f"{THUMBNAILS}/{made.name}", made.read_bytes())
        output.put_file(target.name, target.read_bytes())
    return target


def _card(out_dir: Path, record: ManifestRecord, not_in_file: bool, output: OutputBackend | None) -> _Card:
    request = dict(record.request or {})
    prompt = str(request.pop("prompt", ""))
    request.pop("model", None)
    cost = Spend.of(record.usd_spent, record.credits_used)
    error = f"{record.error.kind}: {record.error.message}" if record.error else ""
    images = (
        [_result_thumbnail(out_dir, image.path, output) for image in record.images]
        if record.status is Status.SUCCEEDED
        else []
    )
    gone = [image.path for image, shown in zip(record.images, images, strict=False) if shown is None]
    damaged = [image.href for image in images if image is not None and not image.thumbnail]
    if gone or damaged:
        problems = [f"missing: {', '.join(gone)}"] * bool(gone)
        problems += [f"cannot be shown: {', '.join(damaged)}"] * bool(damaged)
        error = "; ".join(problems) + " (`batchgen verify` checks the folder)"
    return _Card(
        job_id=record.job_id,
        model=record.model,
        status=record.status.value,
        violation=record.content_violation,
        retried=bool(record.error and record.error.retryable),
        prompt=prompt,
        attempts=record.attempts,
        cost=cost.describe() if cost else "",
        request_id=record.request_id or "",
        error=error,
        finished_at=record.finished_at or "",
        parameters=[(name, _shown(value)) for name, value in request.items()],
        images=[image for image in images if image is not None and image.thumbnail],
        references=[_reference(out_dir, value) for value in _reference_values(request)],
        not_in_file=not_in_file,
    )


def _reference_values(request: dict[str, Any]) -> list[str]:
    """The reference images a request names (``image_url``, ``image_urls``), as recorded."""
    values: list[Any] = []
    for name in IMAGE_FIELDS:
        value = request.get(name)
        values += value if isinstance(value, list) else [value] if value else []
    return [str(value) for value in values]


def _reference(out_dir: Path, value: str) -> _Image:
    """A reference image for its card: a thumbnail of a local file (recorded by its absolute
    path); a URL or a data URI (kept cut short) is shown by name only."""
    name = (
        PurePosixPath(value.split("?", maxsplit=1)[0]).name
        if not value.startswith("data:")
        else "inline image"
    )
    if not value.startswith("/"):
        return _Image(value if value.startswith(("http://", "https://")) else "", "", 0, 0, name)
    digest = hashlib.sha256(value.encode()).hexdigest()[:16]
    shown = _thumbnail(Path(value), thumbnails_path(out_dir) / f"ref-{digest}.jpg", Path(value).as_uri())
    if shown is None:
        return _Image("", "", 0, 0, f"{name} (no longer there)")
    shown.name = name
    return shown


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_shown(item) for item in value)
    if isinstance(value, str) and value.startswith("/"):  # a local image, by its absolute path
        return f"{PurePosixPath(value).name} ({value})"
    return value if isinstance(value, str) else json.dumps(value)


def _result_thumbnail(out_dir: Path, image_path: str, output: OutputBackend | None) -> _Image | None:
    target = thumbnails_path(out_dir) / (PurePosixPath(image_path).stem + ".jpg")
    if output is None:
        return _thumbnail(out_dir / image_path, target, image_path)
    if output.image_size(image_path) is None:
        return None
    if target.is_file():  # (made from it before: an image is put once, never changed)
        return _thumbnail(target, target, image_path)
    data = output.read_bytes(image_path)
    if data is None:
        return None
    fetched = target.with_name(f".{target.stem}.fetched")
    try:
        target.parent.mkdir(exist_ok=True)
        fetched.write_bytes(data)
        return _thumbnail(fetched, target, image_path)
    except OSError as exc:
        raise StorageError(f"cannot write {fetched}: {exc.strerror or exc}") from exc
    finally:
        fetched.unlink(missing_ok=True)


def _thumbnail(source: Path, target: Path, href: str) -> _Image | None:
    """The thumbnail of ``source`` at ``target`` (made if missing or older than the image),
    linking to ``href``; None if the image is gone, and one without a ``thumbnail`` if it cannot
    be read as an image (damaged). Raises :class:`StorageError` when the thumbnail cannot be
    written."""
    if not source.is_file():
        return None
    relative = f"{target.parent.name}/{target.name}"
    if not target.exists() or target.stat().st_mtime < source.stat().st_mtime:
        try:
            with Image.open(source) as image:
                image.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))
                small = image.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as exc:  # (UnidentifiedImageError too)
            log.warning("report: %s cannot be read as an image (%s); its card says so", source, exc)
            return _Image(href, "", 0, 0)
        try:
            target.parent.mkdir(exist_ok=True)
            temporary = target.with_name(f".{target.name}.tmp")
            small.save(temporary, "JPEG", quality=85)
            temporary.replace(target)
        except OSError as exc:
            raise StorageError(f"cannot write the thumbnail of {source}: {exc.strerror or exc}") from exc
        return _Image(href, relative, *small.size)
    try:
        with Image.open(target) as thumb:
            width, height = thumb.size
    except (OSError, ValueError):  # a damaged thumbnail: made again next time
        target.unlink(missing_ok=True)
        return _Image(href, "", 0, 0)
    return _Image(href, relative, width, height)
