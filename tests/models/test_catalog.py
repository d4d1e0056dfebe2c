"""Every image model of the API, from its own schema: a minimal body of each validates, and a
body with a mistake is refused naming the field, before anything is sent."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from typing import Any

import pytest
from conftest import REPO, manifest, run_jobs

from batchgen.cli import ExitCode, main
from batchgen.models.catalog import IMAGE_FIELDS, check, models
from batchgen.simulator.app import answer_shapes

DOCS = REPO.parent / "shared" / "api-docs" / "models"
IMAGE = "https://example.com/reference.png"


def sample(name: str, schema: dict[str, Any]) -> Any:  # noqa: PLR0911 - one case a type
    """A value ``schema`` accepts: its default, its first choice, or the least it allows."""
    if "default" in schema and schema["default"] is not None:
        return schema["default"]
    if "const" in schema:
        return schema["const"]
    if "anyOf" in schema:
        return sample(name, schema["anyOf"][0])
    if "enum" in schema:
        return next(value for value in schema["enum"] if value is not None)
    kind = schema.get("type")
    kind = next(k for k in kind if k != "null") if isinstance(kind, list) else kind
    if kind == "string":
        return IMAGE if name in IMAGE_FIELDS else "a lighthouse at dusk"[: schema.get("maxLength", 100)]
    if kind in ("integer", "number"):
        return schema.get("minimum", schema.get("exclusiveMinimum", 0) + 1)
    if kind == "boolean":
        return True
    if kind == "array":
        return [sample(name, schema.get("items", {}))] * max(1, schema.get("minItems", 1))
    if kind == "object":
        properties = schema.get("properties", {})
        return {key: sample(key, properties[key]) for key in schema.get("required", properties)}
    raise AssertionError(f"no sample for {name}: {schema}")


def minimal(model: str) -> dict[str, Any]:
    """The least body of ``model``: its required fields."""
    schema = models()[model].schema
    body = {key: sample(key, schema["properties"][key]) for key in schema.get("required", [])}
    return {**body, "model": model}


def test_every_image_model_of_the_docs_is_known():
    assert len(models()) == 77
    assert {"dall-e-3", "flux-pro/v1.1", "google/nano-banana-pro", "luma/uni-1-max"} <= set(models())


@pytest.mark.parametrize("model", sorted(models()))
def test_a_minimal_body_validates_and_an_unknown_field_is_named(model):
    body = minimal(model)
    assert check(body) == []
    (problem,) = check({**body, "prompt_strenght": 1})
    assert problem.field == "prompt_strenght" and f"unknown field for {model}" in problem.message


def test_a_job_file_of_every_model_validates_and_a_mistake_exits_2_naming_file_line_job_field(
    tmp_path, capsys
):
    jobs = [{"id": f"j{i}", **minimal(m)} for i, m in enumerate(sorted(models()))]
    path = tmp_path / "every-model.jsonl"
    path.write_text("".join(json.dumps(job) + "\n" for job in jobs))
    assert main(["validate", str(path)]) == ExitCode.OK
    assert f"{len(jobs)} valid jobs" in capsys.readouterr().out
    jobs[5]["acceleration"] = "fats"
    jobs[9]["output_format"] = "tiff"
    path.write_text("".join(json.dumps(job) + "\n" for job in jobs))
    assert main(["validate", str(path)]) == ExitCode.INVALID_INPUT
    err = capsys.readouterr().err
    assert f"{path}:6, job 'j5', field 'acceleration'" in err
    assert f"{path}:10, job 'j9', field 'output_format'" in err


def test_an_enum_value_and_a_model_id_get_a_did_you_mean(tmp_path, capsys):
    path = tmp_path / "j.jsonl"
    body = {**minimal("blackforestlabs/flux-2-edit"), "acceleration": "hihg"}
    lines = [body, {"model": "flux-pro/v1.1-ultr", "prompt": "p"}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert main(["validate", str(path)]) == ExitCode.INVALID_INPUT
    err = capsys.readouterr().err
    assert "'hihg' is not one of 'none', 'regular', 'high'; did you mean 'high'?" in err
    assert "unknown model 'flux-pro/v1.1-ultr'; did you mean 'flux-pro/v1.1-ultra'?" in err


def test_a_rule_only_the_page_states_is_kept(tmp_path):
    problems = check({**minimal("luma/uni-1"), "image_url": IMAGE, "image_urls": [IMAGE]})
    assert [p.message for p in problems] == [
        "breaks a rule of luma/uni-1 (its page: give image_url or image_urls, not both)"
    ]


def test_a_local_file_in_any_image_field_is_sent_as_a_data_uri(tmp_path):
    from PIL import Image  # noqa: PLC0415

    Image.new("RGB", (8, 8)).save(tmp_path / "ref.png")
    body = {**minimal("alibaba/qwen-image-edit"), "image": "ref.png"}
    path = tmp_path / "j.jsonl"
    path.write_text(json.dumps(body) + "\n")
    from batchgen.jobs.load import iter_jobs  # noqa: PLC0415

    (job,) = iter_jobs(path)
    assert job.body["image"].startswith("data:image/png;base64,")
    assert job.request["image"] == str(tmp_path / "ref.png")


@pytest.mark.skipif(not DOCS.is_dir(), reason="the docs' model pages are not beside the repository")
def test_the_converted_schemas_are_those_the_script_makes_from_the_docs(tmp_path):
    out = tmp_path / "schemas"
    script = REPO / "scripts" / "convert_model_schemas.py"
    subprocess.run([sys.executable, str(script), str(DOCS), str(out)], check=True, capture_output=True)
    committed = REPO / "batchgen" / "models" / "schemas"
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in committed.iterdir())
    for made in out.iterdir():
        assert made.read_text() == (committed / made.name).read_text(), made.name
    shapes = REPO / "batchgen" / "simulator" / "answer_shapes.json"
    assert (tmp_path / "answer_shapes.json").read_text() == shapes.read_text()


async def test_a_job_of_every_model_runs_against_the_simulator_and_records_its_images(simulator, tmp_path):
    jobs = [{"id": f"j{i}", **minimal(m)} for i, m in enumerate(sorted(models()))]
    path = tmp_path / "every-model.jsonl"
    path.write_text("".join(json.dumps(job) + "\n" for job in jobs))
    report = await run_jobs(path, tmp_path / "out", simulator.url)
    assert report.complete and report.tally.succeeded == len(jobs) == simulator.state.generations
    records = manifest(tmp_path / "out")
    assert {r["model"] for r in records} == set(models())
    assert all(r["images"] and r["usd_spent"] for r in records)
    # (each model answered in the shape its page shows: all seven of them)
    assert set(answer_shapes().values()) == set("ABCDEFG")
    # and the record keeps what each shape returns beyond images
    shape = {r["job_id"]: answer_shapes().get(r["model"], "A") for r in records}
    for r in records:
        letter = shape[r["job_id"]]
        assert (r["usage"] is not None) == (letter in "ACD"), r["model"]
        assert (r["seed"] is not None) == (letter in "BC"), r["model"]
        revised = [i["revised_prompt"] for i in r["images"]]
        prompt = jobs[int(r["job_id"][1:])].get("prompt") if letter == "D" else None
        assert revised == [prompt] * len(revised)


async def test_the_simulator_refuses_a_body_its_schema_refuses():
    from batchgen.simulator.validation import validate_body  # noqa: PLC0415

    assert validate_body(minimal("dall-e-3")) is None
    refused = validate_body({**minimal("dall-e-3"), "quality": "ultra"})
    assert refused is not None and refused.startswith("Body validation error! quality: ")


def test_models_lists_every_model_and_shows_one_models_fields(capsys):
    assert main(["models", "--json"]) == ExitCode.OK
    listed = json.loads(capsys.readouterr().out)
    assert len(listed) == 77
    edit = next(row for row in listed if row["model"] == "blackforestlabs/flux-2-edit")
    assert edit["required"] == ["prompt", "image_urls"] and edit["image_inputs"] == ["image_urls"]
    assert main(["models", "blackforestlabs/flux-2-edit"]) == ExitCode.OK
    shown = capsys.readouterr().out
    assert 'acceleration: string; one of "none", "regular", "high"; default "regular"' in shown
    assert "image_urls (required): array; 1 items at least; 3 items at most" in shown
    assert main(["models", "flux-pro/v1.1-ultr"]) == ExitCode.INVALID_INPUT
    assert "did you mean 'flux-pro/v1.1-ultra'?" in capsys.readouterr().err


def test_the_readmes_table_of_models_is_the_data():
    script = REPO / "scripts" / "models_table.py"
    namespace = runpy.run_path(str(script), run_name="table")
    readme = (REPO / "README.md").read_text()
    assert namespace["table"]() in readme


def test_the_seed_models_keep_their_own_checks(tmp_path, capsys):
    # Their pages list `output_format` (json), which the newer schemas dropped: still accepted,
    # and the data says so through overrides.json.
    assert "output_format" in models()["reve/create-image"].fields
    path = tmp_path / "seed.jsonl"
    path.write_text(json.dumps({"model": "reve/create-image", "prompt": "p", "output_format": "json"}) + "\n")
    assert main(["validate", str(path)]) == ExitCode.OK
    capsys.readouterr()


def test_any_model_takes_defaults_of_its_own(tmp_path, capsys):
    path = tmp_path / "mixed.yaml"
    path.write_text(
        "defaults:\n  prompt: a quiet harbour\n  dall-e-3:\n    quality: hd\n  flux-pro/v1.1:\n    output_format: png\n"
        "jobs:\n  - {id: a, model: flux-pro/v1.1}\n  - {id: b, model: dall-e-3}\n"
    )
    assert main(["validate", str(path), "--show-bodies"]) == ExitCode.OK
    bodies = {line["id"]: line["body"] for line in map(json.loads, capsys.readouterr().out.splitlines())}
    assert bodies["a"] == {"prompt": "a quiet harbour", "output_format": "png", "model": "flux-pro/v1.1"}
    assert bodies["b"] == {"prompt": "a quiet harbour", "quality": "hd", "model": "dall-e-3"}
