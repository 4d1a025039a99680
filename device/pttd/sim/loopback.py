"""A room server on loopback with a temporary registry, and simulated devices paired with it
through the real pairing flow: what the demo, the benchmarks and the console tests run on."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pttd.e2ee.authority import Authority
from pttd.radio.audio import Pcm
from pttd.radio.config import AudioConfig
from pttd.radio.link import LinkSettings, pair, with_identity
from pttd.radio.store import Store
from pttd.server import keys
from pttd.server.app import RoomServer, ServerSettings
from pttd.server.registry import Registry
from pttd.sim.device import SimDevice, sim_config

ROOM = "demo"


@dataclass
class Loopback:
    """A room server on loopback with a temporary registry, and paired simulated devices."""

    directory: Path
    registry: Registry
    server: RoomServer
    devices: list[SimDevice] = field(default_factory=list)
    authority: Authority | None = None  # the key authority of its encrypted rooms, if any

    def add_encrypted_room(self, room: str) -> None:
        """An end-to-end encrypted room, and the key authority (made on the fly, its key file in
        the temporary directory) that devices paired from now on learn of with their pairing."""
        if self.authority is None:
            self.authority = Authority.create(self.directory / "authority.json")
            self.registry.set_authority_key(self.authority.public_key.to_text())
        self.registry.add_room(room, encrypted=True)

    async def approve(self, sim: SimDevice) -> list[str]:
        """The admin approves a device for its encrypted rooms by the fingerprint its console
        shows (as an installer would read it out), once it has logged on with its key."""
        assert self.authority is not None, "no encrypted room"
        fingerprint = sim.device.fingerprint
        assert fingerprint is not None, f"{sim.name} has no identity key"
        authority, credential = self.authority, sim.device.credential
        assert credential is not None

        def admin() -> list[str]:  # as the admin's own process: the server notices its writes
            with Registry(self.registry.path) as registry:
                return keys.approve(authority, registry, credential.device_name, fingerprint)

        return await asyncio.to_thread(admin)

    async def add_device(
        self,
        name: str,
        mic_signal: Pcm | None = None,
        audio: AudioConfig | None = None,
        *,
        url: str | None = None,
        rooms: Sequence[str] = (ROOM,),
        **build: Any,
    ) -> SimDevice:
        """Pair a new simulated device with the server (for ``rooms``) and start it. ``url``:
        the address it connects to once paired, if not the server's own (a proxy in front of it:
        the benches); ``build``: :meth:`SimDevice.build`'s options."""
        code = await asyncio.to_thread(self.registry.create_pair_code, list(rooms))
        credential = await pair(self.server.url, code.code, name, LinkSettings())
        if url is not None:
            credential = replace(credential, server_url=url)
        store = Store(self.directory / name)
        authority = self.authority.public_key.to_text() if self.authority else None
        credential = with_identity(credential, store, authority)
        store.save_credential(credential)
        state = self.directory / name
        config = sim_config(name, credential.server_url, state, audio)
        sim = SimDevice.build(config, mic_signal, **build)
        await sim.start()
        self.devices.append(sim)
        return sim


@contextlib.asynccontextmanager
async def loopback(settings: ServerSettings | None = None) -> AsyncIterator[Loopback]:
    """A :class:`Loopback` with room :data:`ROOM`; its devices are stopped on the way out."""
    with tempfile.TemporaryDirectory(prefix="pttd-sim-") as tmp:
        directory = Path(tmp)
        registry = Registry(directory / "server.db")
        registry.add_room(ROOM)
        server = RoomServer(registry, settings or ServerSettings(host="127.0.0.1", port=0))
        await server.start()
        world = Loopback(directory, registry, server)
        try:
            yield world
        finally:
            for sim in world.devices:
                await sim.stop()
            await server.close()
            registry.close()
