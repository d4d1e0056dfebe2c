"""The write-ahead state: transitions (allowed and refused), in-flight jobs, counts, versions."""

from __future__ import annotations

import asyncio
import sqlite3
from decimal import Decimal

import pytest

from batchgen.api.answers import Answer, ImageRef
from batchgen.errors import StorageError
from batchgen.money import Spend
from batchgen.outcome import JobState, Status
from batchgen.store import TRANSITIONS, ErrorInfo, ManifestRecord, OutputFolder, TransitionError
from batchgen.store.sqlite import SqliteState
from batchgen.store.sqlite_schema import SCHEMA_VERSION


async def test_a_job_moves_from_dispatched_to_answered_to_succeeded(tmp_path):
    async with OutputFolder.open(tmp_path) as folder:
        await folder.dispatched("a", "reve/create-image", "bg.a.1.a1", "2026-01-01T00:00:00Z")
        assert await folder.in_flight() == [("a", ["bg.a.1.a1"])]  # sent, no answer: maybe charged

        answer = Answer(request_id="r", tokens_used=5, images=[ImageRef(b64_json="AAAA")])
        await folder.answered("a", answer)
        row = (await folder.rows(["a"]))["a"]
        assert row.state is JobState.ANSWERED and row.answer == answer and await folder.in_flight() == []

        await folder.finish(
            ManifestRecord(job_id="a", model="reve/create-image", status=Status.SUCCEEDED), final=False
        )
        row = (await folder.rows(["a"]))["a"]
        assert row.state is JobState.SUCCEEDED and row.attempts == 1
        assert row.answer is None  # a succeeded job's answer is not read back: nothing uses it
        counts = await folder.counts()
        assert counts.succeeded == 1 and counts.tokens_used == 5
    with sqlite3.connect(tmp_path / ".batchgen" / "state.sqlite3") as raw:
        stored = raw.execute("SELECT json_extract(answer, '$.images'), answer FROM jobs").fetchone()
    assert stored[0] is None and '"request_id":"r"' in stored[1]  # the bytes dropped, the rest kept


async def test_unanswered_requests_go_back_to_pending_and_attempts_add_up(tmp_path):
    async with OutputFolder.open(tmp_path) as folder:
        for attempt in (1, 2):
            await folder.dispatched("a", "reve/create-image", f"bg.a.1.a{attempt}", "t")
            await folder.unanswered("a")
        row = (await folder.rows(["a"]))["a"]
    assert row.state is JobState.PENDING and row.attempts == 2
    assert row.client_request_ids == ["bg.a.1.a1", "bg.a.1.a2"]


async def test_failures_are_counted_final_or_retryable(tmp_path):
    async with OutputFolder.open(tmp_path) as folder:
        error = ErrorInfo(message="m", kind="k")
        for job_id, final in (("a", True), ("b", False)):
            await folder.finish(
                ManifestRecord(job_id=job_id, model="m", status=Status.FAILED, error=error), final=final
            )
        counts = await folder.counts()
    assert (counts.failed_final, counts.failed_retryable) == (1, 1)


async def test_a_transition_the_table_does_not_allow_is_refused_and_changes_nothing(tmp_path):
    # (succeeded -> dispatched is allowed: a changed request or --redo; judge() decides that)
    assert (JobState.SUCCEEDED, JobState.ANSWERED) not in TRANSITIONS  # no answer without a send
    async with OutputFolder.open(tmp_path) as folder:
        await folder.finish(ManifestRecord(job_id="a", model="m", status=Status.FAILED), final=True)
        with pytest.raises(TransitionError, match="from failed to answered"):
            await folder.answered("a", Answer())
        await folder.dispatched("b", "m", "bg.b.1.a1", "t")
        await folder.answered("b", Answer(request_id="r"))
        await folder.finish(ManifestRecord(job_id="b", model="m", status=Status.SUCCEEDED), final=False)
        with pytest.raises(TransitionError, match="from succeeded to answered"):
            await folder.answered("b", Answer(request_id="r2"))
        rows = await folder.rows(["a", "b"])
    assert rows["a"].state is JobState.FAILED and rows["b"].state is JobState.SUCCEEDED
    assert rows["b"].attempts == 1


async def test_concurrent_transitions_share_commits_and_each_is_durable(tmp_path):
    async with OutputFolder.open(tmp_path) as folder:
        await asyncio.gather(*(folder.dispatched(f"j{i}", "m", f"bg.j{i}.a1", "t") for i in range(200)))
    db = SqliteState.open(tmp_path / ".batchgen" / "state.sqlite3", read_only=True)
    try:
        assert len(db.in_flight()) == 200
    finally:
        db.close()


async def test_state_survives_reopening_and_carries_its_schema_version(tmp_path):
    async with OutputFolder.open(tmp_path) as folder:
        await folder.run_started(7)
        await folder.dispatched("a", "m", "id", "t")
    async with OutputFolder.open(tmp_path) as folder:
        assert (await folder.counts()).total == 7
        assert (await folder.rows(["a"]))["a"].state is JobState.DISPATCHED
    path = tmp_path / ".batchgen" / "state.sqlite3"
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_folder_from_before_versioning_opens_and_one_from_a_newer_release_is_refused(tmp_path):
    path = tmp_path / "state.sqlite3"
    SqliteState.open(path).close()
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA user_version=0")  # as today's release wrote it
    SqliteState.open(path).close()
    with sqlite3.connect(path) as raw:
        raw.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(StorageError, match="newer batchgen"):
        SqliteState.open(path)


def test_garbage_in_place_of_the_database_is_a_storage_error(tmp_path):
    path = tmp_path / "state.sqlite3"
    path.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StorageError, match="cannot open the state database"):
        SqliteState.open(path)


async def test_ten_thousand_large_charges_sum_exactly_past_64_bit_units(tmp_path):
    async with OutputFolder.open(tmp_path) as folder:
        for start in range(0, 10_000, 500):
            await asyncio.gather(
                *(
                    folder.dispatched(f"j{i}", "m", f"bg.j{i}.a1", "2026-01-01T00:00:00Z")
                    for i in range(start, start + 500)
                )
            )
            answer = Answer(
                images=[ImageRef(url="https://cdn.test/x.png")],
                usd_spent="0.359",
                credits_used="999999.123456789",
            )
            await asyncio.gather(*(folder.answered(f"j{i}", answer) for i in range(start, start + 500)))
        counts = await folder.counts()
    assert counts.total_spent == Spend(Decimal("3590"), Decimal("9999991234.56789"))


async def test_a_lost_database_rebuilt_from_the_manifest_charges_each_answer_once_on_its_day(tmp_path):
    record = ManifestRecord(
        job_id="j", model="m", status=Status.SUCCEEDED, client_request_ids=["bg.j.a1"], usd_spent="0.04",
        credits_used="2646", finished_at="2026-01-02T03:04:05Z", started_at="2026-01-02T03:04:00Z",
    )  # fmt: skip
    async with OutputFolder.open(tmp_path) as folder:
        await folder.dispatched("j", "m", "bg.j.a1", "2026-01-02T03:04:00Z")
        await folder.answered("j", Answer(usd_spent="0.04", credits_used="2646"))
        await folder.finish(record, final=False)
        await folder.restore_images(record, {})  # a restore re-records the same answer
    (tmp_path / ".batchgen" / "state.sqlite3").unlink()
    async with OutputFolder.open(tmp_path) as folder:
        assert await folder.spent() == Spend(Decimal("0.04"), Decimal("2646"))
        assert await folder.spent(day="2026-01-02") == Spend(Decimal("0.04"), Decimal("2646"))
