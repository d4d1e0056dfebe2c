"""Reading job files into raw entries: lines, repeated keys, and text that is not a job file."""

from __future__ import annotations

from batchgen.errors import JobFileProblem
from batchgen.jobs.reader import jsonl_entries, show_value, unknown_name, yaml_entries


def test_yaml_entries_keep_each_keys_line(tmp_path):
    path = tmp_path / "j.yaml"
    path.write_text("defaults:\n  model: reve/create-image\njobs:\n  - id: a\n    prompt: hi\n")
    jobs, defaults = yaml_entries(path)
    (job,) = jobs
    assert defaults.raw == {"model": "reve/create-image"} and defaults.key_lines == {"model": 2}
    assert (
        job.raw == {"id": "a", "prompt": "hi"} and job.key_lines == {"id": 4, "prompt": 5} and job.line == 4
    )


def test_jsonl_entries_skip_blank_lines_and_number_the_rest(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text('{"prompt": "a"}\n\n{"prompt": "b"}\nnot json\n')
    entries = list(jsonl_entries(path))
    assert [e.line for e in entries] == [1, 3, 4]
    assert isinstance(entries[2], JobFileProblem) and entries[2].message.startswith("invalid JSON")


def test_unknown_names_get_the_closest_suggestion_or_the_list():
    assert unknown_name("field", "promt", ["prompt", "seed"]).endswith("did you mean 'prompt'?")
    assert unknown_name("field", "zzz", ["prompt", "seed"]).endswith("expected one of: prompt, seed")


def test_values_are_shown_short():
    assert len(show_value("x" * 500)) == 80


def test_yaml_scalars_read_as_people_write_them(tmp_path):
    path = tmp_path / "jobs.yaml"
    path.write_text(
        "defaults:\n  model: reve/create-image\n  aspect_ratio: 16:9\n"
        "jobs:\n  - prompt: on\n    convert_base64_to_url: true\n  - prompt: 1:1\n    id: 0o17\n"
    )
    (first, second), defaults = yaml_entries(path)
    assert defaults.raw["aspect_ratio"] == "16:9"  # not YAML 1.1's base-60 number 969
    assert first.raw == {"prompt": "on", "convert_base64_to_url": True}  # "on" is not a boolean
    assert second.raw == {"prompt": "1:1", "id": 15}
