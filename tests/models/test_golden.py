"""The golden test of the seed models: the schema data (:mod:`batchgen.models.catalog`, converted
from the API's OpenAPI documents plus ``overrides.json``) accepts and rejects exactly the bodies
that today's pydantic models (:mod:`batchgen.models.seed`) accept and reject.

The bodies are generated: every field either model knows (plus near misses such as ``promt``),
each set to every value of one palette (edges of every documented range and length, each enum's
values and a stranger, wrong types, null, floats written as whole numbers, image URIs good and
bad), and each required field left out.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from batchgen.models import catalog
from batchgen.models.seed import MODELS, image_request_adapter

URL = "https://x.test/a.png"
BASE: dict[str, dict[str, Any]] = {
    "reve/create-image": {"prompt": "p"},
    "reve/edit-image": {"prompt": "p", "image_url": URL},
    "reve/remix-edit-image": {"prompt": "p", "image_urls": [URL]},
    "flux/dev/image-to-image": {"prompt": "p", "image_url": URL},
}
IMAGES = [
    URL,
    "http://h.test/x.png",
    "data:image/png;base64,AAAA",
    "ftp://x.test/a.png",
    "a.png",
    "data:image/png,xx",
    "",
    "https://",
]
PALETTE: list[Any] = [
    *(None, True, False, 0, 1, -1, 2, 4, 5, 20, 21, 50, 51, 0.5, 1.5, 20.5, 2.0, float("nan"), float("inf")),
    *("x", "", "3:2", "1:1", "21:9", "json", "png", "x" * 2560, "x" * 2561, "x" * 4000, "x" * 4001),
    *([], [URL], [URL] * 4, [URL] * 5, {}, {"a": 1}),
    *IMAGES,
    *([image] for image in IMAGES),
]
NEAR_MISSES = {
    "promt",
    "aspect_ratio",
    "image_url",
    "image_urls",
    "output_format",
    "seed",
    "num_images",
    "size",
}


def bodies() -> list[dict[str, Any]]:
    """Every generated body, for the four seed models."""
    found = []
    for model, base in BASE.items():
        names = set(catalog.models()[model].fields) | set(MODELS[model].model_fields) | NEAR_MISSES
        for name in sorted(names - {"model"}):
            found += [{"model": model, **base, name: value} for value in PALETTE]
        for name in base:
            found.append({"model": model, **{k: v for k, v in base.items() if k != name}})
    return found


def accepted_by_seed(body: dict[str, Any]) -> bool:
    try:
        image_request_adapter.validate_python(body)
    except ValidationError:
        return False
    return True


def test_the_schema_data_agrees_with_the_seed_models_on_every_generated_body():
    generated = bodies()
    disagreements = [
        (body["model"], {k: v for k, v in body.items() if k != "model"})
        for body in generated
        if accepted_by_seed(body) != (not catalog.check(body))
    ]
    assert len(generated) > 2000
    assert disagreements == []
    # both sides of the line are exercised, for every model
    for model in BASE:
        verdicts = {accepted_by_seed(b) for b in generated if b["model"] == model}
        assert verdicts == {True, False}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {"model": "flux/dev/image-to-image", **BASE["flux/dev/image-to-image"], "num_images": 2.0},
            "num_images",
        ),
        ({"model": "reve/edit-image", "prompt": "p", "image_url": "ftp://x.test/a.png"}, "image_url"),
        ({"model": "reve/remix-edit-image", "prompt": "p", "image_urls": [URL, "a.png"]}, "image_urls[1]"),
        ({"model": "flux-pro/v1.1", "prompt": "p", "seed": 3.0}, "seed"),
    ],
)
def test_rules_beyond_the_schemas_name_the_field(body, field):
    assert [p.field for p in catalog.check(body)] == [field]


def test_a_count_of_images_is_a_whole_number_wherever_the_schema_says_number():
    assert [p.field for p in catalog.check({"model": "flux/dev", "prompt": "p", "num_images": 2.5})] == [
        "num_images"
    ]
    assert catalog.check({"model": "flux/dev", "prompt": "p", "num_images": 2.0}) == []


def test_the_mask_and_the_reference_of_switchx_are_image_fields():
    body = {
        "model": "beeble/switchx-image-to-image",
        "image_url": URL,
        "reference_image_url": "ftp://x.test/r.png",
        "alpha_url": URL,
    }
    assert [p.field for p in catalog.check(body)] == ["reference_image_url"]
