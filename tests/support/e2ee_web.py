"""The browser E2EE modules (device/pttd/web/e2ee/*.js) in a real chromium, for tests/web.

A tiny aiohttp app on 127.0.0.1 (a secure context, so WebCrypto and IndexedDB work without TLS)
serves ``device/pttd/web`` under ``/static/`` and an empty page at ``/``; the tests call the
modules with :meth:`E2eePage.call`, which imports them in the page and runs a function there.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from browser import REPO, chromium, new_context
from playwright.async_api import BrowserContext, Page

WEB = REPO / "device" / "pttd" / "web"
CALL_TIMEOUT_MS = 60_000

_BLANK = "<!doctype html><html lang=en><meta charset=utf-8><title>pttd e2ee test</title></html>"


async def _index(_request: web.Request) -> web.Response:
    return web.Response(text=_BLANK, content_type="text/html")


def _no_cache(app: web.Application) -> None:
    async def headers(_request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Cache-Control"] = "no-store"

    app.on_response_prepare.append(headers)


@asynccontextmanager
async def static_server() -> AsyncIterator[str]:
    """Serve the web directory; yields the base URL (``http://127.0.0.1:PORT``)."""
    app = web.Application()
    app.router.add_get("/", _index)
    app.router.add_static("/static/", WEB)
    _no_cache(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@dataclass
class E2eePage:
    page: Page
    context: BrowserContext
    base: str

    async def call(self, body: str, arg: Any = None) -> Any:
        """Run ``body`` (the inside of an async function of ``arg``, with the modules as
        ``e2ee``, ``sframe``, ``identity``, ``bundle``, ``bytes``) in the page; its result."""
        script = (
            "async (arg) => {"
            " const e2ee = await import('/static/e2ee/index.js');"
            " const sframe = await import('/static/e2ee/sframe.js');"
            " const identity = await import('/static/e2ee/identity.js');"
            " const bundle = await import('/static/e2ee/bundle.js');"
            " const bytes = await import('/static/e2ee/bytes.js');"
            f" {body}\n}}"
        )
        return await asyncio.wait_for(self.page.evaluate(script, arg), CALL_TIMEOUT_MS / 1000)

    async def reload(self) -> None:
        await self.page.reload(wait_until="load")


@asynccontextmanager
async def e2ee_page() -> AsyncIterator[E2eePage]:
    """A fresh browser profile on the test page, its console errors kept in ``errors``."""
    async with static_server() as base, chromium() as browser:
        context = await new_context(browser, tls=False)
        page = await context.new_page()
        page.set_default_timeout(CALL_TIMEOUT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(base + "/", wait_until="load")
        try:
            yield E2eePage(page, context, base)
        finally:
            await context.close()
        assert not errors, json.dumps(errors)
