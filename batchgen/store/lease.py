"""The lease of an object-store output: one live run per output URL, whatever host or state
folder it runs from (the state folder's own lock covers one host only).

The lease is the object ``.batchgen/lease.json`` under the output's prefix, naming its holder
(host, pid, state folder). It is taken with a create-only put, renewed every ``ttl / 3`` seconds
with a put conditional on its ETag (S3 ``If-Match``), and deleted at the end. A lease found there
is taken over at once when its holder is this host with this state folder (that run is dead:
this one holds the state folder's lock), or when it was not renewed for ``ttl`` seconds (the
store's ``last_modified`` against this host's clock: hosts' clocks are assumed within seconds
of each other). A live lease refuses the run (:class:`~batchgen.errors.OutputLockedError`,
exit 73). A renewal refused because another run took the lease over marks it lost: the output
then refuses every further put, so two runs never write the same output.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import threading
from pathlib import Path
from typing import Any

from batchgen.errors import OutputLockedError, StorageError
from batchgen.store.layout import LEASE

__all__ = ["LEASE_SECONDS", "BucketLease"]

log = logging.getLogger(__name__)

LEASE_SECONDS = 60.0
"""How long a lease holds without a renewal (seconds)."""


class BucketLease:
    """The lease of the output at ``url`` (an obstore ``store`` rooted at its prefix), for a run
    whose state folder is ``state_root``. :meth:`acquire`, then :meth:`release`; :attr:`lost` (an
    event) is set if another run takes it over meanwhile."""

    def __init__(self, store: Any, url: str, state_root: Path, *, ttl: float = LEASE_SECONDS) -> None:
        self.store = store
        self.url = url
        self.ttl = ttl
        self.holder = {"host": socket.gethostname(), "pid": os.getpid(), "state": str(state_root.resolve())}
        self.lost = threading.Event()  # set when another run took the lease over
        self._e_tag: str | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def acquire(self) -> None:
        """Take the lease (see the module), then renew it in a background thread. Raises
        :class:`OutputLockedError` for a live lease of another run, :class:`StorageError` when
        the store cannot be reached."""
        import obstore  # noqa: PLC0415
        from obstore.exceptions import AlreadyExistsError, PreconditionError  # noqa: PLC0415

        try:
            self._e_tag = obstore.put(self.store, LEASE, self._body(), mode="create")["e_tag"]
        except AlreadyExistsError:
            self._take_over(obstore, PreconditionError)
        except Exception as exc:
            raise StorageError(f"cannot put {self.url}/{LEASE}: {exc}") from exc
        self._renewer = threading.Thread(
            target=self._renew_until_released, name="batchgen-lease", daemon=True
        )
        self._renewer.start()

    def release(self) -> None:
        """Stop renewing and delete the lease (unless it was lost to another run)."""
        import obstore  # noqa: PLC0415

        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
            self._renewer = None
        if self._e_tag is not None and not self.lost.is_set():
            try:
                obstore.delete(self.store, LEASE)
            except Exception as exc:  # it expires by itself: say so, do not fail the run's end
                log.warning(
                    "could not delete the lease %s/%s (it expires in %.0f s): %s",
                    self.url,
                    LEASE,
                    self.ttl,
                    exc,
                )
        self._e_tag = None

    def check(self) -> None:
        """Raise :class:`StorageError` if the lease was lost (before any put of the output)."""
        if self.lost.is_set():
            raise StorageError(f"another batchgen run took over {self.url}: this run stops writing to it")

    def _take_over(self, obstore: Any, precondition: type[Exception]) -> None:
        try:
            found = obstore.get(self.store, LEASE)
            meta, text = found.meta, bytes(found.bytes())
        except FileNotFoundError:  # released meanwhile: try again from the start
            self._e_tag = obstore.put(self.store, LEASE, self._body(), mode="create")["e_tag"]
            return
        try:
            other = json.loads(text)
        except ValueError:
            other = {}
        ours = other.get("host") == self.holder["host"] and other.get("state") == self.holder["state"]
        age = (dt.datetime.now(dt.UTC) - meta["last_modified"]).total_seconds()
        if not ours and age < self.ttl:
            raise OutputLockedError(
                f"{self.url} is in use by a batchgen run on {other.get('host', '?')}"
                f" (pid {other.get('pid', '?')},"
                f" state {other.get('state', '?')}; lease renewed {max(age, 0):.0f} s ago)"
            )
        try:
            self._e_tag = obstore.put(self.store, LEASE, self._body(), mode={"e_tag": meta["e_tag"]})["e_tag"]
        except precondition:
            raise OutputLockedError(f"{self.url} was just taken by another batchgen run") from None
        log.warning(
            "took over the lease of %s from a run that is gone (%s)", self.url, other or "unreadable lease"
        )

    def _renew_until_released(self) -> None:
        import obstore  # noqa: PLC0415
        from obstore.exceptions import PreconditionError  # noqa: PLC0415

        while not self._stop.wait(self.ttl / 3):
            try:
                self._e_tag = obstore.put(self.store, LEASE, self._body(), mode={"e_tag": self._e_tag})[
                    "e_tag"
                ]
            except PreconditionError:
                self.lost.set()
                log.error(  # noqa: TRY400 - no traceback: the message says it all
                    "the lease of %s was taken over by another run: this run stops writing to it", self.url
                )
                return
            except Exception as exc:  # a blip: the next renewal may pass, well within the lease
                log.warning("could not renew the lease of %s: %s", self.url, exc)

    def _body(self) -> bytes:
        return json.dumps(self.holder).encode()
