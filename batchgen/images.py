"""Identify image files and bytes with Pillow: format, MIME type, size; refuse bombs and non-images.

Used on both sides of the API: local reference images in job files (sent as data URIs) and
generated images downloaded from the API's CDN.
"""

from __future__ import annotations

import base64
import binascii
import io
import urllib.parse
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

__all__ = ["DEFAULT_MAX_PIXELS", "ImageInfo", "InvalidImage", "decode_b64_image", "inspect_image"]

DEFAULT_MAX_PIXELS = 64 * 1024 * 1024
"""Largest image accepted, in pixels (8192 x 8192); a larger one is treated as a decompression bomb."""


_CHECKED_BY_VERIFY = {"PNG"}  # formats whose verify() checks every byte (chunk CRCs)


def _stream(source: Path | bytes) -> Path | io.BytesIO:
    return io.BytesIO(source) if isinstance(source, bytes) else source


class InvalidImage(ValueError):
    """The bytes are not an image Pillow can identify, are corrupt, or exceed the pixel cap."""


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What an image is: ``content_type`` (e.g. ``image/png``), size in pixels, file extension."""

    content_type: str
    width: int
    height: int
    extension: str


def inspect_image(
    source: Path | bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, decode: bool = True
) -> ImageInfo:
    """Identify ``source`` (a file path or the bytes) and check its integrity.

    PNG is checked chunk by chunk (every CRC) without decoding its pixels; other formats (whose
    ``verify`` passes a file cut short) are decoded whole when ``decode`` is true, as for every
    downloaded image. ``decode=False`` only identifies and verifies (a reference image the API
    will decode itself).

    Raises :class:`InvalidImage` when Pillow cannot identify it, its data is corrupt, or it has
    more than ``max_pixels`` pixels (a decompression bomb: small file, huge bitmap).
    """
    try:
        with warnings.catch_warnings():
            # Pillow only warns between max_pixels and twice that; both are refusals here.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(_stream(source)) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise InvalidImage(f"{width}x{height} pixels is over the cap of {max_pixels}")
                fmt = image.format or ""
                image.verify()
            if decode and fmt not in _CHECKED_BY_VERIFY:
                # verify() reads a PNG's every chunk CRC, but passes a JPEG or GIF cut short:
                # those are decoded whole (within the pixel cap) to be sure they are complete.
                with Image.open(_stream(source)) as image:
                    image.load()
    except InvalidImage:
        raise
    except UnidentifiedImageError as exc:
        # Pillow's message names its stream object ("<_io.BytesIO object at 0x...>"): useless here.
        raise InvalidImage("not an image in a format Pillow reads (PNG, JPEG, WebP, GIF...)") from exc
    except Image.DecompressionBombError as exc:
        raise InvalidImage(str(exc)) from exc
    except Image.DecompressionBombWarning as exc:
        raise InvalidImage(str(exc)) from exc
    except Exception as exc:  # Pillow's many ways of saying "corrupt" or "cannot decode"
        raise InvalidImage(f"corrupt or undecodable image data: {type(exc).__name__}: {exc}") from exc
    # MPO (a phone JPEG with a depth or gain map inside) is a JPEG to everyone else.
    content_type = "image/jpeg" if fmt == "MPO" else Image.MIME.get(fmt, "application/octet-stream")
    extension = {"JPEG": "jpg", "MPO": "jpg"}.get(fmt, fmt.lower() or "bin")
    return ImageInfo(content_type, width, height, extension)


def decode_b64_image(data: str) -> bytes:
    """The bytes of an inline ``b64_json`` image, or of a ``data:`` URI (RFC 2397: base64 or
    percent-encoded).

    Line breaks are tolerated. Raises :class:`InvalidImage` when ``data`` is not valid base64.
    """
    payload = data
    if data.startswith("data:"):
        header, _, payload = data.partition(",")
        if not header.endswith(";base64"):
            return urllib.parse.unquote_to_bytes(payload)
    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError) as exc:  # ValueError: characters outside ASCII
        raise InvalidImage(f"b64_json is not valid base64: {exc}") from exc
