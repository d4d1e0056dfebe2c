"""Identifying images with Pillow: type, size, and refusals."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from batchgen.images import InvalidImage, inspect_image
from batchgen.simulator.pictures import bomb_png


def encoded(fmt: str, size: tuple[int, int] = (30, 20)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(out, format=fmt)
    return out.getvalue()


@pytest.mark.parametrize(
    ("fmt", "mime", "ext"),
    [("PNG", "image/png", "png"), ("JPEG", "image/jpeg", "jpg"), ("WEBP", "image/webp", "webp")],
)
def test_formats_are_identified_from_their_bytes(fmt, mime, ext):
    info = inspect_image(encoded(fmt))
    assert (info.content_type, info.width, info.height, info.extension) == (mime, 30, 20, ext)


def test_files_work_like_bytes(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(encoded("PNG"))
    assert inspect_image(path).width == 30


@pytest.mark.parametrize("data", [b"", b"GIF89a-not-really", encoded("PNG")[:40], bomb_png()])
def test_non_images_corrupt_images_and_bombs_are_refused(data):
    with pytest.raises(InvalidImage):
        inspect_image(data)


def test_pixel_cap_is_configurable():
    with pytest.raises(InvalidImage, match="over the cap"):
        inspect_image(encoded("PNG", (100, 100)), max_pixels=5000)
