"""The write-ahead state database: transitions, in-flight jobs, counts."""

from __future__ import annotations

from batchgen.manifest import ErrorInfo, ManifestRecord, Status
from batchgen.responses import Answer, ImageRef
from batchgen.state import JobState, StateDB


async def test_a_job_moves_from_dispatched_to_answered_to_succeeded(tmp_path):
    db = await StateDB.open(tmp_path / "s.sqlite3")
    try:
        await db.dispatched("a", "reve/create-image", "bg.a.1.a1", "2026-01-01T00:00:00Z")
        assert await db.in_flight() == [("a", ["bg.a.1.a1"])]  # sent, no answer: maybe charged

        answer = Answer(request_id="r", tokens_used=5, images=[ImageRef(b64_json="AAAA")])
        await db.answered("a", answer)
        row = await db.get("a")
        assert row.state is JobState.ANSWERED and row.answer == answer and await db.in_flight() == []

        await db.finish(
            ManifestRecord(job_id="a", model="reve/create-image", status=Status.SUCCEEDED), final=False
        )
        row = await db.get("a")
        assert (
            row.state is JobState.SUCCEEDED and row.attempts == 1 and row.answer.images == []
        )  # bytes dropped
        assert (await db.counts()).succeeded == 1 and (await db.counts()).tokens_used == 5
    finally:
        await db.close()


async def test_unanswered_requests_go_back_to_pending_and_attempts_add_up(tmp_path):
    db = await StateDB.open(tmp_path / "s.sqlite3")
    try:
        for attempt in (1, 2):
            await db.dispatched("a", "reve/create-image", f"bg.a.1.a{attempt}", "t")
            await db.unanswered("a")
        row = await db.get("a")
        assert row.state is JobState.PENDING and row.attempts == 2
        assert row.client_request_ids == ["bg.a.1.a1", "bg.a.1.a2"]
    finally:
        await db.close()


async def test_failures_are_counted_final_or_retryable(tmp_path):
    db = await StateDB.open(tmp_path / "s.sqlite3")
    try:
        error = ErrorInfo(message="m", kind="k")
        for job_id, final in (("a", True), ("b", False)):
            record = ManifestRecord(job_id=job_id, model="m", status=Status.FAILED, error=error)
            await db.finish(record, final=final)
        counts = await db.counts()
        assert (counts.failed_final, counts.failed_retryable) == (1, 1)
        assert await db.count_records() == 2
        assert [r.job_id async for r in db.records_from(1)] == ["b"]
    finally:
        await db.close()


async def test_state_survives_reopening(tmp_path):
    path = tmp_path / "s.sqlite3"
    db = await StateDB.open(path)
    await db.set_meta("total_jobs", "7")
    await db.dispatched("a", "m", "id", "t")
    await db.close()
    db = await StateDB.open(path)
    try:
        assert await db.get_meta("total_jobs") == "7" and (await db.get("a")).state is JobState.DISPATCHED
    finally:
        await db.close()
