"""Fixtures for the reliability suite: a registry with rooms and users, an in-process room server
with short keepalive timeouts on 127.0.0.1 (port picked by the OS)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from relkit import PASSWORDS, fast_server_settings

from pttd.server.app import RoomServer, ServerSettings
from pttd.server.registry import Registry


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    reg = Registry(tmp_path / "registry.db")
    for room in ("alpha", "beta"):
        reg.add_room(room)
    reg.add_user("alice", PASSWORDS["alice"], ["alpha", "beta"])
    reg.add_user("bob", PASSWORDS["bob"], ["alpha"])
    reg.add_user("mallory", PASSWORDS["mallory"], ["beta"])  # never in alpha
    yield reg
    reg.close()


@pytest.fixture
def settings() -> ServerSettings:
    return fast_server_settings()


@pytest.fixture
async def server(registry: Registry, settings: ServerSettings) -> AsyncIterator[RoomServer]:
    async with RoomServer(registry, settings) as srv:
        yield srv
