"""Real PNG pictures for the simulator's CDN: different for every request, sized like the API's."""

from __future__ import annotations

import base64
import binascii
import functools
import io
import random
import struct
import zlib

from PIL import Image, ImageDraw, UnidentifiedImageError

__all__ = ["ASPECT_SIZES", "bomb_png", "reference_size", "render_png"]

# reve: 16:9 -> 1360x768 is the docs' example; the others keep about the same pixel count.
ASPECT_SIZES = {
    "16:9": (1360, 768),
    "9:16": (768, 1360),
    "3:2": (1248, 832),
    "2:3": (832, 1248),
    "4:3": (1184, 888),
    "3:4": (888, 1184),
    "1:1": (1024, 1024),
}
FLUX_DEFAULT_SIZE = (1024, 768)  # the flux page's example, for a reference image it cannot fetch


@functools.lru_cache(maxsize=256)  # the same picture again (FaultConfig.image_pool) costs nothing
def render_png(width: int, height: int, seed: int) -> bytes:
    """A ``width`` x ``height`` PNG drawn from ``seed``: a colour field and a few shapes."""
    rng = random.Random(seed)
    image = Image.new("RGB", (width, height), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = rng.randrange(width), rng.randrange(height)
        size = rng.randrange(20, max(21, min(width, height) // 2))
        draw.ellipse((x, y, x + size, y + size), fill=tuple(rng.randrange(256) for _ in range(3)))
    draw.text((10, 10), f"batchgen simulator #{seed:x}", fill=(255, 255, 255))
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def reference_size(image_url: str) -> tuple[int, int]:
    """The size of a data-URI reference image (flux keeps it); the docs' example size otherwise."""
    if image_url.startswith("data:"):
        try:
            data = base64.b64decode(image_url.split(",", 1)[1])
            with Image.open(io.BytesIO(data)) as image:
                return image.size
        except (binascii.Error, UnidentifiedImageError, OSError):
            pass
    return FLUX_DEFAULT_SIZE


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny, valid-looking PNG that claims a huge bitmap (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )
