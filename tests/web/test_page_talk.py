"""The listen/talk view in a real chromium against the real room server and its web console:
presence and talk from Python protocol clients shown live, talking with the button (pointer)
and the space bar (keyboard only), busy, pre-emption, and an encrypted room waiting for
approval. audio.js is the tests' stand-in (webpage.FAKE_AUDIO_JS), which traces what the page
does with the microphone and cues."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from channel_client import Client
from playwright.async_api import Page, expect
from webpage import UI_TIMEOUT_MS, Pages, fake_e2ee_js

from pttd.e2ee.keys import AuthorityKey, IdentityKey
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
