"""``batchgen simulate-server``: serve the simulated API until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from dataclasses import fields

from batchgen.commands import ExitCode
from batchgen.commands.options import DefaultsShown, port, probability, seconds_or_zero, whole
from batchgen.errors import UsageError
from batchgen.simulator import SIMULATOR_KEY, FaultConfig, start_simulator

FORMATTER = DefaultsShown
DESCRIPTION = "Fault options are probabilities 0..1 per request, except seconds, bytes and limits."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--host``, ``--port`` and one option per field of :class:`FaultConfig`."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=port, default=8000, help="port to listen on (0: any free one)")
    for f in fields(FaultConfig):
        kind = (
            (probability if f.metadata["help"].startswith("probability") else seconds_or_zero)
            if isinstance(f.default, float)
            else whole
        )
        parser.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f.name,
            type=kind,
            default=f.default,
            help=f.metadata["help"],
        )


def handle(args: argparse.Namespace) -> int:
    """Serve until interrupted. Raises :class:`UsageError` when the address cannot be bound."""
    config = FaultConfig(**{f.name: getattr(args, f.name) for f in fields(FaultConfig)})

    async def serve() -> None:
        try:
            simulator = await start_simulator(config, host=args.host, port=args.port)
        except OSError as exc:  # the port is taken, or the address is not this machine's
            raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from exc
        print(f"simulated AIML API at {simulator.url} (key: {SIMULATOR_KEY}); Ctrl-C stops it", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await simulator.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return ExitCode.OK
