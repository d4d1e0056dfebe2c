"""Request models: every documented field, enum and limit, and nothing else."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from batchgen.models.seed import MODELS, image_request_adapter

URL = "https://x.test/a.png"
BASE = {
    "reve/create-image": {"prompt": "p"},
    "reve/edit-image": {"prompt": "p", "image_url": URL},
    "reve/remix-edit-image": {"prompt": "p", "image_urls": [URL]},
    "flux/dev/image-to-image": {"prompt": "p", "image_url": URL},
}


def check(model: str, **fields: object) -> None:
    image_request_adapter.validate_python({"model": model, **BASE[model], **fields})


VALID = [
    ("reve/create-image", {"prompt": "x" * 2560}),
    ("reve/create-image", {"aspect_ratio": "9:16", "convert_base64_to_url": False, "output_format": "json"}),
    ("reve/edit-image", {"image_url": "data:image/png;base64,AAAA"}),
    ("reve/remix-edit-image", {"image_urls": [URL] * 4, "aspect_ratio": "1:1"}),
    ("flux/dev/image-to-image", {"prompt": "x" * 4000, "guidance_scale": 1, "num_inference_steps": 50}),
    ("flux/dev/image-to-image", {"guidance_scale": 20.0, "num_images": 4, "seed": 1, "strength": 0.5}),
    ("flux/dev/image-to-image", {"enable_safety_checker": False, "num_inference_steps": 1}),
]

INVALID = [
    ("reve/create-image", {"prompt": "x" * 2561}),
    ("reve/create-image", {"aspect_ratio": "21:9"}),
    ("reve/create-image", {"output_format": "png"}),
    ("reve/create-image", {"image_url": URL}),  # not a field of create-image
    ("reve/create-image", {"promt": "typo"}),
    ("reve/create-image", {"convert_base64_to_url": "true"}),
    ("reve/edit-image", {"aspect_ratio": "1:1"}),  # edit-image has no aspect_ratio
    ("reve/edit-image", {"image_url": "ftp://x.test/a.png"}),
    ("reve/remix-edit-image", {"image_urls": []}),
    ("reve/remix-edit-image", {"image_urls": [URL] * 5}),
    ("reve/remix-edit-image", {"output_format": "json"}),  # not documented for remix
    ("flux/dev/image-to-image", {"prompt": "x" * 4001}),
    ("flux/dev/image-to-image", {"guidance_scale": 0.5}),
    ("flux/dev/image-to-image", {"guidance_scale": 20.5}),
    ("flux/dev/image-to-image", {"num_inference_steps": 0}),
    ("flux/dev/image-to-image", {"num_inference_steps": 51}),
    ("flux/dev/image-to-image", {"num_images": 0}),
    ("flux/dev/image-to-image", {"num_images": 5}),
    ("flux/dev/image-to-image", {"seed": 0}),
    ("flux/dev/image-to-image", {"seed": None}),
    ("flux/dev/image-to-image", {"strength": float("nan")}),
    ("flux/dev/image-to-image", {"aspect_ratio": "1:1"}),
]


@pytest.mark.parametrize(("model", "fields"), VALID)
def test_documented_values_are_accepted(model, fields):
    check(model, **fields)


@pytest.mark.parametrize(("model", "fields"), INVALID)
def test_out_of_spec_values_are_rejected(model, fields):
    with pytest.raises(ValidationError):
        check(model, **fields)


@pytest.mark.parametrize("model", list(MODELS))
def test_required_fields(model):
    for name in BASE[model]:
        partial = {k: v for k, v in BASE[model].items() if k != name}
        with pytest.raises(ValidationError):
            image_request_adapter.validate_python({"model": model, **partial})


def test_model_names_are_the_apis():
    assert list(MODELS) == [
        "reve/create-image",
        "reve/edit-image",
        "reve/remix-edit-image",
        "flux/dev/image-to-image",
    ]
