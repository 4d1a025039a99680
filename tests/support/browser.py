"""A real headless browser for the web console's tests: Debian's chromium driven by Playwright.

Playwright never downloads a browser here: it launches ``/usr/bin/chromium`` (``scripts/setup``
installs the Debian package). The microphone is Chromium's fake capture device playing a WAV file,
and nothing asks for permission. Screenshots go to ``$PTTD_ARTIFACTS/screenshots`` (default
``artifacts/screenshots`` at the top of the repository, which git ignores): artifacts of the
run, not committed.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from pttd.bench.browser import CHROMIUM, chromium_args, chromium_path

REPO = Path(__file__).resolve().parents[2]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
LAUNCH_TIMEOUT_MS = 30_000


@asynccontextmanager
async def chromium(fake_audio: Path | None = None) -> AsyncIterator[Browser]:
    """A headless Debian chromium, closed at the end."""
    path = chromium_path()
    if path is None:
        raise RuntimeError(f"{CHROMIUM} is not installed: run scripts/setup")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=path,
            headless=True,
            args=chromium_args(fake_audio),
            timeout=LAUNCH_TIMEOUT_MS,
        )
        try:
            yield browser
        finally:
            await browser.close()


async def new_context(browser: Browser, *, phone: bool = False, tls: bool = True) -> BrowserContext:
    """A fresh profile (its own cookies and storage). ``tls``: the tests' throwaway CA is not
    in chromium's store, so certificate errors are ignored (the tests check the certificate
    elsewhere; what matters here is that the page runs on https, where Secure cookies live)."""
    viewport = PHONE if phone else DESKTOP
    return await browser.new_context(
        viewport=viewport,  # type: ignore[arg-type]
        is_mobile=phone,
        has_touch=phone,
        ignore_https_errors=tls,
    )


def artifacts_dir() -> Path:
    base = Path(os.environ.get("PTTD_ARTIFACTS", REPO / "artifacts"))
    out = base / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    return out


async def screenshot(page: Page, name: str) -> Path:
    """Save a full-page screenshot as an artifact of the run; the file's path."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")
    path = artifacts_dir() / f"{safe}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path
