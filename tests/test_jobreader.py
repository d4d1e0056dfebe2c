"""Reading job files into raw entries: lines, repeated keys, and text that is not a job file."""

from __future__ import annotations

from batchgen.errors import JobFileProblem
from batchgen.jobreader import jsonl_entries, show_value, unknown_name, yaml_entries


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
