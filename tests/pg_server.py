"""A private PostgreSQL server for tests and benchmarks (``../shared/design/scale-out.md``):
``initdb`` + ``pg_ctl`` in a temp folder, listening on a unix socket only, as the ``postgres``
user when run as root (the server refuses root), always stopped with ``-m immediate``.

Example::

    with PrivatePostgres.started() as server:
        url = server.new_database()
        server.restart()                 # (a restart mid-run)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["PrivatePostgres", "postgres_bin"]


def postgres_bin(name: str) -> str | None:
    """A PostgreSQL server program: on PATH, or in Debian's ``/usr/lib/postgresql/<version>/bin``."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


class PrivatePostgres:
    """One private server: :attr:`url` of its ``postgres`` database."""

    def __init__(self, base: Path, pg_ctl: str, as_user: list[str]) -> None:
        self.base = base
        self._pg_ctl = pg_ctl
        self._as_user = as_user
        sockets = base / "sock"
        self._options = f"-c listen_addresses='' -k {sockets} -p 5432 -c fsync=off -c max_connections=200"
        self.url = f"postgresql://batchgen@/postgres?host={sockets}&port=5432"

    @classmethod
    @contextmanager
    def started(cls) -> Iterator[PrivatePostgres]:
        """Start a server; stop it (``-m immediate``) and remove its folders at the end. Raises
        :class:`FileNotFoundError` when ``initdb``/``pg_ctl`` are not installed."""
        initdb, pg_ctl = postgres_bin("initdb"), postgres_bin("pg_ctl")
        if initdb is None or pg_ctl is None:
            raise FileNotFoundError("PostgreSQL's initdb/pg_ctl (apt-get install postgresql)")
        base = Path(tempfile.mkdtemp(prefix="batchgen-pg-"))
        base.chmod(0o711)  # (the postgres user must reach its folders inside)
        data, sockets = base / "data", base / "sock"
        data.mkdir()
        sockets.mkdir()
        as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(data, "postgres")
            shutil.chown(sockets, "postgres")
            as_user = ["runuser", "-u", "postgres", "--"]
        subprocess.run(
            [*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "batchgen", "--no-sync", "-E", "UTF8"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        server = cls(base, pg_ctl, as_user)
        server._ctl("start", "-o", server._options, "-l", str(data / "server.log"))
        try:
            yield server
        finally:
            server._ctl("stop", "-m", "immediate", check=False)
            shutil.rmtree(base, ignore_errors=True)

    def restart(self) -> None:
        """Restart the server (``-m fast``: every connection is dropped)."""
        self._ctl("restart", "-m", "fast", "-o", self._options, "-l", str(self.base / "data" / "server.log"))

    def new_database(self) -> str:
        """A fresh database on the server: its URL."""
        import psycopg  # noqa: PLC0415

        name = f"run_{os.urandom(6).hex()}"
        with psycopg.connect(self.url, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        return self.url.replace("/postgres?", f"/{name}?")

    def _ctl(self, action: str, *options: str, check: bool = True) -> None:
        subprocess.run(
            [*self._as_user, self._pg_ctl, "-D", str(self.base / "data"), *options, "-w", action],
            check=check, capture_output=True, timeout=120,
        )  # fmt: skip
