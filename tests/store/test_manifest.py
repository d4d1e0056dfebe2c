"""The manifest file: durable appends, torn-tail repair, refusing a planted symlink."""

from __future__ import annotations

import pytest

from batchgen.errors import StorageError
from batchgen.outcome import Status
from batchgen.store.manifest import ManifestFile, ManifestRecord


def record(job_id: str) -> ManifestRecord:
    return ManifestRecord(job_id=job_id, model="reve/create-image", status=Status.SUCCEEDED)


def test_append_then_repair_counts_complete_lines(tmp_path):
    manifest = ManifestFile(tmp_path / "manifest.jsonl")
    manifest.append_lines([record("a").model_dump_json() + "\n"])
    manifest.append_lines([record("b").model_dump_json() + "\n"])
    with (tmp_path / "manifest.jsonl").open("a") as torn:
        torn.write('{"job_id": "c", "mod')  # a crash mid-append

    assert manifest.repair(known=2) == (2, [])
    assert (tmp_path / "manifest.jsonl").read_text().count("\n") == 2


def test_records_beyond_what_the_database_knows_are_returned_for_rebuilding(tmp_path):
    path = tmp_path / "manifest.jsonl"
    path.write_text(record("a").model_dump_json() + "\n" + record("b").model_dump_json() + "\n")
    lines, extra = ManifestFile(path).repair(known=1)
    assert lines == 2 and [r.job_id for r in extra] == ["b"]


def test_a_planted_symlink_is_refused(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("")
    (tmp_path / "manifest.jsonl").symlink_to(target)
    with pytest.raises(StorageError):
        ManifestFile(tmp_path / "manifest.jsonl").repair(known=0)


def test_junk_ending_in_a_newline_at_the_tail_is_cut_too(tmp_path):
    path = tmp_path / "manifest.jsonl"
    path.write_text(record("a").model_dump_json() + "\n" + '{"job_id": "b", "mo\n')
    assert ManifestFile(path).repair(known=2) == (1, [])
    assert path.read_text() == record("a").model_dump_json() + "\n"
