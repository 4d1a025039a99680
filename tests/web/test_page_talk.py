"""The listen/talk view in a real chromium against the real room server and its web console:
presence and talk from Python protocol clients shown live, talking with the button (pointer)
and the space bar (keyboard only), busy, pre-emption, and an encrypted room waiting for
approval. audio.js is the tests' stand-in (webpage.FAKE_AUDIO_JS), which traces what the page
does with the microphone and cues."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import aiohttp
from channel_client import Client
from playwright.async_api import Page, expect
from waits import TIMEOUT
from webpage import UI_TIMEOUT_MS, Pages, Tls, fake_e2ee_js
from websockets.asyncio.client import connect

from pttd.e2ee.keys import AuthorityKey, IdentityKey
from pttd.server.app import RoomServer, ServerSettings
from pttd.server.registry import Registry
from pttd.wire import messages as p

Login = Callable[..., Awaitable[None]]


async def trace(page: Page) -> list[str]:
    result: list[str] = await page.evaluate("window.trace.slice()")
    return result


async def traced(page: Page, entry: str) -> None:
    await page.wait_for_function(
        "(e) => window.trace.includes(e)", arg=entry, timeout=UI_TIMEOUT_MS
    )


async def focus_talk_by_tab(page: Page) -> None:
    for _ in range(40):
        if await page.evaluate("document.activeElement?.id === 'talk'"):
            return
        await page.keyboard.press("Tab")
    raise AssertionError("the talk button never got the focus by Tab")


async def test_presence_and_a_radio_talk_shown_live(
    pages: Pages, console_url: str, login: Login, channel_clients: Callable[..., Any]
) -> None:
    page = await pages.open(fake_audio=True)
    await login(page, console_url, "alice")
    await expect(page.locator("#link-state")).to_have_text("online")
    online = page.locator("#online-list .member-name")
    await expect(online).to_have_text(["alice"])
    bob: Client = await channel_clients("bob", ("alpha",))
    await expect(online).to_have_text(["alice", "bob"], use_inner_text=True)
    answer = await bob.start("alpha")
    assert answer.success and answer.stream_id is not None
    await expect(page.locator("#talker")).to_have_text("bob is talking")
    await expect(page.locator("#room-list [data-room=alpha] .room-meta")).to_contain_text(
        "bob is talking"
    )
    await traced(page, f"startPlayback {answer.stream_id}")
    for i in range(5):
        await bob.send_audio(answer.stream_id, bytes([0xF8, i, 1]))
    await page.wait_for_function("() => window.heard === 5", timeout=UI_TIMEOUT_MS)
    assert (await bob.stop(answer.stream_id)).success
    await traced(page, f"stopPlayback {answer.stream_id}")
    await expect(page.locator("#talker")).to_have_text("")
    await bob.close()  # gone from the list without a reload
    await expect(online).to_have_text(["alice"])


async def test_hold_the_button_to_talk(
    pages: Pages, console_url: str, login: Login, channel_clients: Callable[..., Any]
) -> None:
    bob: Client = await channel_clients("bob", ("alpha",))
    page = await pages.open(fake_audio=True)
    await login(page, console_url, "carol")
    button = page.get_by_role("button", name="Hold to talk")
    await expect(button).to_be_enabled()
    await expect(button).to_have_attribute("aria-pressed", "false")
    await button.hover()
    await page.mouse.down()
    start = await bob.next_of(p.OnStreamStart)
    assert (start.from_, start.channel, start.codec_header) == (
        "carol",
        "alpha",
        p.CodecHeader(48000, 1, 20),
    )
    await expect(page.locator("#talk")).to_have_attribute("aria-pressed", "true")
    await expect(page.locator("#talk-state")).to_have_text("Talking in alpha — release to stop.")
    packet = await bob.next_of(p.AudioPacket)
    assert packet.stream_id == start.stream_id and packet.payload[0] == 0xF8
    await page.mouse.up()
    stop = await bob.next_of(p.OnStreamStop, where=lambda e: e.stream_id == start.stream_id)
    assert stop.reason is None  # carol let go: no reason
    await expect(page.locator("#talk")).to_have_attribute("aria-pressed", "false")
    steps = await trace(page)
    # Permit cue, then the microphone; on release the microphone goes off before the floor.
    assert steps.index("cue permit") < steps.index("startCapture")
    assert steps.index("stopCapture") < steps.index("send stop_stream")


async def test_space_bar_talks_keyboard_only_and_ignores_key_repeat(
    pages: Pages, console_url: str, login: Login, channel_clients: Callable[..., Any]
) -> None:
    bob: Client = await channel_clients("bob", ("alpha",))
    page = await pages.open(fake_audio=True)
    await login(page, console_url, "carol")
    await expect(page.locator("#talk")).to_be_enabled()
    await page.evaluate("document.activeElement?.blur()")
    await focus_talk_by_tab(page)
    assert await page.evaluate("document.activeElement.matches(':focus-visible')")
    await page.keyboard.down("Space")
    await page.keyboard.down("Space")  # auto-repeat: ignored
    await page.keyboard.down("Space")
    start = await bob.next_of(p.OnStreamStart)
    assert start.from_ == "carol"
    await traced(page, "startCapture")
    await page.keyboard.up("Space")
    await bob.next_of(p.OnStreamStop, where=lambda e: e.stream_id == start.stream_id)
    await expect(page.locator("#talk")).to_have_attribute("aria-pressed", "false")
    steps = await trace(page)
    assert steps.count("send start_stream") == 1
    assert steps.index("stopCapture") < steps.index("send stop_stream")


async def test_talk_refused_as_busy_shows_who_talks(
    pages: Pages, console_url: str, login: Login, channel_clients: Callable[..., Any]
) -> None:
    bob: Client = await channel_clients("bob", ("alpha",))
    page = await pages.open(fake_audio=True)
    await login(page, console_url, "carol")
    await expect(page.locator("#talk")).to_be_enabled()
    answer = await bob.start("alpha")
    assert answer.success
    await expect(page.locator("#talker")).to_have_text("bob is talking")
    await page.locator("#talk").focus()
    await page.keyboard.down("Space")
    await expect(page.locator("#talk-state")).to_have_text("Busy: bob is talking.")
    await expect(page.locator("#talk")).to_have_class("talk-button refused")
    await traced(page, "cue busy")
    await page.keyboard.up("Space")
    assert "startCapture" not in await trace(page)  # the microphone never opened


async def test_emergency_pre_emption_ends_our_talk_and_says_why(
    pages: Pages, console_url: str, login: Login, channel_clients: Callable[..., Any]
) -> None:
    page = await pages.open(fake_audio=True)
    await login(page, console_url, "bob")
    await expect(page.locator(".emergency")).to_be_hidden()  # bob has no emergency grant
    await expect(page.locator("#talk")).to_be_enabled()
    await page.locator("#talk").hover()
    await page.mouse.down()
    await traced(page, "startCapture")
    alice: Client = await channel_clients("alice", ("alpha",))
    assert (await alice.start("alpha", priority="emergency")).success
    await expect(page.locator("#talk-state")).to_have_text(
        "Your talk was ended: an emergency call took the floor."
    )
    await traced(page, "stopCapture")  # the microphone is off at once, the button still held
    await expect(page.locator("#talker")).to_have_text("EMERGENCY — alice is talking")
    await page.mouse.up()


async def test_emergency_control_for_a_user_granted_it(
    pages: Pages, console_url: str, login: Login, channel_clients: Callable[..., Any]
) -> None:
    bob: Client = await channel_clients("bob", ("alpha",))
    page = await pages.open(fake_audio=True)
    await login(page, console_url, "alice")
    await page.get_by_label("Emergency priority").check()
    held = await bob.start("alpha")
    await expect(page.locator("#talker")).to_have_text("bob is talking")
    await page.locator("#talk").hover()
    await page.mouse.down()
    stop = await bob.next_of(p.OnStreamStop, where=lambda e: e.stream_id == held.stream_id)
    assert stop.reason == "preempted"
    start = await bob.next_of(p.OnStreamStart)
    assert (start.from_, start.priority) == ("alice", "emergency")
    await expect(page.locator("#talk-state")).to_have_text(
        "Emergency call in alpha — release to stop."
    )
    await page.mouse.up()
    await bob.next_of(p.OnStreamStop, where=lambda e: e.stream_id == start.stream_id)


async def test_encrypted_room_waits_for_approval_with_the_fingerprint(
    pages: Pages, console_url: str, login: Login, registry: Registry
) -> None:
    registry.set_authority_key(AuthorityKey.generate().public.to_text())
    registry.add_room("vault", encrypted=True)
    registry.add_user("dave", "dave-secret", ["alpha", "vault"])
    identity = IdentityKey.generate().public
    digits = identity.fingerprint.digits
    page = await pages.open(fake_audio=True, e2ee_js=fake_e2ee_js(identity.to_text(), digits))
    await login(page, console_url, "dave", "dave-secret")
    await expect(page.locator("#link-state")).to_have_text("online")
    await page.get_by_role("radio", name="vault").check()
    await expect(page.locator("#key-wait-text")).to_have_text(
        "Waiting for approval — your fingerprint (read it to your administrator):"
    )
    await expect(page.locator("#fingerprint")).to_have_text(digits)
    await expect(page.locator("#talk")).to_be_disabled()
    await expect(page.locator("#talk-state")).to_have_text("Waiting for approval.")
    # The clear room next to it works as ever.
    await page.get_by_role("radio", name="alpha").check()
    await expect(page.locator("#key-wait")).to_be_hidden()
    await expect(page.locator("#talk")).to_be_enabled()


async def test_real_audio_engine_both_ways(
    pages: Pages, console_url: str, login: Login, channel_clients: Callable[..., Any]
) -> None:
    """The page with the real audio.js (fake microphone: the speech file; ?tap=1 shows what it
    played): its talk reaches a radio as Opus that decodes, and a radio's talk is played."""
    import opuslib  # type: ignore[import-untyped]

    bob: Client = await channel_clients("bob", ("alpha",))
    page = await pages.open()
    await login(page, f"{console_url}?tap=1", "carol")
    await expect(page.locator("#talk")).to_be_enabled()
    await page.locator("#talk").hover()
    await page.mouse.down()
    start = await bob.next_of(p.OnStreamStart)
    packets = [await bob.next_of(p.AudioPacket) for _ in range(25)]  # half a second
    await page.mouse.up()
    await bob.next_of(p.OnStreamStop, where=lambda e: e.stream_id == start.stream_id)
    decoder = opuslib.Decoder(48000, 1)
    pcm = [decoder.decode(x.payload, 960) for x in packets]
    assert all(len(frame) == 960 * 2 for frame in pcm)  # 20 ms of 16-bit mono each

    # Back the other way: bob sends the same Opus packets; the page plays them.
    answer = await bob.start("alpha")
    assert answer.stream_id is not None
    for x in packets:
        await bob.send_audio(answer.stream_id, x.payload)
    await page.wait_for_function(
        """() => {
          const t = window.pttdTap;
          if (!t) return false;
          let n = 0, energy = 0;
          for (const chunk of t.played) for (const v of chunk) { n += 1; energy += v * v; }
          return n >= 48000 * 0.3 && energy > 0;
        }""",
        timeout=UI_TIMEOUT_MS,
    )
    assert (await bob.stop(answer.stream_id)).success


