"""A ``Retry-After`` an earlier run was given, honoured before a run sends anything (kept in
the folder: a run stopped by one, run again at once, waits out what is left of it)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from batchgen.api.client import MAX_RETRY_AFTER
from batchgen.errors import LONG_RETRY_AFTER, RateLimited
from batchgen.run.control import RunControl
from batchgen.run.retry import Interrupted
from batchgen.settings import Settings
from batchgen.store import OutputFolder

__all__ = ["wait_out_retry_after"]

log = logging.getLogger("batchgen.run.runner")


async def wait_out_retry_after(
    folder: OutputFolder, settings: Settings, control: RunControl, stop: Callable[[BaseException], None]
) -> bool:
    """Honour a Retry-After an earlier run was given (at most :data:`MAX_RETRY_AFTER` from
    now, whatever the folder holds; ``--ignore-retry-after`` clears it); False when the run
    must not start (``stop`` is told why)."""
    if settings.ignore_retry_after:
        await folder.set_not_before(0)
        return True
    wait = min(await folder.not_before() - time.time(), MAX_RETRY_AFTER)
    if wait <= 0:
        return True
    if wait > LONG_RETRY_AFTER:
        until = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() + wait))
        stop(
            RateLimited(
                f"the API asked an earlier run to wait until {until} (Retry-After);"
                " --ignore-retry-after starts now",
                long_wait=True,
            )
        )
        return False
    log.info("an earlier run was asked to wait (Retry-After): starting in %.1fs", wait)
    try:
        await control.unless_stopped(asyncio.sleep(wait))
    except Interrupted:
        return False
    return True
