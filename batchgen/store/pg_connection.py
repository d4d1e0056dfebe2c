"""The connection every PostgreSQL part of batchgen uses (the state, a worker's seat): psycopg 3
in autocommit, every commit durable, and one that comes back while the server is away (a
restart, a failover): :class:`Reconnecting`. Also what a URL of ``--state`` looks like, and
that URL without its password (for messages and files).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from batchgen.errors import StateDatabaseError, UsageError

__all__ = ["CONNECTION_OPTIONS", "RECONNECT_SECONDS", "Reconnecting", "psycopg_module", "without_password"]

log = logging.getLogger("batchgen.store.postgres")
T = TypeVar("T")

CONNECTION_OPTIONS = {
    "connect_timeout": 10,
    # A lost host (power, network) is noticed within about a minute, not TCP's two hours: the
    # server drops its session, and with it the locks the run's other workers wait for.
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}
SESSION_TIMEOUTS = (
    "SET idle_in_transaction_session_timeout = '60s'; SET tcp_keepalives_idle = 10;"
    " SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3"
)
WARN_EVERY = 15.0  # seconds between two "unreachable" log lines of one outage
RECONNECT_SECONDS = 120.0  # how long a call waits for a lost database before it gives up


class Reconnecting:
    """A psycopg connection to ``url`` (autocommit; every commit durable; 10 s to connect) that
    comes back: :meth:`run` reconnects and runs its work again while the server is away (a
    restart, a failover). ``generation`` counts the connections made (session locks go with
    each)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.where = without_password(url)  # (for messages)
        self.db: Any = None
        self.generation = 0
        self._warned = 0.0  # (monotonic seconds of the last "unreachable" line; 0: none)

    def run(self, work: Callable[[], T], *, doing: str = "use", patience: float = RECONNECT_SECONDS) -> T:
        """``work()`` on a live connection (:attr:`db`), reconnecting for up to ``patience``
        seconds when the connection is lost. Raises :class:`StateDatabaseError` (any other database
        error at once), :class:`UsageError` when psycopg is missing."""
        psycopg = psycopg_module()
        deadline = time.monotonic() + patience
        pause = 0.2
        while True:
            try:
                if self.db is None or self.db.closed:
                    self.db = psycopg.connect(self.url, autocommit=True, **CONNECTION_OPTIONS)
                    self.generation += 1
                    if self._warned:
                        log.warning("the state database %s is back", self.where)
                        self._warned = 0.0
                    # (each commit durable before the write-ahead goes on, whatever the server's default)
                    self.db.execute("SET synchronous_commit = on")
                    # (a host lost mid-transaction must not hold the run's locks for long: the
                    # server probes its clients too)
                    self.db.execute(SESSION_TIMEOUTS)
                return work()
            except psycopg.OperationalError as exc:
                lost = self.db is None or self.db.closed
                if not lost or time.monotonic() + pause > deadline:
                    raise StateDatabaseError(
                        f"cannot {doing} the state database {self.where}: {exc}".strip()
                    ) from exc
                if time.monotonic() - self._warned >= WARN_EVERY:  # (one line per outage, then and then)
                    log.warning("the state database %s is unreachable; retrying: %s", self.where, exc)
                    self._warned = time.monotonic()
                time.sleep(pause)
                pause = min(2.0, pause * 2)
            except psycopg.Error as exc:
                raise StateDatabaseError(
                    f"cannot {doing} the state database {self.where}: {exc}".strip()
                ) from exc

    def close(self) -> None:
        """Close the connection, if open."""
        if self.db is not None:
            with contextlib.suppress(Exception):
                self.db.close()
            self.db = None


def psycopg_module() -> Any:
    """The psycopg module, or :class:`UsageError` saying how to install it."""
    try:
        import psycopg  # noqa: PLC0415 - only a PostgreSQL state loads the driver
    except ImportError as exc:
        raise UsageError("--state postgresql://... needs psycopg: pip install 'batchgen[postgres]'") from exc
    return psycopg


def without_password(url: str) -> str:
    """``url`` with its password dropped, from the user part and from the query (for messages
    and files)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        credentials, host = netloc.rsplit("@", 1)
        netloc = f"{credentials.split(':', 1)[0]}@{host}"
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = (
        urlencode([(k, v) for k, v in pairs if k != "password"], safe="/")
        if any(k == "password" for k, _ in pairs)
        else parts.query
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
