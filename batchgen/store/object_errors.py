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

    text, line = str(exc), first_line(exc)
    if isinstance(exc, PermissionError | PermissionDeniedError | UnauthenticatedError) or any(
        code in text
        for code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403 Forbidden")
    ):
        return OutputStoreError(f"{url}: access refused ({line})")
    if "NoSuchBucket" in text or (verb != "read" and isinstance(exc, FileNotFoundError | NotFoundError)):
        return OutputStoreError(f"{url}: no such bucket, or the endpoint does not serve it ({line})")
    if "builder error" in text and "http://" in text:
        return OutputStoreError(f"{url}: a plain-http endpoint needs AWS_ALLOW_HTTP=true ({line})")
    return StorageError(f"cannot {verb} {url}/{key}: {line}")
