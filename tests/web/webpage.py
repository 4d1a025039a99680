"""Shared helpers of the web console's browser tests (tests/web): constants, the page opener,
logging in through the form. The fixtures that use them are in tests/web/conftest.py.

Importable from the test modules of tests/web (pytest puts the folder on ``sys.path``); the
module name is unique in the tree.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path

from browser import new_context
from playwright.async_api import Browser, BrowserContext, Page, expect

WEB_ROOT = Path(__file__).resolve().parents[2] / "device" / "pttd" / "web"
SPEECH = Path(__file__).resolve().parents[2] / "device" / "pttd" / "data" / "speech.wav"
UI_TIMEOUT_MS = 10_000
PASSWORDS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret"}

expect.set_options(timeout=UI_TIMEOUT_MS)


@dataclass
class Tls:
    cert_file: Path
    key_file: Path
    client: ssl.SSLContext  # trusts the throwaway CA

    def server(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


@dataclass
class Pages:
    """Opens pages in fresh browser profiles; uncaught page errors fail the test."""

    browser: Browser
    contexts: list[BrowserContext] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    async def open(self, url: str | None = None, *, phone: bool = False) -> Page:
        context = await new_context(self.browser, phone=phone)
        context.set_default_timeout(UI_TIMEOUT_MS)
        self.contexts.append(context)
        page = await context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(f"{page.url}: {exc}"))
        if url is not None:
            await page.goto(url)
        return page

    async def close(self) -> None:
        for context in self.contexts:
            await context.close()


async def log_in(page: Page, url: str, user: str, password: str | None = None) -> None:
    """Log in through the form, and wait for the talk view."""
    await page.goto(url)
    await page.get_by_label("User name").fill(user)
    await page.get_by_label("Password", exact=True).fill(password or PASSWORDS[user])
    await page.get_by_role("button", name="Log in").click()
    await expect(page.locator("#talk-view")).to_be_visible()
