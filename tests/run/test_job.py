"""One job through resume states left by a crash: what is sent again and what is not."""

from __future__ import annotations

import asyncio

import pytest
from conftest import fast_settings

from batchgen.api.answers import Answer, ImageRef
from batchgen.api.client import ApiClient, open_session
from batchgen.gates import Gates
from batchgen.gates.learned import LearnedLimit
from batchgen.gates.quota import RetryQuota
from batchgen.jobs.load import Job
from batchgen.outcome import Outcome
from batchgen.run.control import RunControl
from batchgen.run.job import JobRun
from batchgen.run.retry import Place, RetryPolicy
from batchgen.run.selection import judge
from batchgen.settings import Selection
from batchgen.store import OutputFolder

JOB = Job("trex", {"model": "reve/create-image", "prompt": "a T-rex"}, line=1)


@pytest.fixture
def control() -> RunControl:
    """Shared run machinery with no backoff delay."""
    quota = RetryQuota()
    return RunControl(
        generation_gates=Gates(quota, LearnedLimit()),
        download_gates=Gates(quota),
        policy=RetryPolicy(base=0.0),
        places=asyncio.Semaphore(4),
    )


async def run_job(simulator, store: OutputFolder, control: RunControl) -> Outcome:
    """Judge JOB from its durable state, then carry it through one attempt if it has work left."""
    settings = fast_settings(simulator.url)
    row = (await store.rows([JOB.id])).get(JOB.id)
    verdict = judge(row, JOB, Selection())
    if verdict.skip is not None:
        return verdict.skip
    async with open_session(settings) as session:
        place = Place(control.places)
        attempt = JobRun(JOB, row, place, control, store, ApiClient(session, settings), fresh=verdict.fresh)
        return await attempt.run()


async def test_a_recorded_answer_is_fetched_again_never_generated(simulator, control, tmp_path):
    async with OutputFolder.open(tmp_path) as store:
        await store.dispatched(JOB.id, JOB.model, "bg.trex.x.a1", "t")
        url = f"{simulator.url}/cdn/40x30-00aa.png"
        await store.answered(
            JOB.id, Answer(request_id="rsid-1", tokens_used=126000, images=[ImageRef(url=url)])
        )

        outcome = await run_job(simulator, store, control)

        assert outcome is Outcome.SUCCEEDED
        assert simulator.state.posts == 0 and simulator.state.cdn_gets == 1
        assert (await store.rows([JOB.id]))[JOB.id].state == "succeeded"


async def test_a_job_left_in_flight_is_sent_again_with_the_next_attempt_number(simulator, control, tmp_path):
    async with OutputFolder.open(tmp_path) as store:
        await store.dispatched(JOB.id, JOB.model, "bg.trex.x.a1", "t")  # then the process died

        outcome = await run_job(simulator, store, control)

        assert outcome is Outcome.SUCCEEDED and simulator.state.posts == 1
        row = (await store.rows([JOB.id]))[JOB.id]
        assert row.attempts == 2 and row.client_request_ids[0] == "bg.trex.x.a1"
        assert simulator.state.generated[0][0] == row.client_request_ids[1]


async def test_a_succeeded_job_is_not_touched(simulator, control, tmp_path):
    async with OutputFolder.open(tmp_path) as store:
        first = await run_job(simulator, store, control)
        again = await run_job(simulator, store, control)
    assert (first, again) == (Outcome.SUCCEEDED, Outcome.ALREADY_DONE)
    assert simulator.state.posts == 1


async def test_a_stopped_run_leaves_the_job_untouched(simulator, control, tmp_path):
    control.stop()
    async with OutputFolder.open(tmp_path) as store:
        outcome = await run_job(simulator, store, control)
        assert outcome is Outcome.NOT_REACHED and await store.rows([JOB.id]) == {}
    assert simulator.state.posts == 0
