"""``batchgen export``: the succeeded images and their records as WebDataset shards and Parquet
files, loaded offline by ``webdataset`` and Hugging Face ``datasets`` as users load them."""

from __future__ import annotations

import hashlib
import json

import pytest
from conftest import create_jobs, run_cli, write_jsonl

from batchgen.simulator import SIMULATOR_KEY


@pytest.fixture
def exported_run(s3, make_simulator, tmp_path):
    """A run of 7 jobs into S3 (two images for one of them): 8 images."""
    sim = make_simulator()
    jobs = [
        *create_jobs(5),
        {
            "id": "two",
            "model": "flux/dev/image-to-image",
            "prompt": "p",
            "image_url": f"{sim.url}/cdn/64x64-000000000001.png",
            "num_images": 2,
        },
        {"id": "longest", "model": "reve/create-image", "prompt": "x" * 2560},
    ]
    job_file = write_jsonl(tmp_path / "jobs.jsonl", jobs)
    url = s3.url("exported")
    done = run_cli(
        "run",
        str(job_file),
        "--out",
        url,
        "--base-url",
        sim.url,
        "--no-progress",
        key=SIMULATOR_KEY,
        env=s3.env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = run_cli("manifest", url, key="", env=s3.env).stdout
    records = [json.loads(line) for line in manifest.splitlines()]
    return s3, url, records


def export(s3, url: str, fmt: str, to: str, *extra: str) -> str:
    done = run_cli("export", url, "--format", fmt, "--to", to, *extra, key="", env=s3.env)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


# webdataset leaves its shard files for the garbage collector to close
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_webdataset_shards_load_in_webdataset_and_datasets(exported_run, tmp_path, monkeypatch):
    s3, url, records = exported_run
    images = {
        i["sha256"]: (r["job_id"], i) for r in records if r["status"] == "succeeded" for i in r["images"]
    }
    target = tmp_path / "wds"
    said = export(s3, url, "webdataset", str(target), "--shard-size", "3")
    assert said.startswith("8 images in 3 webdataset shard(s)") and "3 written" in said

    import webdataset  # noqa: PLC0415

    shards = sorted(str(p) for p in target.glob("shard-*.tar"))
    samples = list(webdataset.WebDataset(shards, shardshuffle=False))
    assert len(samples) == len(images) == 8
    for sample in samples:
        (image_name,) = [k for k in sample if k.endswith("png")]
        document = json.loads(sample["json"])
        job_id, image = images[hashlib.sha256(sample[image_name]).hexdigest()]
        assert document["job_id"] == job_id and document["image_sha256"] == image["sha256"]
        assert json.loads(document["record"])["images"][document["image_index"]] == image

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    from datasets import load_dataset  # noqa: PLC0415

    loaded = load_dataset(
        "webdataset", data_files={"train": shards}, split="train", cache_dir=str(tmp_path / "cache")
    )
    assert loaded.num_rows == len(images)
    assert {row["json"]["job_id"] for row in loaded} == {job for job, _ in images.values()}

    again = export(s3, url, "webdataset", str(target), "--shard-size", "3")
    assert "0 written, 3 already there" in again
    fewer = export(s3, url, "webdataset", str(target), "--shard-size", "8")  # (a loader globs the folder)
    assert "1 written" in fewer and "2 shard(s) of an earlier export removed" in fewer
    assert sorted(p.name for p in target.iterdir()) == ["shard-000000.tar"]


def test_parquet_files_into_the_bucket_load_in_datasets_with_every_manifest_column(
    exported_run, tmp_path, monkeypatch
):
    s3, url, records = exported_run
    succeeded = [r for r in records if r["status"] == "succeeded"]
    said = export(s3, url, "parquet", s3.url("datasets/pq"))
    assert "1 written" in said
    local = tmp_path / "pq"
    local.mkdir()
    for key in s3.objects("datasets/pq/"):
        (local / key.rsplit("/", 1)[-1]).write_bytes(s3.read(key))

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    from datasets import load_dataset  # noqa: PLC0415

    loaded = load_dataset(
        "parquet", data_files=str(local / "*.parquet"), split="train", cache_dir=str(tmp_path / "cache")
    )
    assert loaded.num_rows == sum(len(r["images"]) for r in succeeded) == 8
    assert set(records[0]) - {"images"} <= set(loaded.column_names)
    for row in loaded:
        assert hashlib.sha256(row["image"]).hexdigest() == row["image_sha256"]
    assert sorted(loaded["image_index"]) == [0, 0, 0, 0, 0, 0, 0, 1]
    assert "0 written" in export(s3, url, "parquet", s3.url("datasets/pq"))
