"""Draw the sample jobs' reference images (a T-rex stand-in and a blue mug) with Pillow.

The API docs' examples use pictures we cannot ship or fetch; these are our own, made here:
    python sample_jobs/make_reference_images.py
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).parent / "images"


def t_rex() -> Image.Image:
    """A 512x384 beach scene with a green dinosaur-ish silhouette."""
    image = Image.new("RGB", (512, 384), (135, 206, 235))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 260, 512, 384), fill=(238, 214, 175))
    draw.ellipse((180, 150, 340, 270), fill=(34, 139, 34))  # body
    draw.ellipse((300, 100, 380, 160), fill=(34, 139, 34))  # head
    draw.rectangle((320, 118, 360, 128), fill=(0, 0, 0))  # sunglasses
    draw.polygon([(180, 210), (90, 250), (185, 235)], fill=(34, 139, 34))  # tail
    return image


def blue_mug() -> Image.Image:
    """A 256x256 blue mug on white."""
    image = Image.new("RGB", (256, 256), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    draw.rectangle((70, 70, 170, 200), fill=(30, 80, 200))
    draw.ellipse((150, 100, 210, 170), outline=(30, 80, 200), width=12)
    return image


if __name__ == "__main__":
    HERE.mkdir(exist_ok=True)
    t_rex().save(HERE / "t-rex.png", optimize=True)
    blue_mug().save(HERE / "blue-mug.jpg", quality=85)
    print(f"wrote {HERE / 't-rex.png'} and {HERE / 'blue-mug.jpg'}")
