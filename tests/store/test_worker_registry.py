"""The workers' tables on a real PostgreSQL (issue 22): claims, leases, what a worker whose lease
ran out may still do, and the rate log's sends no answer will come to. (Whole runs of several
worker processes: ``tests/run/test_workers.py``.)"""

from __future__ import annotations

import re

import psycopg
import pytest

from batchgen.api.answers import Answer, ImageRef
from batchgen.errors import UsageError
from batchgen.store.events import Answered, ClaimLost, Dispatched
from batchgen.store.pacing import RateLog
from batchgen.store.pg_connection import Reconnecting
from batchgen.store.postgres import PostgresState
from batchgen.store.workers import WorkerRegistry


def lapse(database: str, worker_id: str) -> None:
    """Make ``worker_id``'s lease run out now (as a worker cut off for longer than its lease)."""
    with psycopg.connect(database, autocommit=True) as db:
        db.execute(
            "UPDATE workers SET until = now() - interval '1 second' WHERE worker_id = %s", (worker_id,)
        )


@pytest.fixture
def database(postgres):
    """A state database with its tables."""
    url = postgres()
    PostgresState.open(url, output="/data/out").close()
    return url


@pytest.fixture
def connect(database):
    """Connections to the state database, closed at the end."""
    opened: list[Reconnecting] = []

    def new() -> Reconnecting:
        connection = Reconnecting(database)
        connection.run(lambda: None)
        opened.append(connection)
        return connection

    yield new
    for connection in opened:
        connection.close()


@pytest.fixture
def registry(connect):
    """``registry(worker_id)``: a registered worker on a connection of its own."""

    def register(worker_id: str) -> WorkerRegistry:
        connection = connect()
        worker = WorkerRegistry(lambda: connection.db, worker_id)
        worker.register()
        return worker

    return register


def test_a_job_is_claimed_by_one_live_worker_and_taken_over_once_its_lease_ran_out(database, registry):
    a, b = registry("a"), registry("b")
    assert a.claim(["x", "y"]).mine == ["x", "y"]
    assert b.claim(["x", "y", "z"]).mine == ["z"]  # (x and y are a's while a lives)
    assert b.take_over(10) == []

    lapse(database, "a")

    assert b.take_over(10) == ["x", "y"]
    assert a.beat() is False  # (never renewed: its jobs may be b's now)


def test_a_worker_whose_lease_ran_out_can_neither_send_nor_record_a_job_taken_over(database, registry):
    a, b = registry("a"), registry("b")
    state_a = PostgresState.open(database, output="/data/out", worker_id="a")
    try:
        a.claim(["x", "y"])
        assert state_a.apply([Dispatched("x", "reve/create-image", "bg.x.1.a1", None)]) == [None]
        lapse(database, "a")

        # a's lease ran out: no new dispatch, even of a job nobody took yet
        (refused,) = state_a.apply([Dispatched("y", "reve/create-image", "bg.y.1.a1", None)])
        assert isinstance(refused, ClaimLost)
        # b takes y over (x was sent: possibly billed, not taken); a's answer to x still counts
        assert b.take_over(10) == ["y"]
        answer = Answer(images=[ImageRef(url="https://cdn.test/x.png")])
        assert state_a.apply([Answered("x", answer)]) == [None]
        # ... but an answer to a job b holds now is refused
        b.claim(["x"], resend=True)
        (refused,) = state_a.apply([Answered("x", answer)])
        assert isinstance(refused, ClaimLost)
    finally:
        state_a.close()


def test_sends_of_a_dead_worker_with_no_answer_are_listed_for_the_replicas(database, registry, connect):
    a, b = registry("a"), registry("b")
    connection = connect()
    log_a, log_b = (
        RateLog(lambda: connection.db, "a", a.run_id),
        RateLog(lambda: connection.db, "b", b.run_id),
    )
    answered = log_a.exchange(0, [], propose=False).sent
    unanswered = log_a.exchange(0, [], propose=False).sent
    assert answered is not None and unanswered is not None
    log_a.exchange(0, [(answered, False, 0.0)])
    assert log_b.exchange(0, [], orphans=True).orphans == []  # (a lives: its answer may come)

    lapse(database, "a")

    assert log_b.exchange(0, [], orphans=True).orphans == [unanswered]


def test_a_state_database_that_does_not_exist_is_a_usage_error(database):
    missing = re.sub(r"/run_\w+\?", "/no_such_database?", database)
    with pytest.raises(UsageError, match="does not exist; fix --state or create it"):
        PostgresState.open(missing, output="/data/out")
    with pytest.raises(UsageError, match="extra key/value separator"):  # (a typo in the URL: exit 2, not 75)
        PostgresState.open(database.replace("?", "?host="), output="/data/out")
