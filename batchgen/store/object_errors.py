"""What a failed call on an object store means for the user (obstore's errors are long debug
dumps of the request): no bucket or refused credentials, which waiting will not change, or a
failure a later run may not meet."""

from __future__ import annotations

from batchgen.errors import BatchgenError, OutputStoreError, StorageError

__all__ = ["first_line", "store_error"]


def first_line(exc: BaseException) -> str:
    """An obstore error's first line, cut to 300 characters (the rest is a debug dump)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def store_error(url: str, verb: str, key: str, exc: Exception) -> BatchgenError:
    """What a failed call on the store means for the user: no bucket or refused credentials
    (:class:`OutputStoreError`, exit 2: waiting will not help), else a :class:`StorageError`
    (a later run may not meet it)."""
    from obstore.exceptions import NotFoundError, PermissionDeniedError, UnauthenticatedError  # noqa: PLC0415

    line = first_line(exc)  # (not the whole dump: it names keys, which are job ids)
    if isinstance(exc, PermissionError | PermissionDeniedError | UnauthenticatedError) or any(
        code in line
        for code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403 Forbidden")
    ):
        return OutputStoreError(f"{url}: access refused ({line})")
    missing = isinstance(exc, FileNotFoundError | NotFoundError)
    if "NoSuchBucket" in line or (missing and verb in ("put", "list")):
        return OutputStoreError(f"{url}: no such bucket, or the endpoint does not serve it ({line})")
    if "builder error" in line and "http://" in line:
        return OutputStoreError(f"{url}: a plain-http endpoint needs AWS_ALLOW_HTTP=true ({line})")
    return StorageError(f"cannot {verb} {url}/{key}: {line}")