# Before the page's scripts: what the page's AudioWorkletNodes are made with and what their
# worklets post back ('tap' chunks only with the test tap; 'drained' with the counters of each
# talk played), recorded by the test, not by the page.
WATCH_WORKLETS = """
window.worklets = {options: [], messages: [], drained: []};
const NativeNode = window.AudioWorkletNode;
window.AudioWorkletNode = class extends NativeNode {
  constructor(ctx, name, options) {
    super(ctx, name, options);
    window.worklets.options.push({name, tap: options?.processorOptions?.tap ?? null});
    this.port.addEventListener('message', (e) => {
      window.worklets.messages.push(e.data?.type ?? null);
      if (e.data?.type === 'drained') window.worklets.drained.push(e.data.stats);
    });
  }
};
"""


def opus_tone(frames: int) -> list[bytes]:
    """``frames`` 20 ms Opus packets of a 440 Hz tone."""
    import opuslib  # type: ignore[import-untyped]

    encoder = opuslib.Encoder(48000, 1, opuslib.APPLICATION_VOIP)
    out = []
    for k in range(frames):
        samples = [
            int(8000 * math.sin(2 * math.pi * 440 * (k * 960 + i) / 48000)) for i in range(960)
        ]
        out.append(encoder.encode(struct.pack(f"<{len(samples)}h", *samples), 960))
    return out


