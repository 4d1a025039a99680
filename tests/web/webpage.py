"""Shared helpers of the web console's browser tests (tests/web): constants, the page opener,
logging in through the form. The fixtures that use them are in tests/web/conftest.py.

Importable from the test modules of tests/web (pytest puts the folder on ``sys.path``); the
module name is unique in the tree.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from browser import new_context
from playwright.async_api import Browser, BrowserContext, Page, Route, expect

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
    ca_file: Path | None = None  # the throwaway CA's certificate (PEM), for a radio to trust

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

    async def open(
        self,
        url: str | None = None,
        *,
        phone: bool = False,
        fake_audio: bool = False,
        e2ee_js: str | None = None,
    ) -> Page:
        """A page in a fresh profile; ``fake_audio``: audio.js is :data:`FAKE_AUDIO_JS` and
        window.trace records what the page does; ``e2ee_js``: e2ee/index.js is that text."""
        context = await new_context(self.browser, phone=phone)
        context.set_default_timeout(UI_TIMEOUT_MS)
        self.contexts.append(context)
        if fake_audio:
            await context.add_init_script(TRACE_SOCKET)
            await context.route("**/static/audio.js", _module(FAKE_AUDIO_JS))
        if e2ee_js is not None:
            await context.route("**/static/e2ee/index.js", _module(e2ee_js))
        page = await context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(f"{page.url}: {exc}"))
        if url is not None:
            await page.goto(url)
        return page

    async def close(self) -> None:
        for context in self.contexts:
            await context.close()


def _module(text: str) -> Callable[[Route], Awaitable[None]]:
    async def fulfil(route: Route) -> None:
        await route.fulfill(status=200, content_type="text/javascript", body=text)

    return fulfil


async def log_in(page: Page, url: str, user: str, password: str | None = None) -> None:
    """Log in through the form, and wait for the talk view."""
    await page.goto(url)
    await page.get_by_label("User name").fill(user)
    await page.get_by_label("Password", exact=True).fill(password or PASSWORDS[user])
    await page.get_by_role("button", name="Log in").click()
    await expect(page.locator("#talk-view")).to_be_visible()


# A stand-in for audio.js (the design's AudioEngine interface) for tests of the page's views and
# talk flow: it records every call in window.trace (with the Channel-API frames the page sends,
# see TRACE_SOCKET) and, while capturing, hands the page a fake 20 ms "Opus packet" every 20 ms.
# The real engine has tests of its own; routed in by Pages.open(fake_audio=True).
FAKE_AUDIO_JS = """
export class AudioEngine {
  async init() { window.trace.push('init'); }
  startPlayback(id) { window.trace.push(`startPlayback ${id}`); }
  pushPacket(id, bytes) { window.heard = (window.heard ?? 0) + 1; }
  stopPlayback(id) { window.trace.push(`stopPlayback ${id}`); }
  async startCapture(onPacket) {
    window.trace.push('startCapture');
    let n = 0;
    this.timer = setInterval(() => {
      n += 1;
      onPacket(new Uint8Array([0xf8, n & 0xff, 1, 2]));
    }, 20);
  }
  stopCapture() {
    if (this.timer !== undefined) window.trace.push('stopCapture');
    clearInterval(this.timer);
    this.timer = undefined;
  }
  playCue(name) { window.trace.push(`cue ${name}`); }
}
"""

# Before the page's scripts: window.trace, and every text frame the page sends on a WebSocket
# recorded there as "send <command>".
TRACE_SOCKET = """
window.trace = [];
const send = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) {
  if (typeof data === 'string') {
    try { window.trace.push(`send ${JSON.parse(data).command}`); } catch {}
  }
  return send.call(this, data);
};
"""


def fake_e2ee_js(key_text: str, digits: str) -> str:
    """A stand-in for e2ee/index.js whose identity is a real public key made by the test (so the
    server takes it) and which holds no room key: the page waits for approval."""
    groups = digits.split()
    return f"""
export async function loadIdentity({{persist}}) {{
  return {{keyText: {key_text!r}, fingerprint: {"".join(groups)!r}, groups: {groups!r}}};
}}
export async function forgetIdentity() {{ window.forgotten = true; }}
export class RoomKeys {{
  constructor(identity, authority, member) {{ this.member = member; }}
  async addRoomKey(message) {{ throw new Error('not signed by this room\\'s key authority'); }}
  hasKey(room) {{ return false; }}
  async seal(room, bytes) {{ throw new Error('no key'); }}
  async open(room, bytes) {{ throw new Error('no key'); }}
  codecHeaderSuite() {{ return 1; }}
}}
"""
