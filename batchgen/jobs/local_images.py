"""Local files in a job's image fields: read once, checked to be images, sent as ``data:`` URIs;
records keep the path (absolute) rather than the bytes."""

from __future__ import annotations

import base64
import collections
import hashlib
import os
from pathlib import Path
from typing import Any

from batchgen.images import InvalidImage, inspect_image
from batchgen.jobs.reader import show_value
from batchgen.models.catalog import IMAGE_FIELDS

__all__ = ["MAX_LOCAL_IMAGE_BYTES", "resolve_local_images"]

MAX_LOCAL_IMAGE_BYTES = 50 * 1024 * 1024  # a reference image larger than this is surely a mistake
_REMOTE_SCHEMES = ("http://", "https://", "data:")
_IMAGE_FIELDS = frozenset(IMAGE_FIELDS)


def resolve_local_images(
    fields: dict[str, Any], base_dir: Path
) -> tuple[dict[str, Any], dict[str, Any], list[tuple[str, str]]]:
    """Replace local file paths in image fields by data URIs; return the body, the image fields
    as written (see :attr:`Job.request`) and any problems."""
    if _IMAGE_FIELDS.isdisjoint(fields):
        return fields, {}, []
    body = dict(fields)
    sources: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    for fld in IMAGE_FIELDS:
        value = body.get(fld)
        if isinstance(value, str):
            body[fld], message = _image_value(value, base_dir)
            sources[fld] = _as_source(value, base_dir)
            if message:
                problems.append((fld, message))
        elif isinstance(value, list):
            resolved = []
            for index, item in enumerate(value):
                new, message = _image_value(item, base_dir) if isinstance(item, str) else (item, None)
                resolved.append(new)
                if message:
                    problems.append((f"{fld}[{index}]", message))
            body[fld] = resolved
            sources[fld] = [_as_source(item, base_dir) if isinstance(item, str) else item for item in value]
    return body, sources, problems


def _as_source(value: str, base_dir: Path) -> str:
    """An image value as records keep it: a URL as is, a data URI cut short, a path absolute."""
    if value.startswith("data:"):
        head = value.split(",", 1)[0]
        return (
            f"{head},... ({len(value)} characters, sha256 {hashlib.sha256(value.encode()).hexdigest()[:12]})"
        )
    if value.startswith(_REMOTE_SCHEMES) or not value.strip():
        return value
    path = _local_path(value)
    return str(path if path.is_absolute() else (base_dir / path).absolute())


def _local_path(value: str) -> Path:
    """A local image path as written, ``~`` and ``~user`` expanded as a shell expands them: a
    ``~name`` that names no user stays as written (``~draft.png`` is a file of that name)."""
    path = Path(value)
    if value.startswith("~"):
        try:
            return path.expanduser()
        except RuntimeError:  # no such user, or no home directory
            return path
    return path


def _image_value(value: str, base_dir: Path) -> tuple[str, str | None]:
    if value.startswith(_REMOTE_SCHEMES) or not value.strip():
        return value, None
    path = _local_path(value)
    path = path if path.is_absolute() else base_dir / path
    try:
        stat = path.stat()
        return _data_uri(str(path.resolve()), stat.st_mtime_ns, stat.st_size), None
    except InvalidImage as exc:
        return value, f"local file {show_value(value)} is not a usable image: {exc}"
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        return (
            value,
            f"local image {show_value(value)} cannot be read: {getattr(exc, 'strerror', None) or exc}",
        )


_URI_CACHE: collections.OrderedDict[tuple[str, int, int], str] = collections.OrderedDict()
_URI_CACHE_CHARS = 16 * 1024 * 1024  # many jobs share a reference image; few share a huge one


def _data_uri(path: str, mtime_ns: int, size: int) -> str:
    """Read a local image once per (path, mtime, size) and encode it as a data URI.

    Recent results are kept up to 16 MiB of text in all, so memory stays bounded whatever the
    number and size of the images (an edited file has a new mtime and is read again).
    """
    key = (path, mtime_ns, size)
    if key in _URI_CACHE:
        _URI_CACHE.move_to_end(key)
        return _URI_CACHE[key]
    if size > MAX_LOCAL_IMAGE_BYTES:
        raise InvalidImage(f"{size} bytes is over the {MAX_LOCAL_IMAGE_BYTES}-byte limit")
    with open(path, "rb", opener=_no_follow_fifo) as handle:
        data = handle.read(MAX_LOCAL_IMAGE_BYTES + 1)
    info = inspect_image(data, decode=False)  # the API decodes it; identifying it is enough here
    uri = f"data:{info.content_type};base64,{base64.b64encode(data).decode('ascii')}"
    del data
    if len(uri) <= _URI_CACHE_CHARS // 4:
        _URI_CACHE[key] = uri
        while sum(len(v) for v in _URI_CACHE.values()) > _URI_CACHE_CHARS:
            _URI_CACHE.popitem(last=False)
    return uri


def _no_follow_fifo(path: str, flags: int) -> int:
    # O_NONBLOCK keeps a FIFO or device named as an "image" from hanging the scan.
    return os.open(path, flags | os.O_NONBLOCK)
