"""Helpers for the device integration tests: real room server, real devices, a listening client.

Everything here is a real part or a thin observer of one: a :class:`RoomServer` on 127.0.0.1 with
an OS-picked port and a registry in the test's directory, devices paired through the real pairing
flow (:func:`pttd.radio.link.pair`) and built as every simulated device is
(:class:`pttd.sim.device.SimDevice`), a Channel-API client that logs on as a user and records
what it hears, and a TCP relay whose server-to-device direction a test can hold (to keep a
device waiting for the floor).

Waits are bounded (:data:`TIMEOUT`, generous for a loaded machine) and wait for a state, never
for a time; nothing asserts on speed. ``eventually`` is the one in ``tests/support/waits.py``,
imported here for the tests that take it from this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from channel_client import Client
from waits import eventually as eventually  # re-exported: test_link.py, test_device_link.py

from pttd.radio.config import Config
from pttd.radio.inputs import Input
from pttd.radio.link import LinkSettings, pair
from pttd.radio.machine import Event, Link, Talk
from pttd.radio.store import Credential, Store
from pttd.server.app import RoomServer, ServerSettings
from pttd.server.registry import Registry
from pttd.sim.device import SimDevice, sim_config

TIMEOUT = 15.0  # every wait is bounded by this; generous for a loaded 2-core machine
ROOM = "demo"
OTHER_ROOM = "ops"
LISTENER = "listener"
LISTENER_PASSWORD = "listener-secret"
RATE = 48000


# --------------------------------------------------------------------------- devices


@dataclass(frozen=True, slots=True)
class Snap:
    """The device as it stood right after one event was handled and its actions carried out."""

    event: Event
    talk: Talk
    link: Link
    capture_open: bool  # what the state machine says
    mic_open: bool  # what the audio input is doing
    transmit_lit: bool  # the transmit LED


@dataclass
class RunningDevice(SimDevice):
    """A simulated device (:class:`SimDevice`) that can also record a :class:`Snap` after every
    event it handles."""

    snaps: list[Snap] = field(default_factory=list)

    def observe(self) -> None:
        """Record a :class:`Snap` after every event: wraps ``Device.feed`` (the one way events
        reach the machine) without changing what it does."""
        feed = self.device.feed

        def observed(event: Event) -> None:
            feed(event)
            m = self.device.machine
            self.snaps.append(
                Snap(
                    event,
                    m.talk,
                    m.link,
                    m.capture_open,
                    self.mic.is_open,
                    self.device.leds.transmit.is_lit,
                )
            )

        self.device.feed = observed  # type: ignore[method-assign]


# Kept for tests/e2e/test_link.py (changed in parallel): the config is the one every simulated
# device has.
device_config = sim_config


def make_device(config: Config, **build: Any) -> RunningDevice:
    """A device as :meth:`SimDevice.build` makes them (a looping 440 Hz 'voice', a recording
    speaker that keeps 10 s, a :class:`SimulatedButton` after the configured inputs), its waits
    bounded by :data:`TIMEOUT`."""
    build = {"restart_on_open": False, "keep_seconds": 10.0, "timeout": TIMEOUT, **build}
    return RunningDevice.build(config, **build)


# --------------------------------------------------------------------------- the server side


class Rig:
    """A room server on 127.0.0.1 (OS-picked port) over a registry file, and what talks to it."""

    def __init__(self, directory: Path, settings: ServerSettings | None = None) -> None:
        self.directory = directory
        self.db_path = directory / "server.db"
        self.registry = Registry(self.db_path)
        self.registry.add_room(ROOM)
        self.registry.add_room(OTHER_ROOM)
        self.registry.add_user(LISTENER, LISTENER_PASSWORD, [ROOM, OTHER_ROOM])
        self.settings = settings or ServerSettings(host="127.0.0.1", port=0, registry_poll=0.05)
        self.server: RoomServer | None = None
        self.port = 0
        self.devices: list[RunningDevice] = []
        self.listeners: list[Client] = []
        self._cleanups: list[Callable[[], Awaitable[object]]] = []

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start_server(self) -> RoomServer:
        """Start a room server; a restart binds the port the first one had."""
        server = RoomServer(self.registry, dataclasses.replace(self.settings, port=self.port))
        await server.start()
        self.server, self.port = server, server.port
        return server

    async def stop_server(self) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            await server.close()

    async def credential(
        self, name: str, rooms: Sequence[str] = (ROOM,), *, url: str | None = None
    ) -> Credential:
        """A credential from the real pairing flow: an admin's code, redeemed over the wire."""
        code = await asyncio.to_thread(self.registry.create_pair_code, list(rooms))
        return await pair(url or self.url, code.code, name, LinkSettings())

    def state_dir(self, name: str) -> Path:
        return self.directory / "state" / name

    async def paired_config(
        self,
        name: str,
        rooms: Sequence[str] = (ROOM,),
        *,
        server_url: str | None = None,
        **config: Any,
    ) -> Config:
        """A device config whose state directory holds a fresh credential (for ``server_url``,
        if given: the link connects to the credential's server)."""
        credential = await self.credential(name, rooms)
        if server_url is not None:
            credential = dataclasses.replace(credential, server_url=server_url)
        Store(self.state_dir(name)).save_credential(credential)
        return sim_config(name, self.url, self.state_dir(name), **config)

    async def run_device(
        self,
        config: Config,
        *,
        inputs: Sequence[Input] = (),
        pin_factory: object | None = None,
        observe: bool = False,
        online: bool = True,
    ) -> RunningDevice:
        device = make_device(config, inputs=inputs, pin_factory=pin_factory)
        if observe:
            device.observe()
        self.devices.append(device)
        await device.start()
        if online:
            await device.online()
        return device

    async def device(
        self,
        name: str,
        rooms: Sequence[str] = (ROOM,),
        *,
        inputs: Sequence[Input] = (),
        pin_factory: object | None = None,
        observe: bool = False,
        **config: Any,
    ) -> RunningDevice:
        """A paired device, running and online."""
        cfg = await self.paired_config(name, rooms, **config)
        return await self.run_device(cfg, inputs=inputs, pin_factory=pin_factory, observe=observe)

    async def listener(self, rooms: Sequence[str] = (ROOM,)) -> Client:
        """A Channel-API client logged on as the user :data:`LISTENER`: it records every event
        and audio packet (see :class:`Client`)."""
        listener = await Client.connect(self.url, TIMEOUT)
        self.listeners.append(listener)
        answer = await listener.logon(tuple(rooms), username=LISTENER, password=LISTENER_PASSWORD)
        assert answer.success, answer
        return listener

    def on_close(self, cleanup: Callable[[], Awaitable[object]]) -> None:
        self._cleanups.append(cleanup)

    async def close(self) -> None:
        for device in self.devices:
            with contextlib.suppress(Exception):
                await device.stop()
        for listener in self.listeners:
            with contextlib.suppress(Exception):
                await listener.close()
        for cleanup in reversed(self._cleanups):
            with contextlib.suppress(Exception):
                await cleanup()
        await self.stop_server()
        self.registry.close()


# --------------------------------------------------------------------------- a holdable relay


class HoldingRelay:
    """A TCP relay from a device to the server. While :attr:`held`, bytes from the server to the
    device wait in the relay (the device's requests still reach the server at once)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.released = asyncio.Event()
        self.released.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}"

    def hold(self) -> None:
        self.released.clear()

    def release(self) -> None:
        self.released.set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(
                self._pump(reader, up_writer, None), self._pump(up_reader, writer, self.released)
            )
        finally:
            self._tasks.discard(task)

    @staticmethod
    async def _pump(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, gate: asyncio.Event | None
    ) -> None:
        try:
            while data := await reader.read(65536):
                if gate is not None:
                    await gate.wait()
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        self.release()
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
