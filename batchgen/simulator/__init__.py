"""A faithful, fault-injecting stand-in for the AIML API, for offline runs, tests and benchmarks.

It imports nothing from the rest of batchgen, so it checks batchgen against the docs instead of
against batchgen's own reading of them.

Example::

    sim = await start_simulator(FaultConfig(error_429=0.2, seed=7))
    ...  # point batchgen at sim.url with the key SIMULATOR_KEY
    await sim.close()
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from batchgen.simulator.faults import FaultConfig, SimulatorState

if TYPE_CHECKING:
    from batchgen.simulator.app import (
        SIMULATOR_KEY,
        VIOLATION_MARKER,
        RunningSimulator,
        create_app,
        start_simulator,
    )

_APP = {"SIMULATOR_KEY", "VIOLATION_MARKER", "RunningSimulator", "create_app", "start_simulator"}


def __getattr__(name: str) -> Any:
    # The server (aiohttp.web) is imported on first use: the command line needs only FaultConfig
    # to build its options.
    if name not in _APP:
        raise AttributeError(f"module 'batchgen.simulator' has no attribute {name!r}")
    return getattr(importlib.import_module("batchgen.simulator.app"), name)


__all__ = [
    "SIMULATOR_KEY",
    "VIOLATION_MARKER",
    "FaultConfig",
    "RunningSimulator",
    "SimulatorState",
    "create_app",
    "start_simulator",
]
