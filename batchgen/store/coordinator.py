"""One worker's seat in a run shared through PostgreSQL (issue 22), for the event loop: its
registration and heartbeat (:mod:`.workers`), claims, the shared rate log (:mod:`.pacing`) and
the shared budgets (:mod:`.ledger`), on a connection and a thread of their own, so that pacing
never waits behind a group commit.

When the database goes away (a restart, a failover), each call waits for it, reconnecting, for
up to :data:`~batchgen.store.pg_connection.RECONNECT_SECONDS`, then raises
:class:`~batchgen.errors.StorageError` (the run stops resumably, exit 75). A worker whose
heartbeat failed for two thirds of its lease stops dispatching: another worker may take its
unsent jobs over (and a dispatch checks its claim anyway:
:data:`~batchgen.store.workers.CLAIM_CHECK`).

Example::

    async with Coordinator.open(url) as seat:
        claimed = await seat.claim(["trex", "owl"])
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from batchgen.errors import StorageError
from batchgen.store.ledger import BudgetLedger
from batchgen.store.pacing import Exchange, RateLog
from batchgen.store.pg_connection import RECONNECT_SECONDS, Reconnecting
from batchgen.store.workers import LEASE_SECONDS, Claimed, WorkerRegistry, new_worker_id, possibly_billed

__all__ = ["Coordinator"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class Coordinator:
    """A worker's registration, claims, shared rate log and budgets (see the module doc).

    Open it with :meth:`open`; every coroutine raises :class:`StorageError` when the database
    stays unreachable for :data:`~batchgen.store.pg_connection.RECONNECT_SECONDS`.
    """

    def __init__(self, url: str, worker_id: str, lease: float) -> None:
        self._conn = Reconnecting(url)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batchgen-coordinator")
        self.registry = WorkerRegistry(self._connection, worker_id, lease=lease)
        self._ledger = BudgetLedger(self._connection, worker_id)
        self._beat_ok = time.monotonic()
        self._pending: set[Future[None]] = set()

    @property
    def worker_id(self) -> str:
        """This worker's id (``<host>-<pid>-<random>``)."""
        return self.registry.worker_id

    @property
    def run_id(self) -> int:
        """The run this worker joined (workers alive together are one run)."""
        return self.registry.run_id

    @property
    def lease(self) -> float:
        """Seconds this worker's claims outlive its last heartbeat."""
        return self.registry.lease

    @property
    def lease_held(self) -> bool:
        """Whether the last good heartbeat is recent enough (under two thirds of the lease)
        for this worker to dispatch."""
        return time.monotonic() - self._beat_ok < self.lease * 2 / 3

    @classmethod
    @asynccontextmanager
    async def open(
        cls, url: str, *, lease: float = LEASE_SECONDS, worker_id: str | None = None
    ) -> AsyncIterator[Coordinator]:
        """Register a worker on the state database ``url`` and renew its lease every
        ``lease / 6`` seconds until the block ends; then leave the run (its unsent claims pass
        to the others at once)."""
        seat = cls(url, worker_id or new_worker_id(), lease)
        try:
            await seat._call(seat.registry.register)
            seat._beat_ok = time.monotonic()
            beating = asyncio.create_task(seat._beat())
            try:
                yield seat
            finally:
                beating.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beating
                await seat._drain_pending()
                with contextlib.suppress(StorageError):
                    await seat._call(seat.registry.end, patience=10.0)
        finally:
            await asyncio.get_running_loop().run_in_executor(seat._thread, seat._close)
            seat._thread.shutdown(wait=True)

    # -- claims ---------------------------------------------------------------------------------

    async def claim(self, job_ids: list[str], *, resend: bool = False) -> Claimed:
        """Claim those of ``job_ids`` no live worker holds (see :meth:`WorkerRegistry.claim`)."""
        return await self._call(lambda: self.registry.claim(job_ids, resend=resend))

    async def take_over(self, limit: int, *, foreign: list[str] | None = None) -> list[str]:
        """Claim up to ``limit`` unsent jobs of workers that died or left (not ``foreign`` ones)."""
        return await self._call(lambda: self.registry.take_over(limit, foreign=foreign))

    async def release(self, job_ids: list[str]) -> None:
        """Give claims back (see :meth:`WorkerRegistry.release`)."""
        await self._call(lambda: self.registry.release(job_ids))

    async def possibly_billed(self) -> list[str]:
        """Jobs a worker that is no longer alive left dispatched, by id."""
        return [job for job, _ in await self._call(lambda: possibly_billed(self._conn.db))]

    async def others_busy(self) -> int:
        """Unfinished jobs other live workers hold."""
        return await self._call(self.registry.others_busy)

    # -- the shared rate --------------------------------------------------------------------------

    async def exchange(
        self,
        last: int,
        answers: list[tuple[int, bool, float]],
        *,
        propose: bool | None,
        spacing: float,
        orphans: bool = False,
    ) -> Exchange:
        """One exchange with the run's rate log (see :meth:`RateLog.exchange`)."""
        rate = RateLog(self._connection, self.worker_id, self.registry.run_id)
        return await self._call(
            lambda: rate.exchange(last, answers, propose=propose, spacing=spacing, orphans=orphans)
        )

    # -- the shared budgets -----------------------------------------------------------------------

    async def begin_budget(self, scope: str, base: tuple[int, int]) -> None:
        """Start a budget's scope with ``base`` spent (units), unless it is started."""
        await self._call(lambda: self._ledger.begin(scope, base))

    async def reserve(
        self, scope: str, need: tuple[int, int], cap: tuple[int | None, int | None]
    ) -> tuple[bool, tuple[int, int], int]:
        """Set ``need`` aside under ``cap`` (see :meth:`BudgetLedger.reserve`)."""
        return await self._call(lambda: self._ledger.reserve(scope, need, cap))

    def settle(self, scope: str, reserved: tuple[int, int], cost: tuple[int, int]) -> None:
        """Replace a reservation by a cost, in the background (in order with every later call;
        the block's end waits for it)."""
        done = self._thread.submit(self._retrying, lambda: self._ledger.settle(scope, reserved, cost))
        self._pending.add(done)
        done.add_done_callback(self._pending.discard)

    # -- internals ------------------------------------------------------------------------------

    def _connection(self) -> Any:
        return self._conn.db

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 6)
            started = time.monotonic()
            try:
                renewed = await self._call(self.registry.beat, patience=self.lease / 6)
            except StorageError as exc:
                log.warning("heartbeat failed (retrying): %s", exc.message)
                continue
            if not renewed:  # (its jobs may be another worker's now: never renewed)
                self._beat_ok = -math.inf
                log.warning("worker %s: its lease ran out before a heartbeat got through", self.worker_id)
                return
            self._beat_ok = started

    async def _drain_pending(self) -> None:
        for done in list(self._pending):
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(done)

    async def _call(self, work: Callable[[], T], *, patience: float = RECONNECT_SECONDS) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self._thread, lambda: self._retrying(work, patience)
        )

    def _retrying(self, work: Callable[[], T], patience: float = RECONNECT_SECONDS) -> T:
        return self._conn.run(work, doing="reach", patience=patience)

    def _close(self) -> None:
        self._conn.close()
