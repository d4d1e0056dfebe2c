"""The output backend of an object store (S3, GCS, Azure, through obstore): images put once,
the manifest as immutable part objects, the lock and scratch space in the local state folder.

One run writes an output at a time: the state folder's lock, and the output's lease in the
store (:mod:`batchgen.store.lease`) for runs on other hosts or from other state folders.

An object store cannot rename or append, so the write-ahead order is kept another way:

* an image is verified in memory (or in a local scratch file past the memory bound), then put
  once under its final name with a create-only put (S3 ``If-None-Match: *``). An object already
  there with the same SHA-256 is a finished upload (a crash came between the put and the record);
  one with other bytes is listed by no record (records commit after their puts), so it is
  replaced;
* a put returns once the object is durable, so :meth:`make_durable` has nothing to do;
* the manifest is ``manifest/part-<n>.jsonl``: records gather in a part that is put,
  create-only, once it holds 4 MiB or its first record is 5 s old (a timer thread sees to it),
  and at the run's end;
  readers concatenate the parts by name. A crash loses no line that the state holds: the next
  open puts what the parts lack (as a local folder re-appends). Only if the state is lost too
  are the records of the last few seconds lost with it (those jobs would be generated again).

Object keys are relative to the URL's prefix (:mod:`batchgen.store.layout`). Errors of the store
become :class:`~batchgen.errors.StorageError` naming the object.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from batchgen.errors import BatchgenError, OutputStoreError, StorageError
from batchgen.images import inspect_image
from batchgen.store.files import (
    STALE_TEMPORARY,
    DirectoryLock,
    TempFile,
    ensure_real_dir,
    make_output_dir,
    remove_temporaries,
)
from batchgen.store.layout import IMAGES, LOCK, MANIFEST_PARTS, PRIVATE, SCRATCH, manifest_part
from batchgen.store.lease import LEASE_SECONDS, BucketLease
from batchgen.store.manifest import ImageRecord, ManifestRecord
from batchgen.store.object_errors import first_line, store_error
from batchgen.store.output import Spill

__all__ = ["ObjectStoreOutput", "open_store"]

log = logging.getLogger(__name__)

PART_BYTES = 8 * 1024 * 1024
"""A rewritten manifest is cut into parts of about this many bytes."""

ROLL_BYTES = 4 * 1024 * 1024
ROLL_SECONDS = 5.0
"""A part is put once it holds this many bytes, or its first line is this old (seconds)."""

_PART = re.compile(r"part-(\d+)\.jsonl")


def open_store(url: str, *, quick: bool = False) -> Any:
    """The obstore store of ``url`` (``s3://BUCKET/PREFIX``, ``gs://...``, ``az://...``,
    ``memory://``), configured from the standard environment (``AWS_ACCESS_KEY_ID``,
    ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, ``AWS_ENDPOINT_URL``, ``AWS_ALLOW_HTTP``;
    ``GOOGLE_*``; ``AZURE_*``). ``quick``: for the lease, calls bounded to 10 s retries
    included (obstore's default retries for up to 3 minutes). Raises :class:`OutputStoreError`
    for a URL obstore cannot serve."""
    from obstore.store import from_url  # noqa: PLC0415 - only runs into an object store load it

    bounds: dict[str, Any] = {}
    if quick:
        bounds = {
            # (given client options replace those of the environment: AWS_ALLOW_HTTP kept)
            "client_options": {
                "timeout": "5s",
                "connect_timeout": "3s",
                "allow_http": os.environ.get("AWS_ALLOW_HTTP", "").lower() == "true",
            },
            "retry_config": {"max_retries": 2, "retry_timeout": dt.timedelta(seconds=10)},
        }
    try:
        return from_url(url, **bounds)
    except Exception as exc:  # obstore raises its own errors for a bad URL or configuration
        raise OutputStoreError(f"cannot open {url}: {first_line(exc)}") from exc


class ObjectStoreOutput:
    """An :class:`~batchgen.store.output.OutputBackend` in ``store`` (an obstore store, rooted
    at the output's prefix), named ``url`` in messages, with its lock and scratch space under
    the local state folder ``state_root`` (``state_root/.batchgen/``)."""

    puts_at_once = 8  # (each put waits tens of milliseconds on the network)

    def __init__(
        self,
        store: Any,
        url: str,
        state_root: Path,
        *,
        lease_seconds: float = LEASE_SECONDS,
        lease_store: Any = None,
        shared: bool = False,
    ) -> None:
        self.store = store
        self._shared = shared  # workers of one run write it together (no lock, no lease)
        self.url = url.rstrip("/")
        self._state_root = state_root
        self._scratch = state_root / SCRATCH
        self._lock = DirectoryLock(state_root / LOCK)
        self.lease = BucketLease(
            lease_store or store, self.url, state_root, ttl=lease_seconds
        )  # (held while open)
        self._next_part = 0
        self._last_line = b""
        self._pending: list[str] = []  # lines of the part being filled
        self._pending_bytes = 0
        self._pending_since = 0.0
        self._parts = threading.Lock()  # (the store's thread fills the part; a timer puts it when due)
        self._stop = threading.Event()
        self._roller: threading.Thread | None = None

    # -- the run's hold on the output ----------------------------------------------------------

    def open(self) -> None:
        """Take the state folder's lock (one host), then the output's lease (every host: see
        :mod:`batchgen.store.lease`); create the scratch folder, drop the scratch files a crash
        left."""
        make_output_dir(self._state_root, parents=True)
        ensure_real_dir(self._state_root / PRIVATE, self._state_root)
        if not self._shared:
            self._lock.acquire()
        try:
            if not self._shared:
                self.lease.acquire()
            ensure_real_dir(self._scratch, self._state_root)
            remove_temporaries(self._scratch, older_than=STALE_TEMPORARY if self._shared else 0.0)
            self._roller = threading.Thread(target=self._roll_when_due, name="batchgen-parts", daemon=True)
            self._roller.start()
        except BaseException:
            self._release()
            raise

    def close(self) -> None:
        """Put the part being filled, then release the lease and the lock."""
        self._stop.set()
        if self._roller is not None:
            self._roller.join()
            self._roller = None
        try:
            self.flush_manifest()
        except BatchgenError as exc:  # (its lines are in the state: the next open puts them)
            log.warning("the last manifest part of %s is not put (the next run puts it): %s", self.url, exc)
        finally:
            self._release()

    def _check_lease(self) -> None:
        """Before a put: the lease is still this run's (workers: their claims stand in for it)."""
        if not self._shared:
            self.lease.check()

    def _release(self) -> None:
        if not self._shared:
            self.lease.release()
            self._lock.release()

    def spill(self) -> Spill:
        """A scratch file in the local state folder (uploaded once verified)."""
        return TempFile(self._scratch)

    # -- images --------------------------------------------------------------------------------

    def put_image(
        self, stem: str, parts: list[bytes], spilled: Spill | None, *, max_pixels: int
    ) -> ImageRecord:
        """Verify an image, then put it once as ``images/<stem>.<ext>`` (see the module)."""
        if spilled is None:
            whole = parts[0] if len(parts) == 1 else b"".join(parts)
            info = inspect_image(whole, max_pixels=max_pixels)
            digest, size = hashlib.sha256(whole).hexdigest(), len(whole)
            body: bytes | Path = whole
        else:
            if not isinstance(spilled, TempFile):
                raise TypeError(
                    f"an object store cannot put {type(spilled).__name__}: spill through its spill()"
                )
            try:
                written = spilled.commit(sync=False)
                info = inspect_image(written.path, max_pixels=max_pixels)
            except BaseException:
                spilled.discard()
                raise
            digest, size, body = written.sha256, written.size, written.path
        key = f"{IMAGES}/{stem}.{info.extension}"
        try:
            self._put_once(key, body, digest)
        finally:
            if isinstance(body, Path):
                body.unlink(missing_ok=True)
        return ImageRecord(
            path=key,
            sha256=digest,
            bytes=size,
            content_type=info.content_type,
            width=info.width,
            height=info.height,
        )

    def _put_once(self, key: str, body: bytes | Path, digest: str) -> None:
        import obstore  # noqa: PLC0415
        from obstore.exceptions import AlreadyExistsError  # noqa: PLC0415

        self._check_lease()
        try:
            obstore.put(self.store, key, body, mode="create")
        except AlreadyExistsError:
            pass
        except Exception as exc:
            raise store_error(self.url, "put", key, exc) from exc
        else:
            return
        if self.sha256(key) == digest:
            return  # put by a run that crashed before its record: a finished upload
        self._check_lease()  # (a put that outlasted the lease must not replace what another run put)
        log.warning("%s/%s held other bytes that no record lists: replaced", self.url, key)
        self._call("put", key, lambda: obstore.put(self.store, key, body, mode="overwrite"))

    def make_durable(self) -> None:
        """Nothing to do: a put returns once its object is durable."""

    def image_size(self, path: str) -> int | None:
        """The object's size from a HEAD, None when there is none."""
        import obstore  # noqa: PLC0415

        try:
            return int(obstore.head(self.store, path)["size"])
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise store_error(self.url, "read", path, exc) from exc

    def read_bytes(self, path: str) -> bytes | None:
        """The object at ``path`` (relative to the output), None when there is none."""
        import obstore  # noqa: PLC0415

        try:
            return bytes(obstore.get(self.store, path).bytes())
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise store_error(self.url, "read", path, exc) from exc

    def sha256(self, path: str) -> str | None:
        """The SHA-256 of the object at ``path``, streamed; None when there is none."""
        import obstore  # noqa: PLC0415

        digest = hashlib.sha256()
        try:
            for chunk in obstore.get(self.store, path):
                digest.update(chunk)
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise store_error(self.url, "read", path, exc) from exc
        return digest.hexdigest()

    def put_file(self, path: str, data: bytes) -> None:
        """Put (or replace) a file of the output that is not write-once: the report, a thumbnail."""
        import obstore  # noqa: PLC0415

        self._call("put", path, lambda: obstore.put(self.store, path, data, mode="overwrite"))

    # -- the manifest --------------------------------------------------------------------------

    def manifest_parts(self) -> list[str]:
        """The manifest's part objects, in order."""
        import obstore  # noqa: PLC0415

        def listing() -> list[str]:
            return [
                entry["path"] for page in obstore.list(self.store, f"{MANIFEST_PARTS}/") for entry in page
            ]

        keys = self._call("list", f"{MANIFEST_PARTS}/", listing)
        numbered = sorted(
            (int(m.group(1)), key) for key in keys if (m := _PART.fullmatch(key.rsplit("/", 1)[-1]))
        )
        return [key for _, key in numbered]

    def manifest_lines(self) -> Iterator[bytes]:
        """Every manifest line, newline included, in order (one part in memory at a time)."""
        for key in self.manifest_parts():
            data = self.read_bytes(key)
            if data is None:
                raise StorageError(f"{self.url}/{key} vanished while the manifest was read")
            yield from data.splitlines(keepends=True)

    def manifest_repair(self, known: int) -> tuple[int, list[ManifestRecord]]:
        """Count the lines of every part; (that count, the records past the first ``known``).
        Parts are whole (puts are atomic): nothing is ever torn."""
        parts = self.manifest_parts()
        self._next_part = int(_PART.fullmatch(parts[-1].rsplit("/", 1)[-1]).group(1)) + 1 if parts else 0  # type: ignore[union-attr]
        count = 0
        extra: list[ManifestRecord] = []
        for line in self.manifest_lines():
            if count >= known:
                extra.append(ManifestRecord.model_validate_json(line))
            count += 1
            self._last_line = line
        return count, extra

    def manifest_last_line(self) -> bytes:
        """The last line of the last part (b"" when there is none)."""
        return self._last_line

    def manifest_append(self, lines: list[str]) -> None:
        """Add ``lines`` to the part being filled; put it (create-only) once it holds
        :data:`ROLL_BYTES` or its first line is :data:`ROLL_SECONDS` old (and at :meth:`close`).
        The lines are already committed in the state: a crash before the put loses none of
        them, the next open puts them again."""
        if not lines:
            return
        with self._parts:
            if not self._pending:
                self._pending_since = time.monotonic()
            self._pending += lines
            self._pending_bytes += sum(len(line) for line in lines)
            self._last_line = lines[-1].encode()
            full = self._pending_bytes >= ROLL_BYTES
        if full:
            self.flush_manifest()

    def _roll_when_due(self) -> None:
        """Put the part being filled once its first line is :data:`ROLL_SECONDS` old, even
        when no new record comes to fill it."""
        while not self._stop.wait(1.0):
            if self._pending and time.monotonic() - self._pending_since >= ROLL_SECONDS:
                try:
                    self.flush_manifest()
                except BatchgenError as exc:  # (the store's thread meets it at its next put)
                    log.warning("a manifest part of %s is not put yet: %s", self.url, exc)

    def flush_manifest(self) -> None:
        """Put the part being filled, if any, as the next part (create-only)."""
        import obstore  # noqa: PLC0415

        with self._parts:
            if not self._pending:
                return
            self._check_lease()
            data = "".join(self._pending).encode()
            key = manifest_part(self._next_part)
            self._call("put", key, lambda: obstore.put(self.store, key, data, mode="create"))
            self._next_part += 1
            self._pending, self._pending_bytes = [], 0

    def manifest_rewrite(self, lines: Iterable[str]) -> None:
        """Delete every part, then put ``lines`` as new parts. Only a part deleted by hand calls
        for this. A crash in between leaves fewer lines than the state holds: the next open puts
        the rest again. (Putting the new parts first would show no gap to a reader meanwhile, but
        a crash then leaves every record twice, which the next open would take for records of a
        lost state.)"""
        import obstore  # noqa: PLC0415

        for key in self.manifest_parts():
            self._call("delete", key, lambda key=key: obstore.delete(self.store, key))  # type: ignore[misc]
        with self._parts:
            self._next_part, self._last_line = 0, b""
            self._pending, self._pending_bytes = [], 0
        group: list[str] = []
        held = 0
        for line in lines:
            group.append(line)
            held += len(line)
            if held >= PART_BYTES:
                self.manifest_append(group)
                self.flush_manifest()
                group, held = [], 0
        if group:
            self.manifest_append(group)
            self.flush_manifest()

    def _call(self, verb: str, key: str, call: Any) -> Any:
        try:
            return call()
        except Exception as exc:
            raise store_error(self.url, verb, key, exc) from exc
