"""A bare ``websockets`` broadcast server: the yardstick for pttd's relay in ``pttd bench server``.

Every binary message from a connection goes to every other connection with
``websockets.asyncio.server.broadcast`` and nothing more: no logon, no rooms, no floor, no checks.
Text messages are ignored. Same websocket settings as pttd's server (no compression, the same
``max_size``, the same keepalive), so the difference measured is pttd's own work.

Run as ``python -m pttd.bench.baseline --port 0``; it prints
``baseline listening on ws://127.0.0.1:PORT`` once it accepts connections, and stops on SIGTERM
or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Final

from websockets.asyncio.server import ServerConnection, broadcast, serve

from pttd.cliargs import port
from pttd.wire.messages import MAX_FRAME

log = logging.getLogger(__name__)

READY_PREFIX: Final = "baseline listening on "
PING_INTERVAL: Final = 30.0  # as pttd's ServerSettings
PING_TIMEOUT: Final = 30.0


async def serve_baseline(
    host: str = "127.0.0.1", port: int = 0, ready: Callable[[str], None] | None = None
) -> None:
    """Relay binary messages to every other connection until cancelled."""
    connections: set[ServerConnection] = set()

    async def relay(ws: ServerConnection) -> None:
        connections.add(ws)
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    broadcast([c for c in connections if c is not ws], message)
        finally:
            connections.discard(ws)

    async with serve(
        relay,
        host,
        port,
        compression=None,
        max_size=MAX_FRAME,
        ping_interval=PING_INTERVAL,
        ping_timeout=PING_TIMEOUT,
    ) as server:
        bound_host, bound_port = next(iter(server.sockets)).getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        url = f"ws://{shown}:{bound_port}"
        log.info("listening on %s", url)
        if ready is not None:
            ready(url)
        await asyncio.Future()  # until cancelled


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pttd.bench.baseline",
        description="A bare websockets broadcast server (the baseline of pttd bench server).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=port, default=0, help="0: the OS picks")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def ready(url: str) -> None:
        print(f"{READY_PREFIX}{url}", flush=True)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        await serve_baseline(args.host, args.port, ready)

    with contextlib.suppress(asyncio.CancelledError):
        asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
