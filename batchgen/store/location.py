"""Where a run's output and its write-ahead state live: ``--out`` (a local folder, or an
object-store URL: ``s3://BUCKET/PREFIX``, ``gs://...``, ``az://...``) and ``--state``.

A local folder keeps its state beside it (``DIR/.batchgen/``). An object store cannot hold a
database, so its state lives in a local state folder: ``--state DIR``, by default one keyed by
the URL (:func:`~batchgen.store.layout.default_state_root`). Either way :attr:`OutputLocation.root`
is a local folder laid out as an output folder's private part, so every read of the state works
the same for both. ``--state postgresql://...`` puts the state in a PostgreSQL database instead
(:mod:`batchgen.store.postgres`); the local folder then notes where it is (``.batchgen/state-url``,
no password), so ``status`` and the other reading commands find it from ``--out`` alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from batchgen.errors import UsageError
from batchgen.store.folder import Backends
from batchgen.store.layout import (
    MANIFEST_PARTS,
    STATE,
    default_state_root,
    keep_state_url,
    manifest_path,
    state_url,
)
from batchgen.store.local import LocalFolder
from batchgen.store.objects import ObjectStoreOutput, open_store
from batchgen.store.output import OutputBackend
from batchgen.store.postgres import is_postgres_url, without_password
from batchgen.store.state import StateBackend
from batchgen.store.workers import new_worker_id

__all__ = ["URL_SCHEMES", "OutputLocation", "is_url", "locate"]

URL_SCHEMES = ("s3://", "s3a://", "gs://", "gcs://", "az://", "abfs://", "abfss://", "azure://", "memory://")
"""Prefixes that make ``--out`` an object-store URL (what obstore's ``from_url`` serves)."""


_SCHEME_TYPO = re.compile(r"(?i)(s3|gs|gcs|az|abfss?|azure|memory):/?(?!/)")  # s3:/bucket, s3:bucket


def is_url(value: str) -> bool:
    """Whether ``--out`` names an object store rather than a local folder."""
    return value.lower().startswith(URL_SCHEMES)


@dataclass(frozen=True, slots=True)
class OutputLocation:
    """A resolved ``--out``: ``name`` as given, ``url`` for an object store (None for a local
    folder) and ``root``, the local folder holding the state (``root/.batchgen/``): the output
    folder itself when local, the state folder otherwise."""

    name: str
    root: Path
    url: str | None = None
    database: str | None = None  # the state's PostgreSQL URL, when not in ``root``

    def output(self, *, shared: bool = False) -> OutputBackend:
        """The output backend, unopened (nothing is contacted before its first call);
        ``shared``: written by the workers of one run together."""
        if self.url is None:
            return LocalFolder(self.root, shared=shared)
        return ObjectStoreOutput(
            open_store(self.url),
            self.url,
            self.root,
            lease_store=open_store(self.url, quick=True),
            shared=shared,
        )

    def backends(self) -> Backends | None:
        """The run's backends: None for a local folder with its state beside it (the default).
        With a PostgreSQL state the run is a worker (:mod:`batchgen.store.workers`)."""
        if self.database is not None:
            worker_id = new_worker_id()
            return Backends(
                state=lambda: self._open_database(worker_id),
                output=self.output(shared=True),
                name=self.url or "",
                database=self.database,
                worker_id=worker_id,
            )
        if self.url is None:
            return None
        from batchgen.store.sqlite import SqliteState  # noqa: PLC0415

        state_path = self.root / STATE
        return Backends(state=lambda: SqliteState.open(state_path), output=self.output(), name=self.url)

    def _open_database(self, worker_id: str) -> StateBackend:
        """(On the store's thread, once the output is open.)"""
        from batchgen.store.postgres import PostgresState  # noqa: PLC0415 - only then the driver

        assert self.database is not None
        state = PostgresState.open(
            self.database, output=self.url or str(self.root.resolve()), worker_id=worker_id
        )
        keep_state_url(self.root, without_password(self.database))
        return state

    @property
    def manifest(self) -> str:
        """Where the manifest is, for people: the file, or the URL of its parts' folder."""
        return self.path_of(f"{MANIFEST_PARTS}/") if self.url else str(manifest_path(self.root))

    def path_of(self, relative: str) -> str:
        """A file of the output by its path relative to the output (as records name images)."""
        return f"{self.url}/{relative}" if self.url else str(self.root / relative)


def locate(out: str | Path, state: str | Path | None = None) -> OutputLocation:
    """Resolve ``--out`` and ``--state`` (a folder, or a ``postgresql://`` URL). Raises
    :class:`UsageError` for a state folder with a local ``--out`` (its state stays beside it,
    where every later command looks for it)."""
    name = str(out)
    if _SCHEME_TYPO.match(name):
        scheme, _, rest = name.partition(":")
        raise UsageError(f"--out {name}: did you mean {scheme.lower()}://{rest.lstrip('/')}?")
    database = str(state) if state is not None and is_postgres_url(str(state)) else None
    if not is_url(name):
        if state is not None and database is None:
            raise UsageError(
                f"--state is for an object-store --out; {name} keeps its state in {name}/.batchgen"
                " (or give --state postgresql://...)"
            )
        # (a folder whose runs kept their state in PostgreSQL goes on doing so)
        return OutputLocation(name, Path(out), database=database or state_url(Path(out)))
    scheme, sep, rest = name.rstrip("/").partition("://")
    url = scheme.lower() + sep + rest  # (S3://b/x and s3://b/x are one output, with one state)
    root = Path(state) if state is not None and database is None else default_state_root(url)
    return OutputLocation(name, root, url, database)
