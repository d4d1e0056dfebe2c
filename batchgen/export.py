"""``batchgen export``: an output's succeeded images and their records as a dataset ML tools load.

* ``webdataset``: tar shards ``shard-000000.tar``, ... (WebDataset's layout: one sample per
  image, its files ``<key>.<ext>`` (the image bytes) and ``<key>.json``, ``key`` the image's name
  without dots). The JSON holds fields of one type in every sample (``job_id``, ``model``,
  ``image_index``, ``image_path``, ``image_sha256``, ``width``, ``height``, ``content_type``) and
  ``record``, the whole manifest record as JSON text: a loader that infers types from the first
  samples (``datasets``) would fail on a field that is null there and a number later. Load with
  ``webdataset.WebDataset(...)`` or ``datasets.load_dataset("webdataset", data_files=...)``.
* ``parquet``: ``part-000000.parquet``, ...: one row per image, the image bytes in ``image``
  and every manifest column (nested ones as JSON text). Load with
  ``datasets.load_dataset("parquet", data_files=...)`` or pyarrow / pandas / polars.

The rows are the current record of every job whose record says succeeded (the last record of
each job in the manifest, as ``batchgen manifest`` prints them), in manifest order, one per
image. Shards hold ``shard_size`` rows each, so the same output exports to the same shards: a
shard already at the target with the same bytes is not written again, and shards an earlier
export left beyond the last one are removed. Memory: each job's last line number, one shard's
records, one image and one Parquet row group; shards are built in a local temporary folder,
then put (streamed).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from batchgen.errors import StorageError, UsageError
from batchgen.outcome import Status
from batchgen.store import ManifestRecord, OutputBackend

__all__ = ["FORMATS", "Exported", "export_dataset"]

FORMATS = ("webdataset", "parquet")
ROW_GROUP = 64  # images per Parquet row group: what is held in memory at once


@dataclass(frozen=True, slots=True)
class Exported:
    """What an export did: ``rows`` (images) in ``shards``, of which ``written`` were new or
    changed (the others were already at the target, byte for byte), and ``removed`` shards an
    earlier export left beyond the last one (a loader globbing the folder would read them)."""

    rows: int
    shards: int
    written: int
    removed: int = 0  # shards of an earlier export beyond this one's last (fewer rows, other size)


@dataclass(frozen=True, slots=True)
class _Row:
    record: ManifestRecord
    index: int  # which of the record's images


def export_dataset(
    output: OutputBackend,
    target: Any,
    fmt: Literal["webdataset", "parquet"],
    *,
    shard_size: int = 1000,
) -> Exported:
    """Export ``output``'s succeeded images into ``target`` (an obstore store) as ``fmt``.

    Raises :class:`~batchgen.errors.StorageError` when an image is missing from the output or a
    shard cannot be put, :class:`~batchgen.errors.UsageError` for Parquet without pyarrow, and
    ``ValueError`` for an unknown ``fmt``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")
    write = _write_tar if fmt == "webdataset" else _write_parquet
    suffix = "tar" if fmt == "webdataset" else "parquet"
    prefix = "shard" if fmt == "webdataset" else "part"
    rows = written = shards = 0
    with tempfile.TemporaryDirectory(prefix="batchgen-export-") as scratch:
        for shard in _shards(output, shard_size):
            name = f"{prefix}-{shards:06d}.{suffix}"
            path = Path(scratch) / name
            write(output, shard, path)
            rows, shards = rows + len(shard), shards + 1
            if _put_if_changed(target, name, path):
                written += 1
            path.unlink()
    removed = _remove_beyond(target, prefix, suffix, shards)
    return Exported(rows, shards, written, removed)


def _shards(output: OutputBackend, size: int) -> Iterator[list[_Row]]:
    """The rows, ``size`` at a time: the current record of each job, in manifest order, where
    it says succeeded, one row per image. Two passes over the manifest, so that only each job's
    last line number is held, not its records."""
    last: dict[str, int] = {}
    for number, line in enumerate(output.manifest_lines()):
        if line.endswith(b"\n"):  # (a line a live run is still writing is left out)
            last[_job_id(line)] = number
    shard: list[_Row] = []
    for number, line in enumerate(output.manifest_lines()):
        if not line.endswith(b"\n") or last.get(_job_id(line)) != number:
            continue
        record = ManifestRecord.model_validate_json(line)
        if record.status != Status.SUCCEEDED:
            continue
        for index in range(len(record.images)):
            shard.append(_Row(record, index))
            if len(shard) == size:
                yield shard
                shard = []
    if shard:
        yield shard


def _job_id(line: bytes) -> str:
    return str(json.loads(line)["job_id"])


