"""Identify image files and bytes with Pillow: format, MIME type, size; refuse bombs and non-images.

Used on both sides of the API: local reference images in job files (sent as data URIs) and
generated images downloaded from the API's CDN.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

__all__ = ["DEFAULT_MAX_PIXELS", "ImageInfo", "InvalidImage", "decode_b64_image", "inspect_image"]

DEFAULT_MAX_PIXELS = 64 * 1024 * 1024
"""Largest image accepted, in pixels (8192 x 8192); a larger one is treated as a decompression bomb."""


class InvalidImage(ValueError):
    """The bytes are not an image Pillow can identify, are corrupt, or exceed the pixel cap."""


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What an image is: ``content_type`` (e.g. ``image/png``), size in pixels, file extension."""

    content_type: str
    width: int
    height: int
    extension: str


def inspect_image(source: Path | bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Identify ``source`` (a file path or the bytes) and check its integrity without decoding it all.

    Raises :class:`InvalidImage` when Pillow cannot identify it, its data is corrupt, or it has
    more than ``max_pixels`` pixels (a decompression bomb: small file, huge bitmap).
    """
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with warnings.catch_warnings():
            # Pillow only warns between max_pixels and twice that; both are refusals here.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(stream) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise InvalidImage(f"{width}x{height} pixels is over the cap of {max_pixels}")
                fmt = image.format or ""
                image.verify()
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise InvalidImage(str(exc) or "not an image") from exc
    except Image.DecompressionBombWarning as exc:
        raise InvalidImage(str(exc)) from exc
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow's ways of saying "corrupt"
        if isinstance(exc, InvalidImage):
            raise
        raise InvalidImage(f"corrupt image data: {exc}") from exc
    content_type = Image.MIME.get(fmt, "application/octet-stream")
    extension = {"JPEG": "jpg", "MPO": "jpg"}.get(fmt, fmt.lower() or "bin")
    return ImageInfo(content_type, width, height, extension)


def decode_b64_image(data: str) -> bytes:
    """The bytes of an inline ``b64_json`` image (or a ``data:<mime>;base64,`` URI).

    Line breaks are tolerated. Raises :class:`InvalidImage` when ``data`` is not valid base64.
    """
    payload = data.split(";base64,", 1)[1] if data.startswith("data:") else data
    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except binascii.Error as exc:
        raise InvalidImage(f"b64_json is not valid base64: {exc}") from exc
