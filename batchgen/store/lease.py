"""The lease of an object-store output: one live run per output URL, whatever host or state
folder it runs from (the state folder's own lock covers one host only).

The lease is the object ``.batchgen/lease.json`` under the output's prefix, naming its holder:
a random id kept in the state folder (``.batchgen/holder``), with host and pid for messages.
It is taken with a create-only put, renewed every ``ttl / 6`` seconds (a failed renewal is
tried again every ``ttl / 12``) with a put conditional on its version (S3 ``If-Match`` on the
ETag; GCS the generation), and released at the end by a conditional put that marks it released
(never an unconditional delete: a run that lost its lease must not remove the next holder's).
Its calls are bounded to 10 s, retries included.

A lease found there is free when released, ours when its holder id and host are this state
folder's and this host's (that run is dead: this one holds the state folder's lock), and stale
when not renewed for ``ttl`` seconds by the store's ``last_modified`` against this host's clock
(hosts' clocks are assumed within a few seconds of each other, as NTP keeps them); those are
taken over with a conditional put. A live lease refuses the run
(:class:`~batchgen.errors.OutputLockedError`, exit 73).

A run stops writing (:meth:`BucketLease.check` raises) when another run took its lease over, or
when no renewal has succeeded for two thirds of ``ttl`` (on a clock that counts suspended time):
before anyone else may take it, so two runs never write the same output.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any

from batchgen.errors import LeaseLost, OutputLockedError
from batchgen.store.layout import HOLDER, LEASE
from batchgen.store.object_errors import first_line, store_error

__all__ = ["LEASE_SECONDS", "BucketLease"]

log = logging.getLogger(__name__)

LEASE_SECONDS = 60.0
"""How long a lease holds without a renewal (seconds)."""


def _now() -> float:
    """Seconds on a clock that keeps counting while the machine is suspended."""
    return time.clock_gettime(getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC))


class BucketLease:
    """The lease of the output at ``url`` (an obstore ``store`` rooted at its prefix), for a run
    whose state folder is ``state_root``. :meth:`acquire`, then :meth:`release`; :attr:`lost` (an
    event) is set if another run takes it over meanwhile."""

    def __init__(self, store: Any, url: str, state_root: Path, *, ttl: float = LEASE_SECONDS) -> None:
        self.store = store
        self.url = url
        self.ttl = ttl
        self.lost = threading.Event()  # set when another run took the lease over
        self._state_root = state_root
        self._holder: dict[str, Any] = {}
        self._version: dict[str, str] | None = None  # e_tag and version of our last put
        self._renewed = 0.0  # _now() of the last successful put
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def acquire(self) -> None:
        """Take the lease (see the module), then renew it in a background thread. Raises
        :class:`OutputLockedError` for a live lease of another run, :class:`StorageError` when
        the store cannot be reached or written."""
        from obstore.exceptions import AlreadyExistsError  # noqa: PLC0415

        self._holder = {"holder": self._holder_id(), "host": socket.gethostname(), "pid": os.getpid()}
        try:
            self._put("create")
        except AlreadyExistsError:
            self._take_over()
        except OutputLockedError:
            raise
        except Exception as exc:
            raise store_error(self.url, "put", LEASE, exc) from exc
        self._renewer = threading.Thread(
            target=self._renew_until_released, name="batchgen-lease", daemon=True
        )
        self._renewer.start()

    def check(self) -> None:
        """Raise :class:`StorageError` unless the lease is surely still ours (before any put)."""
        if self.lost.is_set():
            raise LeaseLost(f"another batchgen run took over {self.url}: this run stops writing to it")
        silent = _now() - self._renewed
        if silent > self.ttl * 2 / 3:
            raise LeaseLost(
                f"the lease of {self.url} could not be renewed for {silent:.0f} s: this run stops writing"
                " to it before another run may take it over"
            )

    def release(self) -> None:
        """Stop renewing; mark the lease released (a put conditional on it being still ours)."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
            self._renewer = None
        if self._version is not None and not self.lost.is_set():
            try:
                self._put(self._version, released=True)
            except Exception as exc:  # it expires by itself: say so, do not fail the run's end
                log.warning(
                    "could not release the lease %s/%s (it expires in %.0f s): %s",
                    self.url, LEASE, self.ttl, first_line(exc),
                )  # fmt: skip
        self._version = None

    def _take_over(self) -> None:
        import obstore  # noqa: PLC0415
        from obstore.exceptions import PreconditionError  # noqa: PLC0415

        try:
            found = obstore.get(self.store, LEASE)
            meta, text = found.meta, bytes(found.bytes())
        except FileNotFoundError:  # released and deleted meanwhile: from the start
            self._put("create")
            return
        except Exception as exc:
            raise store_error(self.url, "read", LEASE, exc) from exc
        try:
            other = json.loads(text)
        except ValueError:
            other = {}
        other = other if isinstance(other, dict) else {}
        age = (dt.datetime.now(dt.UTC) - meta["last_modified"]).total_seconds()
        ours = other.get("holder") == self._holder["holder"] and other.get("host") == self._holder["host"]
        free = other.get("released") is True or ours
        if not free and age < self.ttl:
            raise OutputLockedError(
                f"{self.url} is in use by a batchgen run on {other.get('host', '?')}"
                f" (pid {other.get('pid', '?')}; lease renewed {max(age, 0):.0f} s ago)"
            )
        try:
            self._put({"e_tag": meta["e_tag"], "version": meta["version"]})
        except PreconditionError:
            raise OutputLockedError(f"{self.url} was just taken by another batchgen run") from None
        except Exception as exc:
            raise store_error(self.url, "put", LEASE, exc) from exc
        if not other.get("released"):
            log.warning(
                "took over the lease of %s from a run that is gone (%s)", self.url, other or "unreadable"
            )

    def _renew_until_released(self) -> None:
        from obstore.exceptions import PreconditionError  # noqa: PLC0415

        wait = self.ttl / 6
        while not self._stop.wait(wait):
            wait = self.ttl / 6
            try:
                self._put(self._version or "create")
            except PreconditionError:
                self.lost.set()
                log.error(  # noqa: TRY400 - no traceback: the message says it all
                    "the lease of %s was taken over by another run: this run stops writing to it", self.url
                )
                return
            except Exception as exc:  # a blip: tried again soon; check() stops the writes in time
                log.warning("could not renew the lease of %s: %s", self.url, first_line(exc))
                wait = self.ttl / 12

    def _put(self, mode: Any, *, released: bool = False) -> None:
        """Put our lease with ``mode`` ("create", or the version to replace); keep its version."""
        import obstore  # noqa: PLC0415

        if isinstance(mode, dict):  # (S3 matches the ETag, GCS the generation: give both)
            mode = {k: v for k, v in mode.items() if v is not None}
        body = json.dumps({**self._holder, "released": released}).encode()
        started = _now()
        result = obstore.put(self.store, LEASE, body, mode=mode)
        self._version = {"e_tag": result["e_tag"], "version": result["version"]}
        self._renewed = started

    def _holder_id(self) -> str:
        """This state folder's random id (made on first use)."""
        path = self._state_root / HOLDER
        try:
            found = path.read_text().strip()
        except FileNotFoundError:
            found = ""
        if len(found) == 32:  # noqa: PLR2004 - (an empty or torn file is made anew)
            return found
        made = secrets.token_hex(16)
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(made + "\n")
        temporary.replace(path)
        return made