async def test_tap_link_keeps_nothing_on_a_server_not_started_for_tests(
    pages: Pages, registry: Registry, settings: ServerSettings, tls: Tls, login: Login
) -> None:
    """?tap=1 on a server with the default settings (no web_test_tap): the real audio engine
    plays a radio's talk, and nothing of it is kept (no window.pttdTap, no tapped samples)."""
    async with RoomServer(registry, replace(settings, web_test_tap=False)) as server:
        url = server.web_url
        assert url is not None
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{url}api/config", ssl=tls.client) as response,
        ):
            assert json.loads(await response.text())["test_tap"] is False
        ws = await connect(server.url, ssl=tls.client, compression=None, open_timeout=TIMEOUT)
        bob = Client(ws, timeout=TIMEOUT)
        try:
            assert (await bob.logon(("alpha",), username="bob", password="bob-secret")).success
            page = await pages.open()
            await page.context.add_init_script(WATCH_WORKLETS)
            await login(page, f"{url}?tap=1", "carol")
            await expect(page.locator("#link-state")).to_have_text("online")
            await page.wait_for_function(
                "() => window.worklets.options.some((o) => o.name === 'pttd-player')",
                timeout=UI_TIMEOUT_MS,
            )
            answer = await bob.start("alpha")
            assert answer.success and answer.stream_id is not None
            await expect(page.locator("#talker")).to_have_text("bob is talking")
            for packet in opus_tone(25):
                await bob.send_audio(answer.stream_id, packet)
            assert (await bob.stop(answer.stream_id)).success
            await page.wait_for_function(
                "() => window.worklets.drained.length > 0", timeout=UI_TIMEOUT_MS
            )
            watched = await page.evaluate("window.worklets")
            # the talk was played (sent in one burst: beyond the jitter buffer's 15 frames the
            # oldest are skipped) …
            assert watched["drained"][0]["played"] >= 10
            assert "tap" not in watched["messages"]  # … and no sample came back to be kept
            assert {o["tap"] for o in watched["options"]} == {False}
            assert await page.evaluate("typeof window.pttdTap") == "undefined"
        finally:
            await bob.close()
