"""Job files: YAML defaults, JSONL streaming, ids, local images, and errors a person can act on."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from conftest import MALFORMED_JOB_FILES, SAMPLES, write_jsonl, write_yaml

from batchgen.errors import JobFileError
from batchgen.jobs.load import iter_jobs, scan_job_file


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


# -- one message per problem, in the user's words -------------------------------------------------


def test_a_duplicate_id_is_reported_even_when_its_first_copy_is_invalid(tmp_path):
    path = write_jsonl(
        tmp_path / "j.jsonl",
        [
            {"id": "x", "model": "reve/create-image", "prompt": 5},
            {"id": "x", "model": "reve/create-image", "prompt": "ok"},
        ],
    )
    found = problems_of(path)
    assert any(p.endswith("job 'x', field 'id': duplicate id (first at line 1)") for p in found)
    assert any("field 'prompt'" in p for p in found)


def test_a_missing_local_image_is_reported_once_with_the_path_as_written(tmp_path):
    path = write_jsonl(
        tmp_path / "j.jsonl",
        [{"id": "r", "model": "reve/remix-edit-image", "prompt": "p", "image_urls": ["gone.png"]}],
    )
    assert problems_of(path) == [
        f"{path}:1, job 'r', field 'image_urls[0]': local image 'gone.png' cannot be read: No such file or directory"
    ]


def test_a_file_that_is_not_an_image_says_so_without_python_internals(tmp_path):
    (tmp_path / "notes.png").write_text("shopping list")
    path = write_jsonl(
        tmp_path / "j.jsonl",
        [{"id": "e", "model": "reve/edit-image", "prompt": "p", "image_url": "notes.png"}],
    )
    (message,) = problems_of(path)
    assert message.endswith(
        "field 'image_url': local file 'notes.png' is not a usable image: "
        "not an image in a format Pillow reads (PNG, JPEG, WebP, GIF...)"
    )
    assert "BytesIO" not in message and "0x" not in message


def test_image_url_errors_show_the_local_path_not_the_data_uri(tmp_path):
    png = (SAMPLES / "images" / "t-rex.png").read_bytes()
    for name in "abcdefg":
        (tmp_path / f"{name}.png").write_bytes(png)
    paths = [f"{name}.png" for name in "abcdefg"]  # more than remix takes
    path = write_jsonl(
        tmp_path / "j.jsonl",
        [{"id": "r", "model": "reve/remix-edit-image", "prompt": "p", "image_urls": paths}],
    )
    (message,) = problems_of(path)
    assert "field 'image_urls'" in message and "'a.png'" in message
    assert "data:" not in message


def test_a_json_file_is_read_as_a_list_a_document_or_jsonl_by_content(tmp_path):
    job = {"id": "j", "model": "reve/create-image", "prompt": "p"}
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps([job, {**job, "id": "k"}], indent=1))
    document = tmp_path / "doc.json"
    document.write_text(json.dumps({"defaults": {"aspect_ratio": "16:9"}, "jobs": [job]}, indent=1))
    lines = tmp_path / "lines.json"
    lines.write_text(json.dumps(job) + "\n" + json.dumps({**job, "id": "k"}) + "\n")
    assert [j.id for j in iter_jobs(listed)] == ["j", "k"]
    assert [j.body for j in iter_jobs(document)] == [
        {**{k: v for k, v in job.items() if k != "id"}, "aspect_ratio": "16:9"}
    ]
    assert [j.id for j in iter_jobs(lines)] == ["j", "k"]
    document.write_text('{\n "jobs": [\n  {"id": "j", "model": "reve/create-image", "prompt": 3}\n ]\n}\n')
    assert problems_of(document) == [
        f"{document}:3, job 'j', field 'prompt': Input should be a valid string (got 3)"
    ]


# -- defaults for files that mix models ------------------------------------------------------------

MIXED_DEFAULTS = {
    "convert_base64_to_url": False,  # common: reve's three models take it, flux has no such field
    "reve/create-image": {"aspect_ratio": "16:9"},
    "flux/dev/image-to-image": {"num_images": 2, "strength": 0.5},
}


def test_per_model_defaults_serve_a_file_mixing_every_model(tmp_path):
    ref = "https://example.com/ref.png"
    path = write_yaml(
        tmp_path / "j.yaml",
        [
            {"id": "c", "model": "reve/create-image", "prompt": "a"},
            {"id": "e", "model": "reve/edit-image", "prompt": "b", "image_url": ref},
            {"id": "r", "model": "reve/remix-edit-image", "prompt": "c", "image_urls": [ref]},
            {"id": "f", "model": "flux/dev/image-to-image", "prompt": "d", "image_url": ref, "strength": 0.9},
        ],
        defaults={k: v for k, v in MIXED_DEFAULTS.items() if k != "convert_base64_to_url"},
    )
    bodies = {job.id: job.body for job in iter_jobs(path)}
    assert bodies == {
        "c": {"model": "reve/create-image", "prompt": "a", "aspect_ratio": "16:9"},
        "e": {"model": "reve/edit-image", "prompt": "b", "image_url": ref},
        "r": {"model": "reve/remix-edit-image", "prompt": "c", "image_urls": [ref]},
        "f": {
            "model": "flux/dev/image-to-image",
            "prompt": "d",
            "image_url": ref,
            "num_images": 2,
            "strength": 0.9,
        },
    }


def test_a_common_default_a_model_refuses_is_one_problem_naming_the_default(tmp_path):
    ref = "https://example.com/ref.png"
    jobs = [
        {"id": f"f{i}", "model": "flux/dev/image-to-image", "prompt": "d", "image_url": ref} for i in range(5)
    ]
    path = write_yaml(
        tmp_path / "j.yaml",
        [{"id": "c", "model": "reve/create-image", "prompt": "a"}, *jobs],
        defaults=MIXED_DEFAULTS,
    )
    line = path.read_text().splitlines().index("  convert_base64_to_url: false") + 1
    assert problems_of(path) == [
        f"{path}:{line}, field 'defaults.convert_base64_to_url': flux/dev/image-to-image has no field"
        " 'convert_base64_to_url', and job 'f0' is one of its jobs; give the default under the names"
        " of the models that take it (`defaults:` -> `reve/create-image:`)"
    ]


def test_a_misspelt_model_under_defaults_is_named(tmp_path):
    path = write_yaml(
        tmp_path / "j.yaml",
        [{"id": "c", "model": "reve/create-image", "prompt": "a"}],
        defaults={"reve/create-imag": {}},
    )
    (message,) = problems_of(path)
    assert (
        "field 'defaults.reve/create-imag': unknown model 'reve/create-imag'; did you mean 'reve/create-image'?"
        in message
    )


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ("plain-id_1", None),
        ("a" * 200, None),
        ("déjà vu", None),
        (7, None),
        (True, "must be a string or an integer, got True"),
        ("", "must not be empty"),
        ("  \u3000", "must not be empty"),
        ("a" * 201, "is 201 characters long; the limit is 200"),
        ("tab\there", "must not contain control characters"),
        ("c1\x85", "must not contain control characters"),
    ],
)
def test_an_id_is_a_short_printable_string_or_an_integer(tmp_path, given, problem):
    path = write_jsonl(tmp_path / "j.jsonl", [{"id": given, "model": "reve/create-image", "prompt": "p"}])
    if problem is None:
        assert scan_job_file(path).count == 1
        (job,) = iter_jobs(path)
        assert job.id == str(given)
    else:
        (message,) = problems_of(path)
        assert message.endswith(f"field 'id': {problem}"), message