def _image(output: OutputBackend, row: _Row) -> bytes:
    path = row.record.images[row.index].path
    data = output.read_bytes(path)
    if data is None:
        raise StorageError(
            f"{path} of job {row.record.job_id} is missing: run `batchgen verify`, then the run again"
        )
    return data


def _key(row: _Row) -> str:
    # WebDataset splits a file name at its first dot: the key itself has none
    return PurePosixPath(row.record.images[row.index].path).stem.replace(".", "_")


def _columns(row: _Row) -> dict[str, Any]:
    """The row's manifest columns: scalars as they are, nested values as JSON text."""
    image = row.record.images[row.index]
    flat: dict[str, Any] = {}
    for name, value in row.record.model_dump(mode="json").items():
        flat[name] = json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else value
    if isinstance(flat.get("seed"), int) and not -(2**63) <= flat["seed"] < 2**63:
        flat["seed"] = None  # (Parquet's int64 cannot hold it: null here; the manifest keeps it)
    flat.update(
        image_index=row.index,
        image_path=image.path,
        image_sha256=image.sha256,
        image_bytes=image.bytes,
        width=image.width,
        height=image.height,
        content_type=image.content_type,
    )
    return flat


def _write_tar(output: OutputBackend, rows: list[_Row], path: Path) -> None:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for row in rows:
            key = _key(row)
            extension = PurePosixPath(row.record.images[row.index].path).suffix.lstrip(".")
            image = row.record.images[row.index]
            document = {  # type-stable fields (a loader infers types from the first samples)
                "job_id": row.record.job_id,
                "model": row.record.model,
                "image_index": row.index,
                "image_path": image.path,
                "image_sha256": image.sha256,
                "width": image.width,
                "height": image.height,
                "content_type": image.content_type,
                "record": row.record.model_dump_json(),  # the whole manifest record, as JSON text
            }
            for name, data in (
                (f"{key}.{extension}", _image(output, row)),
                (f"{key}.json", json.dumps(document, ensure_ascii=False, sort_keys=True).encode()),
            ):
                info = tarfile.TarInfo(name)  # (mtime 0, no owner: the same rows, the same bytes)
                info.size = len(data)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))


def _write_parquet(output: OutputBackend, rows: list[_Row], path: Path) -> None:
    try:
        import pyarrow as pa  # noqa: PLC0415 - only a Parquet export loads pyarrow
        import pyarrow.parquet as pq  # noqa: PLC0415
    except ImportError as exc:
        raise UsageError("--format parquet needs pyarrow: pip install 'batchgen[export]'") from exc

    columns = list(_columns(rows[0])) if rows else []
    schema = pa.schema(
        [pa.field("image", pa.binary())] + [pa.field(name, _arrow_type(pa, name)) for name in columns]
    )
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, len(rows), ROW_GROUP):
            group = rows[start : start + ROW_GROUP]
            flat = [_columns(row) for row in group]
            table = {"image": [_image(output, row) for row in group]}
            table.update({name: [f.get(name) for f in flat] for name in columns})
            writer.write_table(pa.Table.from_pydict(table, schema=schema))


def _arrow_type(pa: Any, name: str) -> Any:
    """Each manifest column's Arrow type (fixed, so every shard has the same schema)."""
    if name in ("image_index", "image_bytes", "width", "height", "attempts", "seed"):
        return pa.int64()
    if name == "content_violation":
        return pa.bool_()
    if name == "tokens_used":
        return pa.float64()
    return pa.string()


def _put_if_changed(target: Any, name: str, path: Path) -> bool:
    """Put the shard unless the target already holds these bytes (compared by SHA-256, both
    read in chunks); True when it was put."""
    import obstore  # noqa: PLC0415

    with path.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    existing: Any = hashlib.sha256()
    try:
        for chunk in obstore.get(target, name):
            existing.update(chunk)
    except FileNotFoundError:
        existing = None
    except Exception as exc:
        raise StorageError(f"cannot read {name} at the export target: {exc}") from exc
    if existing is not None and existing.hexdigest() == digest:
        return False
    try:
        obstore.put(target, name, path)
    except Exception as exc:
        raise StorageError(f"cannot put {name} at the export target: {exc}") from exc
    return True


def _remove_beyond(target: Any, prefix: str, suffix: str, count: int) -> int:
    """Delete ``<prefix>-<n>.<suffix>`` shards numbered ``count`` and up; how many there were."""
    import obstore  # noqa: PLC0415

    pattern = re.compile(rf"{prefix}-(\d{{6}})\.{suffix}")
    try:
        names = [entry["path"] for entry in obstore.list_with_delimiter(target)["objects"]]
        stale = [n for n in names if (m := pattern.fullmatch(n)) and int(m.group(1)) >= count]
        for name in stale:
            obstore.delete(target, name)
    except Exception as exc:
        raise StorageError(f"cannot remove the shards of an earlier export at the target: {exc}") from exc
    return len(stale)
