"""Where a run's output and its write-ahead state live: ``--out`` (a local folder, or an
object-store URL: ``s3://BUCKET/PREFIX``, ``gs://...``, ``az://...``) and ``--state``.

A local folder keeps its state beside it (``DIR/.batchgen/``). An object store cannot hold a
database, so its state lives in a local state folder: ``--state DIR``, by default one keyed by
the URL (:func:`~batchgen.store.layout.default_state_root`). Either way :attr:`OutputLocation.root`
is a local folder laid out as an output folder's private part, so every read of the state works
the same for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from batchgen.errors import UsageError
from batchgen.store.folder import Backends
from batchgen.store.layout import MANIFEST_PARTS, STATE, default_state_root, manifest_path
from batchgen.store.local import LocalFolder
from batchgen.store.objects import ObjectStoreOutput, open_store
from batchgen.store.output import OutputBackend

__all__ = ["URL_SCHEMES", "OutputLocation", "is_url", "locate"]

URL_SCHEMES = ("s3://", "s3a://", "gs://", "gcs://", "az://", "abfs://", "abfss://", "azure://", "memory://")
"""Prefixes that make ``--out`` an object-store URL (what obstore's ``from_url`` serves)."""


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

    def output(self) -> OutputBackend:
        """The output backend, unopened (nothing is contacted before its first call)."""
        if self.url is None:
            return LocalFolder(self.root)
        return ObjectStoreOutput(open_store(self.url), self.url, self.root)

    def backends(self) -> Backends | None:
        """The run's backends: None for a local folder (the default ones)."""
        if self.url is None:
            return None
        from batchgen.store.sqlite import SqliteState  # noqa: PLC0415

        state_path = self.root / STATE
        return Backends(state=lambda: SqliteState.open(state_path), output=self.output())

    @property
    def manifest(self) -> str:
        """Where the manifest is, for people: the file, or the URL of its parts' folder."""
        return self.path_of(f"{MANIFEST_PARTS}/") if self.url else str(manifest_path(self.root))

    def path_of(self, relative: str) -> str:
        """A file of the output by its path relative to the output (as records name images)."""
        return f"{self.url}/{relative}" if self.url else str(self.root / relative)


def locate(out: str | Path, state: str | Path | None = None) -> OutputLocation:
    """Resolve ``--out`` and ``--state``. Raises :class:`UsageError` for ``--state`` with a
    local ``--out`` (its state stays beside it, where every later command looks for it)."""
    name = str(out)
    if not is_url(name):
        if state is not None:
            raise UsageError(
                f"--state is for an object-store --out; {name} keeps its state in {name}/.batchgen"
            )
        return OutputLocation(name, Path(out))
    url = name.rstrip("/")
    return OutputLocation(name, Path(state) if state is not None else default_state_root(url), url)
