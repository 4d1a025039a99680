"""Fixtures for room-server tests: a real server on 127.0.0.1 and real websockets clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from channel_client import Client, Connect
from websockets.asyncio.client import connect

from pttd.server.app import RoomServer, ServerSettings
from pttd.server.registry import Registry
from pttd.wire import messages as p

CLIENT_TIMEOUT = 5.0  # how long a server-test client waits for an answer or an event


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    reg = Registry(tmp_path / "registry.db")
    for room in ("alpha", "beta", "gamma"):
        reg.add_room(room)
    reg.add_user("alice", "alice-secret", ["alpha", "beta"])
    reg.add_user("bob", "bob-secret", ["alpha", "beta"])
    reg.add_user("carol", "carol-secret", ["alpha"])
    return reg


@pytest.fixture
def settings() -> ServerSettings:
    return ServerSettings(host="127.0.0.1", port=0, registry_poll=0.05)


@pytest.fixture
async def server(registry: Registry, settings: ServerSettings) -> AsyncIterator[RoomServer]:
    async with RoomServer(registry, settings) as srv:
        yield srv


@pytest.fixture
async def connect_client(server: RoomServer) -> AsyncIterator[Connect]:
    clients: list[Client] = []

    async def make(**kwargs: Any) -> Client:
        ws = await connect(server.url, compression=None, **kwargs)
        client = Client(ws, timeout=CLIENT_TIMEOUT)
        clients.append(client)
        return client

    yield make
    for c in clients:
        await c.close()


@pytest.fixture
async def logged_on(connect_client: Connect) -> Callable[..., Any]:
    """Connect and log on as a user with a password; returns the client."""

    async def make(user: str, rooms: tuple[str, ...] = ("alpha",), **extra: Any) -> Client:
        client: Client = await connect_client()
        answer = await client.logon(rooms, username=user, password=f"{user}-secret", **extra)
        assert answer.success, answer
        for _ in rooms:
            await client.next_of(p.OnChannelStatus)
        return client

    return make
