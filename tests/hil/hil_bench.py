"""The hardware-in-loop bench around the device under test (imported by conftest and the tests:
a module of its own, since `conftest` names clash across test folders)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from channel_client import Client
from hil_rig import Rig

from pttd.radio.daemon import Device
from pttd.server.app import RoomServer
from pttd.wire import messages as p

ROOM = "bench"
TIMEOUT = 10.0


@dataclass
class Bench:
    """The room server, the device under test on the rig, and a listener in the room."""

    rig: Rig
    server: RoomServer
    device: Device
    listener: Client
    task: asyncio.Task[None]

    async def next_audio(self, timeout: float = TIMEOUT) -> p.AudioPacket:
        return await self.listener.next_of(p.AudioPacket, timeout)

    async def until(self, check: Any, timeout: float = TIMEOUT) -> None:
        async with asyncio.timeout(timeout):
            await self.device.until(check)
