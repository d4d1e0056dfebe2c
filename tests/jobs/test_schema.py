"""The job file's JSON Schema: samples validate, and it agrees with the request models."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml
from conftest import SAMPLES

from batchgen.jobs.schema import job_file_schema
from batchgen.models.known import all_models
from batchgen.models.seed import MODELS


def test_shipped_schema_is_current():
    assert json.loads((SAMPLES / "batchgen.schema.json").read_text()) == job_file_schema()


def test_samples_validate_against_the_schema():
    document = yaml.safe_load((SAMPLES / "quickstart.yaml").read_text())
    jsonschema.validate(document, job_file_schema())
    line_schema = job_file_schema(jsonl=True)
    for line in (SAMPLES / "examples.jsonl").read_text().splitlines():
        jsonschema.validate(json.loads(line), line_schema)


def test_schema_and_models_name_the_same_fields():
    variants = job_file_schema(jsonl=True)["oneOf"]
    for model, variant in zip(MODELS.values(), variants[: len(MODELS)], strict=True):
        assert set(variant["properties"]) == set(model.model_fields) | {"id"}
        assert variant["additionalProperties"] is False


def test_the_schema_covers_every_model():
    variants = job_file_schema(jsonl=True)["oneOf"]
    assert [v["properties"]["model"] for v in variants[len(MODELS) :]] == [
        {"const": m} for m in all_models() if m not in MODELS
    ]
    line = {"model": "flux-pro/v1.1", "prompt": "a cat", "num_images": 2}
    jsonschema.validate(line, job_file_schema(jsonl=True))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**line, "num_imagez": 2}, job_file_schema(jsonl=True))
    # a YAML file's common default is checked against any model that has the field
    document = {"defaults": {"image_size": {"width": 512, "height": 512}}, "jobs": [line]}
    jsonschema.validate(document, job_file_schema())


@pytest.mark.parametrize(
    "job",
    [
        {"model": "reve/create-image", "promt": "typo"},
        {"model": "reve/create-image", "prompt": "p", "aspect_ratio": "5:4"},
        {"model": "flux/dev/image-to-image", "prompt": "p", "image_url": "https://x.test", "num_images": 9},
    ],
)
def test_schema_rejects_what_the_models_reject(job):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"jobs": [job]}, job_file_schema())
