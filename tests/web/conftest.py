"""Fixtures for the web console's browser tests: a real room server with TLS on 127.0.0.1 (its
web console on a port the OS picks), a real registry, Debian's chromium driven by Playwright.

Everything is bounded: Playwright waits at most :data:`UI_TIMEOUT_MS` for anything, the Python
Channel-API clients :data:`waits.TIMEOUT` seconds. Nothing sleeps to wait for something.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web
from browser import chromium
from channel_client import Client
from playwright.async_api import Browser
from waits import TIMEOUT
from webpage import PASSWORDS, SPEECH, WEB_ROOT, Pages, Tls, log_in
from websockets.asyncio.client import connect

from pttd.server.app import RoomServer, ServerSettings
from pttd.server.registry import Registry


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(cert_file)
    cert.private_key_pem.write_to_path(key_file)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(ca_file)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return Tls(cert_file, key_file, client, ca_file)


def add_user(reg: Registry, name: str, rooms: list[str], **flags: bool) -> None:
    """``Registry.add_user`` with the tests' password for ``name``."""
    reg.add_user(name, PASSWORDS[name], rooms, **flags)


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    """Rooms alpha and beta; alice (admin, emergency grant) and bob in both, carol in alpha."""
    reg = Registry(tmp_path / "registry.db")
    for room in ("alpha", "beta"):
        reg.add_room(room)
    add_user(reg, "alice", ["alpha", "beta"], admin=True, emergency=True)
    add_user(reg, "bob", ["alpha", "beta"])
    add_user(reg, "carol", ["alpha"])
    return reg


@pytest.fixture
def settings(tls: Tls) -> ServerSettings:
    """The room server's settings for these tests: its web console on a port the OS picks,
    started for tests (``web_test_tap``: a page opened with ``?tap=1`` keeps what it plays on
    window.pttdTap for the tests to read; a server's default is off)."""
    return ServerSettings(
        host="127.0.0.1",
        port=0,
        tls_cert=tls.cert_file,
        tls_key=tls.key_file,
        registry_poll=0.05,
        web_port=0,
        web_test_tap=True,
    )


@pytest.fixture
async def server(registry: Registry, settings: ServerSettings) -> AsyncIterator[RoomServer]:
    async with RoomServer(registry, settings) as srv:
        yield srv


@pytest.fixture
def console_url(server: RoomServer) -> str:
    """The web console's https:// address."""
    assert server.web_url is not None
    return server.web_url


@pytest.fixture
async def static_site(tls: Tls) -> AsyncIterator[str]:
    """The page's static files from a tiny aiohttp app of the test's own (https, same layout
    as the console: ``/static/…``), plus an empty page at ``/`` to import modules into. For
    testing the modules (channel.js) on their own, against the real room server."""
    app = web.Application()

    async def blank(_: web.Request) -> web.Response:
        return web.Response(
            text="<!doctype html><title>module test</title>", content_type="text/html"
        )

    app.router.add_get("/", blank)
    app.router.add_static("/static/", WEB_ROOT)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls.server())
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"https://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium(fake_audio=SPEECH) as b:
        yield b


@pytest.fixture
async def pages(browser: Browser) -> AsyncIterator[Pages]:
    opened = Pages(browser)
    yield opened
    await opened.close()
    assert not opened.errors, f"uncaught errors in the page: {opened.errors}"


@pytest.fixture
async def channel_clients(server: RoomServer, tls: Tls) -> AsyncIterator[Callable[..., Any]]:
    """Python Channel-API clients (tests/support/channel_client.py) logged on as a user."""
    made: list[Client] = []

    async def logged_on(user: str, rooms: tuple[str, ...] = ("alpha",)) -> Client:
        ws = await connect(server.url, ssl=tls.client, compression=None, open_timeout=TIMEOUT)
        client = Client(ws, timeout=TIMEOUT)
        made.append(client)
        answer = await client.logon(rooms, username=user, password=PASSWORDS[user])
        assert answer.success, answer
        return client

    yield logged_on
    for client in made:
        await client.close()


@pytest.fixture
def login() -> Callable[..., Awaitable[None]]:
    """``await login(page, url, user[, password])``: through the form, up to the talk view."""
    return log_in
