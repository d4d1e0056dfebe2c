"""Job files: YAML defaults, JSONL streaming, ids, local images, and errors a person can act on."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from conftest import MALFORMED_JOB_FILES, SAMPLES, write_jsonl, write_yaml

from batchgen.errors import JobFileError
from batchgen.jobfile import iter_jobs, scan_job_file


def problems_of(path: Path) -> list[str]:
    with pytest.raises(JobFileError) as caught:
        scan_job_file(path)
    return [str(p) for p in caught.value.problems]


def test_yaml_defaults_merge_under_each_job(tmp_path):
    path = write_yaml(
        tmp_path / "j.yaml",
        [{"id": "a", "prompt": "one"}, {"id": "b", "prompt": "two", "aspect_ratio": "1:1"}],
        defaults={"model": "reve/create-image", "aspect_ratio": "16:9"},
    )
    jobs = list(iter_jobs(path))
    assert [j.body for j in jobs] == [
        {"model": "reve/create-image", "aspect_ratio": "16:9", "prompt": "one"},
        {"model": "reve/create-image", "aspect_ratio": "1:1", "prompt": "two"},
    ]
    assert [j.line for j in jobs] == [2, 4]  # where each job starts in the file


def test_id_is_dropped_from_the_body_and_nothing_is_added(tmp_path):
    path = write_jsonl(tmp_path / "j.jsonl", [{"id": "x", "model": "reve/create-image", "prompt": "p"}])
    (job,) = iter_jobs(path)
    assert job.id == "x" and job.body == {"model": "reve/create-image", "prompt": "p"}


def test_missing_id_is_a_stable_hash_of_the_request(tmp_path):
    one = write_jsonl(
        tmp_path / "a.jsonl", [{"model": "reve/create-image", "prompt": "p", "aspect_ratio": "1:1"}]
    )
    two = write_yaml(
        tmp_path / "b.yaml", [{"aspect_ratio": "1:1", "prompt": "p"}], {"model": "reve/create-image"}
    )
    other = write_jsonl(tmp_path / "c.jsonl", [{"model": "reve/create-image", "prompt": "q"}])
    (a,), (b,), (c,) = iter_jobs(one), iter_jobs(two), iter_jobs(other)
    assert a.id == b.id != c.id
    assert a.id.startswith("job-")


def test_local_images_become_data_uris(tmp_path):
    (tmp_path / "pics").mkdir()
    png = (SAMPLES / "images" / "t-rex.png").read_bytes()
    jpg = (SAMPLES / "images" / "blue-mug.jpg").read_bytes()
    (tmp_path / "pics" / "a.png").write_bytes(png)
    (tmp_path / "pics" / "b.jpg").write_bytes(jpg)
    path = write_jsonl(
        tmp_path / "j.jsonl",
        [
            {
                "model": "reve/remix-edit-image",
                "prompt": "p",
                "image_urls": ["pics/a.png", "pics/b.jpg", "https://x.test/c.png"],
            }
        ],
    )
    (job,) = iter_jobs(path)
    assert job.body["image_urls"] == [
        "data:image/png;base64," + base64.b64encode(png).decode(),
        "data:image/jpeg;base64," + base64.b64encode(jpg).decode(),
        "https://x.test/c.png",
    ]


def test_jsonl_is_read_lazily(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text('{"model": "reve/create-image", "prompt": "first"}\n{broken\n')
    jobs = iter_jobs(path)
    assert next(jobs).body["prompt"] == "first"  # yielded before the broken line is read
    with pytest.raises(JobFileError):
        next(jobs)


def test_every_problem_is_reported_at_once_with_file_line_job_and_field(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps({"id": "a", "model": "reve/create-image", "promt": "typo"}),
                json.dumps({"id": "b", "model": "reve/create-image", "prompt": "p", "aspect_ratio": "5:4"}),
                json.dumps(
                    {
                        "id": "c",
                        "model": "flux/dev/image-to-image",
                        "prompt": "p",
                        "image_url": "https://x.test/a.png",
                        "guidance_scale": 25,
                    }
                ),
            ]
        )
        + "\n"
    )
    found = problems_of(path)
    assert any(f"{path}:1" in p and "'a'" in p and "did you mean 'prompt'?" in p for p in found)
    assert any(f"{path}:1" in p and "'prompt'" in p and "missing" in p for p in found)
    assert any(f"{path}:2" in p and "aspect_ratio" in p and "'5:4'" in p for p in found)
    assert any(f"{path}:3" in p and "guidance_scale" in p and "25" in p for p in found)


def test_yaml_problems_name_the_line_of_the_field(tmp_path):
    path = tmp_path / "j.yaml"
    path.write_text(
        "jobs:\n  - id: a\n    model: reve/create-image\n    prompt: hi\n    aspect_ratio: wide\n"
    )
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:5, job 'a', field 'aspect_ratio'")


def test_yaml_repeated_key_is_reported_at_the_repeat(tmp_path):
    path = tmp_path / "j.yaml"
    path.write_text("jobs:\n  - model: reve/create-image\n    prompt: a\n    prompt: b\n")
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:4") and "duplicate key (first at line 3)" in problem


def test_unknown_model_suggests_the_nearest(tmp_path):
    path = write_jsonl(tmp_path / "j.jsonl", [{"model": "reve/create-imag", "prompt": "p"}])
    (problem,) = problems_of(path)
    assert "did you mean 'reve/create-image'?" in problem


@pytest.mark.parametrize("name", sorted(MALFORMED_JOB_FILES))
def test_malformed_files_are_each_a_clear_job_file_error(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(MALFORMED_JOB_FILES[name])
    found = problems_of(path)
    assert found and all(p.startswith(str(path)) for p in found)


def test_problem_list_is_capped_with_a_count_of_the_rest(tmp_path):
    path = write_jsonl(tmp_path / "j.jsonl", [{"model": "nope"}] * 30)
    with pytest.raises(JobFileError) as caught:
        scan_job_file(path)
    assert len(caught.value.problems) == 30
    assert "... and 10 more problems" in str(caught.value)


def test_samples_are_valid():
    assert scan_job_file(SAMPLES / "quickstart.yaml").count == 5
    assert scan_job_file(SAMPLES / "examples.jsonl").count == 4
