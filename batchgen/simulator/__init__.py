"""A faithful, fault-injecting stand-in for the AIML API, for offline runs, tests and benchmarks.

It imports nothing from the rest of batchgen, so it checks batchgen against the docs instead of
against batchgen's own reading of them.

Example::

    sim = await start_simulator(FaultConfig(error_429=0.2, seed=7))
    ...  # point batchgen at sim.url with the key SIMULATOR_KEY
    await sim.close()
"""

from batchgen.simulator.app import (
    SIMULATOR_KEY,
    VIOLATION_MARKER,
    RunningSimulator,
    create_app,
    start_simulator,
)
from batchgen.simulator.faults import FaultConfig, SimulatorState

__all__ = [
    "SIMULATOR_KEY",
    "VIOLATION_MARKER",
    "FaultConfig",
    "RunningSimulator",
    "SimulatorState",
    "create_app",
    "start_simulator",
]
