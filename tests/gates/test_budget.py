"""The spend budget: a gate that sends nothing that could pass ``--max-usd`` / ``--max-credits``."""

from __future__ import annotations

import asyncio
from decimal import Decimal as D

import pytest
from conftest import create_jobs, manifest, write_jsonl

from batchgen.cli import ExitCode, main
from batchgen.errors import BudgetReached
from batchgen.gates import Send
from batchgen.gates.budget import Budget, RequestCap
from batchgen.money import Spend
from batchgen.simulator import SIMULATOR_KEY

MODEL = "reve/create-image"


async def test_a_model_with_no_known_cost_is_sent_one_request_at_a_time():
    budget = Budget(max_usd=D("1.0"), max_credits=None, known={})
    first, second = Send(None, model=MODEL), Send(None, model=MODEL)
    await budget.enter(first)
    waiting = asyncio.create_task(budget.enter(second))
    await asyncio.sleep(0)
    assert not waiting.done()  # the first request's cost is not known yet
    first.cost = Spend(D("0.25"), D("100"))
    budget.settle(first, None)
    await asyncio.wait_for(waiting, timeout=5)
    assert second.reserved == Spend(D("0.25"), D("100")) and budget.spent == Spend(D("0.25"), D("100"))


async def test_a_request_that_cannot_fit_waits_for_those_in_flight_then_stops_the_run():
    budget = Budget(max_usd=D("1.0"), max_credits=None, known={MODEL: Spend(D("0.4"), D("0"))})
    sends = [Send(None, model=MODEL) for _ in range(3)]
    await budget.enter(sends[0])
    await budget.enter(sends[1])  # 0.8 set aside
    third = asyncio.create_task(budget.enter(sends[2]))
    await asyncio.sleep(0)
    assert not third.done()  # 1.2 would pass 1.0: wait for what is in flight
    sends[0].cost = Spend(D("0.1"), D("0"))  # cheaper than feared: room for the third
    budget.settle(sends[0], None)
    await asyncio.wait_for(third, timeout=5)
    budget.settle(sends[1], None)  # failed requests are not billed: no cost
    sends[2].cost = Spend(D("0.4"), D("0"))
    budget.settle(sends[2], None)
    assert budget.spent == Spend(D("0.5"), D("0"))
    budget.spent = Spend(D("0.9"), D("0"))
    with pytest.raises(BudgetReached, match=r"spent \$0.90 of the \$1.00 budget"):
        await budget.enter(Send(None, model=MODEL))


def test_a_run_stops_at_its_budget_and_a_larger_one_finishes_without_paying_twice(
    simulator, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("AIMLAPI_KEY", SIMULATOR_KEY)
    job_file = write_jsonl(tmp_path / "j.jsonl", create_jobs(100))
    out = tmp_path / "o"
    args = ["run", str(job_file), "--out", str(out), "--base-url", simulator.url, "--concurrency", "8"]
    price = 0.04  # the simulator's x-aimlapi-usd-spent for reve/create-image

    assert main([*args, "--max-usd", str(40 * price)]) == ExitCode.RESUMABLE
    err = capsys.readouterr().err
    assert "stopped (budget): spend budget reached: spent $1.60 of the $1.60 budget of this run" in err
    paid = simulator.state.generations
    assert paid * price <= 40 * price + 8 * price + 1e-9  # at most the requests in flight beyond it
    assert len(manifest(out)) == paid == 40

    assert main([*args, "--max-usd", "100"]) == ExitCode.OK
    assert simulator.state.generations == 100  # the rest, and no job paid for twice
    assert sorted(r["job_id"] for r in manifest(out)) == sorted(f"job-{i}" for i in range(100))
    assert "in this folder, all runs: $4.00 / 264600 credits" in capsys.readouterr().err


async def test_a_request_cap_lets_n_requests_through_then_refuses():
    cap = RequestCap(2)
    await cap.enter(Send(None, model=MODEL))
    await cap.enter(Send(None, model=MODEL))
    with pytest.raises(BudgetReached, match="--max-requests 2 reached: 2 generation requests sent"):
        await cap.enter(Send(None, model=MODEL))


def test_max_requests_stops_a_run_after_n_posts_and_a_resume_sends_the_rest(
    simulator, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("AIMLAPI_KEY", SIMULATOR_KEY)
    job_file = write_jsonl(tmp_path / "j.jsonl", create_jobs(5))
    args = [
        "run",
        str(job_file),
        "--out",
        str(tmp_path / "o"),
        "--base-url",
        simulator.url,
        "--concurrency",
        "1",
    ]
    assert main([*args, "--max-requests", "3"]) == ExitCode.RESUMABLE
    assert simulator.state.posts == 3 and len(manifest(tmp_path / "o")) == 3
    assert "stopped (budget): --max-requests 3 reached" in capsys.readouterr().err
    assert main(args) == ExitCode.OK
    assert simulator.state.posts == simulator.state.generations == 5  # the two left, none twice


@pytest.mark.parametrize("value", ["0", "-1", "2.5", "many"])
def test_max_requests_takes_a_whole_number_of_at_least_one(value, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "j.jsonl", "--out", "o", "--max-requests", value])
    assert exit_.value.code == 2 and "--max-requests" in capsys.readouterr().err
