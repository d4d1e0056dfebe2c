"""What every job of a run shares to stop together: the stop event, the ``concurrency`` places
of jobs at work, the signals that stop a run, and which error stops it for which reason."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

from batchgen.errors import (
    AuthenticationError,
    BudgetReached,
    CreditsExhausted,
    EndpointNotFound,
    JobFileChanged,
    JobFileError,
    OutputStoreError,
    RateLimited,
    RetryBudgetExhausted,
    StorageError,
    Unreachable,
)
from batchgen.gates import Gates
from batchgen.outcome import StopReason
from batchgen.run.retry import Interrupted, RetryPolicy

__all__ = ["RunControl", "stop_reason", "stop_signals"]

T = TypeVar("T")


def stop_signals() -> tuple[signal.Signals, ...]:
    """The signals that stop a run gracefully: ^C, a service manager's stop, a closed terminal
    or ssh session (SIGHUP would otherwise kill the process with its answers in flight), unless
    the run was started to ignore it (``nohup``)."""
    hangup = () if signal.getsignal(signal.SIGHUP) is signal.SIG_IGN else (signal.SIGHUP,)
    return (signal.SIGINT, signal.SIGTERM, *hangup)


_STOPS: list[tuple[type[BaseException], StopReason]] = [
    (AuthenticationError, StopReason.BAD_KEY),
    (EndpointNotFound, StopReason.ENDPOINT),
    (Unreachable, StopReason.ENDPOINT),
    (JobFileError, StopReason.JOB_FILE),
    (JobFileChanged, StopReason.JOB_FILE),
    (CreditsExhausted, StopReason.NO_CREDITS),
    (RateLimited, StopReason.HOURLY_LIMIT),
    (StorageError, StopReason.STORAGE),
    (OutputStoreError, StopReason.STORAGE),
    (RetryBudgetExhausted, StopReason.RETRY_BUDGET),
    (BudgetReached, StopReason.BUDGET),
]


def stop_reason(cause: BaseException | None) -> StopReason:
    """Why ``cause`` stops a run (None, or an error no entry names: a signal)."""
    return next((reason for kind, reason in _STOPS if isinstance(cause, kind)), StopReason.SIGNAL)


@dataclass(slots=True)
class RunControl:
    """What every job of a run shares: the gates of generation requests and of downloads, the
    retry policy, the ``concurrency`` places of jobs at work, and the stop event."""

    generation_gates: Gates
    download_gates: Gates
    policy: RetryPolicy
    places: asyncio.Semaphore
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _waiting: set[asyncio.Task[object]] = field(default_factory=set)  # tasks inside unless_stopped
    _interrupted: set[asyncio.Task[object]] = field(default_factory=set)  # ... cancelled by stop()

    @property
    def stopping(self) -> bool:
        """True once the run has been told to stop dispatching."""
        return self._stop.is_set()

    def stop(self, cause: BaseException | None = None) -> None:
        """Stop dispatching new requests (``cause``: the error that stops the run, if any)."""
        del cause  # the pool records it
        self._stop.set()
        for task in self._waiting - self._interrupted:
            self._interrupted.add(task)
            task.cancel()

    async def unless_stopped(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` unless the run stops first: then raise :class:`Interrupted`.

        The waiting task is cancelled by :meth:`stop` (no helper task per wait: this sits on
        every request's path).
        """
        if self.stopping:
            if asyncio.iscoroutine(awaitable):
                awaitable.close()
            raise Interrupted
        task = asyncio.current_task()
        assert task is not None
        self._waiting.add(task)
        try:
            return await awaitable
        except asyncio.CancelledError:
            if task not in self._interrupted:
                raise
            task.uncancel()
            raise Interrupted from None
        finally:
            self._waiting.discard(task)
            self._interrupted.discard(task)
