"""Gates shared by the workers of one run (issue 22): one learned rate and one ``--rpm``
ceiling for all of them, through the run's rate log in its PostgreSQL state
(:mod:`batchgen.store.pacing`).

Every worker keeps a replica of :class:`~batchgen.gates.learned.LearnedLimit`, fed with every
worker's sends and answers in the log's order and timed by the database server's clock, so
each counts what the whole run sent, learns from every 429, and paces the run as one process
would. A send is decided on the replica and proposed to the log; the log refuses it when other
entries came in meanwhile, and the worker replays them and decides again. (The budgets' shared
ledger is in :mod:`batchgen.gates.budget`.)
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from typing import Protocol

from batchgen.errors import BatchgenError, RateLimited, RequestError
from batchgen.gates import Send
from batchgen.gates.learned import LearnedLimit, Sample

__all__ = ["Exchanged", "LogEntry", "RateExchange", "SharedLimit"]

log = logging.getLogger(__name__)

SYNC_EVERY = 0.25  # seconds: a worker waiting to send brings its replica up to date this often
OFFSET_EVERY = 60.0  # seconds: the clock offset is the best round trip's of a span this long
ORPHANS_EVERY = 5.0  # seconds: how often it asks which sends of dead workers no answer will come to


class LogEntry(Protocol):
    """A send (``sent_seq`` None) or an answer to send ``sent_seq``, by the log's clock."""

    @property
    def seq(self) -> int: ...
    @property
    def sent_seq(self) -> int | None: ...
    @property
    def at(self) -> float: ...
    @property
    def probe(self) -> bool: ...
    @property
    def refused(self) -> bool | None: ...


class Exchanged(Protocol):
    """What an exchange gave (see :class:`batchgen.store.pacing.Exchange`)."""

    @property
    def rows(self) -> Sequence[LogEntry]: ...
    @property
    def last(self) -> int: ...
    @property
    def now(self) -> float: ...
    @property
    def sent(self) -> int | None: ...
    @property
    def wait(self) -> float: ...
    @property
    def orphans(self) -> list[int] | None: ...


class RateExchange(Protocol):
    """The run's rate log (:meth:`batchgen.store.coordinator.Coordinator.exchange`)."""

    async def exchange(
        self,
        last: int,
        answers: list[tuple[int, bool, float]],
        *,
        propose: bool | None,
        spacing: float,
        orphans: bool = False,
    ) -> Exchanged:
        """Add this worker's answers, read the others' entries past ``last``, and with
        ``propose`` add a send if nothing new came and the ceiling allows it; with ``orphans``,
        list dead workers' sends no answer will come to."""
        ...


class SharedLimit:
    """The run's learned limit (and ``rpm`` ceiling, requests per minute), paced through
    ``log``: a gate. ``learner``: this worker's replica (its ``rate`` is the run's)."""

    def __init__(self, log: RateExchange, *, rpm: float | None = None) -> None:
        self._log = log
        self._spacing = 60.0 / rpm if rpm else 0.0
        self.learner = LearnedLimit(clock=self._now)
        self._offset = 0.0  # the log's clock minus the loop's (seconds)
        self._best_rtt = math.inf
        self._rtt_since = -math.inf  # (loop time the current span of round trips began)
        self._last = 0
        self._samples: dict[int, Sample] = {}  # the log's sends not answered yet, by seq
        self._answers: list[tuple[int, bool, float]] = []  # this worker's, not in the log yet
        self._turn: asyncio.Lock | None = None
        self._exchanging = asyncio.Lock()
        self._swept = -math.inf  # (loop time of the last look for orphaned sends)
        self._telling: asyncio.Task[None] | None = None  # (held: the loop keeps only weak references)

    async def enter(self, send: Send) -> None:
        """Wait until the run may send (on the replica, then accepted by the log); note it."""
        if self._turn is None:
            self._turn = asyncio.Lock()
            await self._exchange(None)  # (the log's recent past first)
        async with self._turn:  # (FIFO among this worker's jobs)
            while True:
                wait, probe = self.learner.admit(self._now())
                if wait > 0:
                    # (a short wait goes straight to the proposal, which brings the replica
                    # up to date anyway: one round trip per send)
                    await asyncio.sleep(min(wait, SYNC_EVERY))
                    if wait > SYNC_EVERY:
                        await self._exchange(None)
                    continue
                sent = await self._exchange(probe)
                if sent is not None:
                    self._samples[sent[0]] = self.learner.sent(sent[1], probe=probe)
                    send.ticket = sent[0]
                    return

    def settle(self, send: Send, error: RequestError | None) -> None:
        """Hand the answer to the log: an admission with this worker's next exchange, a 429 at
        once (until the others hear of it, their replicas count the refused send as admitted,
        and a fit on those counts would learn a limit too high). The replica learns from it
        when it comes back in the log's order, as every other replica does, so all of them
        learn the same limits."""
        ticket = send.ticket
        if not isinstance(ticket, int):
            return
        refused = isinstance(error, RateLimited)
        self._answers.append((ticket, refused, self._now()))
        if refused and self._telling is None:
            self._telling = asyncio.get_running_loop().create_task(self._tell())

    async def _tell(self) -> None:
        """Hand this worker's answers to the log now (in the worker's turn)."""
        try:
            if self._answers:
                await self._exchange(None)
        except BatchgenError as exc:  # (the next exchange hands them over)
            log.warning("the run's rate log did not hear this worker's 429s yet: %s", exc.message)
        except RuntimeError:  # (the run ended meanwhile: its seat is closed)
            pass
        finally:
            self._telling = None

    async def _exchange(self, propose: bool | None) -> tuple[int, float] | None:
        """One exchange with the log: (seq, time) of the send it accepted, or None. One at a
        time: each replays what is past the last one's end."""
        async with self._exchanging:
            return await self._exchange_alone(propose)

    async def _exchange_alone(self, propose: bool | None) -> tuple[int, float] | None:
        loop = asyncio.get_running_loop()
        answers, self._answers = self._answers, []
        started = loop.time()
        sweep = started - self._swept >= ORPHANS_EVERY
        done = await self._log.exchange(
            self._last, answers, propose=propose, spacing=self._spacing, orphans=sweep
        )
        ended = loop.time()
        if sweep:
            self._swept = started
        if started - self._rtt_since >= OFFSET_EVERY:  # (clocks drift: the best of a recent span)
            self._best_rtt, self._rtt_since = math.inf, started
        if ended - started < self._best_rtt:  # (the shortest round trip gives the best offset)
            self._best_rtt = ended - started
            self._offset = done.now - (started + ended) / 2
        for row in done.rows:
            if row.sent_seq is None:
                self._samples[row.seq] = self.learner.sent(row.at, probe=row.probe)
            else:
                sample = self._samples.pop(row.sent_seq, None)
                if sample is not None:
                    self.learner.answered(sample, refused=bool(row.refused), at=row.at)
        for seq in done.orphans or ():  # (their requests' fate is unknown: taken as admitted)
            orphan = self._samples.pop(seq, None)
            if orphan is not None:
                self.learner.answered(orphan, refused=False, at=done.now)
        self._last = done.last
        if done.wait > 0:
            await asyncio.sleep(done.wait)
        return (done.sent, done.now) if done.sent is not None else None

    def _now(self) -> float:
        return asyncio.get_running_loop().time() + self._offset
