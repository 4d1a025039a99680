"""An end-to-end encrypted room in the page, end to end, in a real chromium: the real room server
with the key authority's file (approvals and rotation work in the web console), a real simulated
radio paired through the real pairing flow, the page with its real audio engine and e2ee modules.

* Before approval the page shows its fingerprint and waits: a radio's talk reaches it (the
  stream is shown, its packets arrive) but nothing is played, and it cannot talk.
* An admin, in a second browser, approves it by the digits read from the page. The page gets its
  room key and unlocks: it plays the radio's speech, and its own talk reaches the radio's speaker
  as speech. The relay carries only SFrame under the page's key id, which a Python member holding
  the room key opens to Opus: never the Opus itself.
* A rotation from the admin view: the page keeps hearing and talking under the new epoch; a
  member removed by the key authority no longer opens what the page says.
* Logging out without "keep this browser approved" forgets the key (a new fingerprint waits for
  approval at the next login); with it, the same key comes back, still approved.
* A kept key is its user's only: another user logging in on the same browser gets a key of
  their own ("keep" not offered ticked), and neither unticking "keep" nor logging out deletes
  the first user's, whose next login brings back the same approved key.
* Screenshots of the waiting and the unlocked room at phone and desktop width.

Speech is recognised by its loudness contour: the 20 ms energy envelope of what was heard against
the speech file's, at the best lag (a tone, noise or silence scores near 0; speech through Opus
well above the bound). Nothing here asserts on speed.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import opuslib  # type: ignore[import-untyped]
import pytest
from browser import screenshot
from channel_client import Client
from playwright.async_api import Page, expect
from waits import TIMEOUT, eventually
from webpage import PASSWORDS, UI_TIMEOUT_MS, Pages, Tls
from webpage import log_in as log_in_as
from websockets.asyncio.client import connect

from pttd.bench.audio import RATE, UNITY_VOLUME
from pttd.demo import speech_sample
from pttd.e2ee.authority import Authority
from pttd.e2ee.keyring import Keyring
from pttd.e2ee.keys import AuthorityPublicKey, IdentityKey, IdentityPublicKey, split_kid
from pttd.e2ee.sframe import SFrameError, decode_header
from pttd.radio.config import AudioConfig
from pttd.radio.link import LinkSettings, pair, with_identity
from pttd.radio.store import Store
from pttd.server import keys
from pttd.server.app import RoomServer, ServerSettings
from pttd.server.registry import Registry
from pttd.sim.device import SimDevice, sim_config
from pttd.wire import messages as p

VAULT = "vault"  # the encrypted room
DAVE, DAVE_PASSWORD = "dave", "dave-secret"  # the dispatcher in the page
ERIN, ERIN_PASSWORD = "erin", "erin-secret"  # a Python member of the room: the relay's view
TAIL_S = 0.4  # a talk lasts this much longer than the speech
ENVELOPE_MS = 20
FORTY_DIGITS = re.compile(r"^\d{5}( \d{5}){7}$")  # a fingerprint as the page shows it
SECOND_FRAMES = 1000 // ENVELOPE_MS
DRIFT_FRAMES = 15  # 0.3 s
SPEECH_MATCH = 0.6  # the least speech_match() that counts as the speech (noise: 0.25)

Login = Callable[..., Awaitable[None]]

# Counts the binary frames (audio packets) every WebSocket of the page receives.
COUNT_FRAMES = """
window.binaryFrames = 0;
const NativeSocket = window.WebSocket;
window.WebSocket = class extends NativeSocket {
  constructor(...args) {
    super(...args);
    this.addEventListener('message', (e) => {
      if (typeof e.data !== 'string') window.binaryFrames += 1;
    });
  }
};
"""

# Everything the player rendered (the ?tap=1 tap) as one list of floats.
PLAYED = """() => {
  const out = [];
  for (const chunk of window.pttdTap?.played ?? []) for (const v of chunk) out.push(v);
  return out;
}"""


# --------------------------------------------------------------------------- the world


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return tmp_path / "authority.json"


@pytest.fixture
def registry(registry: Registry, key_file: Path) -> Registry:
    """conftest's registry, plus the key authority, the encrypted room and its users."""
    authority = Authority.create(key_file)
    registry.set_authority_key(authority.public_key.to_text())
    registry.add_room(VAULT, encrypted=True)
    registry.add_user(DAVE, DAVE_PASSWORD, [VAULT])
    registry.add_user(ERIN, ERIN_PASSWORD, [VAULT])
    return registry


@pytest.fixture
def settings(settings: ServerSettings, key_file: Path) -> ServerSettings:
    """conftest's settings with the key authority's file: approvals work in the web console."""
    return replace(settings, key_file=key_file)


async def as_authority(registry: Registry, key_file: Path, work: Callable[..., Any]) -> Any:
    """Run ``work(authority, registry)`` as the admin's own process would (``pttd keys …``):
    its own registry connection, the key file loaded afresh (the server notices the writes)."""

    def run() -> Any:
        with Registry(registry.path) as reg:
            return work(Authority.load(key_file), reg)

    return await asyncio.to_thread(run)


async def approve(registry: Registry, key_file: Path, name: str, digits: str) -> list[str]:
    said: list[str] = await as_authority(
        registry, key_file, lambda a, reg: keys.approve(a, reg, name, digits)
    )
    return said


async def epoch_of(registry: Registry, key_file: Path) -> int:
    epoch: int = await as_authority(registry, key_file, lambda a, _reg: a.epoch(VAULT))
    return epoch


@dataclass
class Radios:
    server: RoomServer
    registry: Registry
    tls: Tls
    directory: Path
    made: list[SimDevice] = field(default_factory=list)

    async def add(self, name: str) -> SimDevice:
        """A radio in the vault, paired through the real pairing flow (wss, the test CA), its
        microphone playing the speech file at each press, its speaker at unity volume."""
        assert self.tls.ca_file is not None
        ca = str(self.tls.ca_file)
        code = await asyncio.to_thread(self.registry.create_pair_code, [VAULT])
        credential = await pair(self.server.url, code.code, name, LinkSettings(ca_file=ca))
        state = self.directory / name
        store = Store(state)
        credential = with_identity(credential, store, self.registry.authority_key())
        store.save_credential(credential)
        audio = replace(AudioConfig(), volume=UNITY_VOLUME)
        config = sim_config(name, credential.server_url, state, audio, ca_file=ca)
        sim = SimDevice.build(config, speech_sample(RATE))
        await sim.start()
        self.made.append(sim)
        await sim.online()
        return sim


@pytest.fixture
async def radios(
    server: RoomServer, registry: Registry, tls: Tls, tmp_path: Path
) -> AsyncIterator[Radios]:
    made = Radios(server, registry, tls, tmp_path / "radios")
    yield made
    for sim in made.made:
        await sim.stop()


async def radio_keyed(sim: SimDevice, epoch: int | None = None) -> None:
    def ready(_: object) -> bool:
        keyring = sim.device.keyring
        key = keyring.key(VAULT) if keyring else None
        return (
            VAULT not in sim.machine.locked
            and key is not None
            and (epoch is None or key.epoch == epoch)
        )

    await sim.device.until(ready)


async def radio_talks(sim: SimDevice) -> None:
    """The radio holds its PTT for the speech file and a little more."""
    sim.button.press()
    await sim.transmitting()
    await asyncio.sleep(len(speech_sample(RATE)) / RATE + TAIL_S)  # a duration: the speech plays
    sim.button.release()
    await sim.idle()


@dataclass
class Member:
    """A Python Channel-API member of the vault (a user with its own identity key and keyring):
    what any listener, the relay included, receives."""

    client: Client
    keyring: Keyring
    taken: int = 0  # the client's events up to here were looked at for room keys

    def take_keys(self) -> None:
        """Take the room keys that came since the last look (as a device does)."""
        for event in self.client.of(p.OnRoomKey, self.taken):
            self.keyring.accept(event.channel, event.key)
        self.taken = self.client.mark()


async def python_member(server: RoomServer, tls: Tls, registry: Registry) -> Member:
    identity = IdentityKey.generate()
    authority = registry.authority_key()
    assert authority is not None
    ws = await connect(server.url, ssl=tls.client, compression=None, open_timeout=TIMEOUT)
    client = Client(ws, timeout=TIMEOUT)
    answer = await client.logon(
        (VAULT,), username=ERIN, password=ERIN_PASSWORD, identity_key=identity.public.to_text()
    )
    assert answer.success, answer
    keyring = Keyring(identity, AuthorityPublicKey.from_text(authority), ERIN, generation=1)
    return Member(client, keyring)


# --------------------------------------------------------------------------- the page


async def open_console(pages: Pages, phone: bool = False) -> Page:
    page = await pages.open(phone=phone)
    await page.context.add_init_script(COUNT_FRAMES)
    return page


KEEP_AT_LOGIN = "Keep this browser approved for encrypted rooms"
KEEP_LOGGED_IN = "Keep this browser approved (its key stays after logging out)"


async def log_in(
    page: Page,
    url: str,
    *,
    keep: bool | None = None,
    user: str = DAVE,
    password: str = DAVE_PASSWORD,
    offered: bool | None = None,
) -> None:
    """``user`` (dave) logs in through the form (``keep``: tick or untick "keep this browser
    approved"; None: as the page offers it; ``offered``: the form offers it so for this user
    first) and the page is on the vault."""
    await page.goto(f"{url}?tap=1")
    await page.get_by_label("User name").fill(user)
    await page.get_by_label("Password", exact=True).fill(password)
    keep_box = page.get_by_label(KEEP_AT_LOGIN)
    if offered is not None:
        await (
            expect(keep_box).to_be_checked() if offered else expect(keep_box).not_to_be_checked()
        )
    if keep is not None:  # the user's own choice: a click whatever was offered
        await keep_box.set_checked(not keep)
        await keep_box.set_checked(keep)
    await page.get_by_role("button", name="Log in").click()
    await expect(page.locator("#talk-view")).to_be_visible()
    await expect(page.locator("#link-state")).to_have_text("online")
    await expect(page.locator("#room-title")).to_have_text(VAULT)


async def waiting_fingerprint(page: Page, *, new_key: bool = False) -> str:
    """The page waits for approval: its fingerprint (40 digits, as read out), talk disabled.
    ``new_key``: the server handed it the room key kept for the user's earlier key."""
    waiting = "Waiting for approval — your fingerprint (read it to your administrator):"
    if new_key:
        waiting = "This browser's key is new: w" + waiting[1:]
    await expect(page.locator("#key-wait")).to_be_visible()
    await expect(page.locator("#key-wait-text")).to_have_text(waiting)
    await expect(page.locator("#fingerprint")).to_have_text(FORTY_DIGITS)
    await expect(page.locator("#talk")).to_be_disabled()
    await expect(page.locator("#talk-state")).to_have_text("Waiting for approval.")
    return (await page.locator("#fingerprint").inner_text()).strip()


async def unlocked(page: Page, epoch: int | None = None) -> None:
    await expect(page.locator("#key-wait")).to_be_hidden()
    await expect(page.locator("#talk")).to_be_enabled()
    await expect(page.locator("#talk-state")).to_contain_text("talk in vault")
    if epoch is not None:
        await expect(page.locator("#notice")).to_have_text(
            f"Room key for {VAULT} (epoch {epoch}) received: the room is open to you."
        )


async def databases(page: Page) -> list[str]:
    """The names of the browser's IndexedDB databases (a kept key is in its user's)."""
    names: list[str] = await page.evaluate(
        "async () => (await indexedDB.databases()).map((d) => d.name).sort()"
    )
    return names


async def logged_on_key(registry: Registry, name: str) -> str:
    """The fingerprint of the identity key ``name`` last logged on with (what the server holds)."""
    held = next(m for m in registry.members() if m.name == name)
    assert held.identity_key is not None
    return str(IdentityPublicKey.from_text(held.identity_key).fingerprint)


async def log_out(page: Page) -> None:
    await page.get_by_role("button", name="Log out").click()
    await expect(page.locator("#login-view")).to_be_visible()


async def admin_view(pages: Pages, url: str) -> Page:
    """alice (an admin) in a browser of her own, on the admin view."""
    admin = await pages.open()
    await log_in_as(admin, url, "alice", PASSWORDS["alice"])
    await admin.get_by_role("button", name="Admin").click()
    await expect(admin.locator("#adm-keys-info")).to_contain_text("Authority fingerprint")
    return admin


async def played(page: Page) -> npt.NDArray[np.float64]:
    values: list[float] = await page.evaluate(PLAYED)
    return np.asarray(values, np.float64)


async def played_streams(page: Page) -> list[dict[str, Any]]:
    streams: list[dict[str, Any]] = await page.evaluate(
        "() => (window.pttdTap?.streams ?? []).map((s) => ({id: s.streamId, pushed: s.pushed}))"
    )
    return streams


async def page_talks(page: Page, seconds: float) -> None:
    """Hold the talk button ``seconds`` (the fake microphone plays the speech file)."""
    await page.locator("#talk").hover()
    await page.mouse.down()
    await expect(page.locator("#talk-state")).to_have_text(f"Talking in {VAULT} — release to stop.")
    await asyncio.sleep(seconds)  # a duration: the speech plays
    await page.mouse.up()
    await expect(page.locator("#talk")).to_have_attribute("aria-pressed", "false")


# --------------------------------------------------------------------------- speech


def envelope(signal: npt.NDArray[Any], rate: int) -> npt.NDArray[np.float64]:
    """The RMS of each 20 ms frame."""
    n = rate * ENVELOPE_MS // 1000
    x = np.asarray(signal, np.float64)
    frames = x[: len(x) // n * n].reshape(-1, n)
    return np.asarray(np.sqrt((frames**2).mean(axis=1)), np.float64)


def _correlation(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> float:
    a, b = a - a.mean(), b - b.mean()
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / norm if norm > 0 else 0.0


def speech_match(heard: npt.NDArray[Any], rate: int = RATE) -> float:
    """How well the loudness contour of ``heard`` follows the speech file's (1.0: the same).

    The 20 ms envelopes are aligned as a whole (the lag of the best correlation); then each
    second of the speech is matched where it should be, give or take :data:`DRIFT_FRAMES` (a
    jitter buffer under load stretches or skips a little), and the matches are averaged. A
    tone scores about 0.1, noise 0.25, the speech backwards 0.5 (speech has a rhythm); the
    speech through Opus 0.95, with a gap of 40 ms every half second 0.8, with a tenth of each
    half second skipped 0.75."""
    ref = envelope(speech_sample(rate).astype(np.float64), rate)
    got = envelope(heard, rate)
    pad = np.zeros(DRIFT_FRAMES)
    got = np.concatenate([pad, got, pad, np.zeros(max(0, len(ref) - len(got)))])
    lag = max(
        range(len(got) - len(ref) + 1),
        key=lambda at: _correlation(got[at : at + len(ref)], ref),
    )
    scores = []
    for start in range(0, len(ref) - SECOND_FRAMES + 1, SECOND_FRAMES):
        part = ref[start : start + SECOND_FRAMES]
        low = max(0, lag + start - DRIFT_FRAMES)
        high = min(len(got) - SECOND_FRAMES, lag + start + DRIFT_FRAMES)
        scores.append(
            max(_correlation(got[at : at + SECOND_FRAMES], part) for at in range(low, high + 1))
        )
    return float(np.mean(scores))


def rms(signal: npt.NDArray[Any]) -> float:
    x = np.asarray(signal, np.float64)
    return float(np.sqrt((x**2).mean())) if len(x) else 0.0


# --------------------------------------------------------------------------- the relay


@dataclass
class Relay:
    """Every audio packet the server's core relays, with its stream."""

    packets: list[p.AudioPacket] = field(default_factory=list)

    @classmethod
    def tap(cls, server: RoomServer, monkeypatch: pytest.MonkeyPatch) -> Relay:
        relay = cls()
        core = server.core
        binary = core.binary

        def relaying(conn: Any, frame: bytes, now: float) -> Any:
            actions = binary(conn, frame, now)
            for action in actions:
                data = getattr(action, "data", None)
                if isinstance(data, bytes):
                    relay.packets.append(p.parse_audio_packet(data))
            return actions

        monkeypatch.setattr(core, "binary", relaying)
        return relay

    def of(self, stream_id: int) -> list[bytes]:
        return [x.payload for x in self.packets if x.stream_id == stream_id]


def check_sealed(member: Member, payloads: list[bytes], sender: str, epoch: int) -> list[bytes]:
    """Each relayed payload is an SFrame packet under the epoch's key id of ``sender`` that a
    member holding the room key opens to an Opus packet which is nowhere in the payload; those
    Opus packets."""
    assert payloads, "nothing was relayed"
    opus = []
    for payload in payloads:
        kid, _ctr, _length = decode_header(payload)
        assert split_kid(kid)[0] == epoch
        heard = member.keyring.open(VAULT, payload)
        assert (heard.sender, heard.epoch) == (sender, epoch)
        assert heard.payload not in payload  # sealed: the Opus bytes are not on the wire
        opus.append(heard.payload)
    return opus


def decodes_as_speech(opus: list[bytes]) -> float:
    decoder = opuslib.Decoder(RATE, 1)
    pcm = b"".join(decoder.decode(x, RATE // 50) for x in opus)
    return speech_match(np.frombuffer(pcm, "<i2"))


# --------------------------------------------------------------------------- the tests


async def test_encrypted_room_heard_and_talked_in_only_after_approval_in_the_admin_view(
    pages: Pages,
    console_url: str,
    server: RoomServer,
    registry: Registry,
    key_file: Path,
    tls: Tls,
    radios: Radios,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    relay = Relay.tap(server, monkeypatch)
    radio = await radios.add("truck")
    assert radio.device.fingerprint is not None
    await approve(registry, key_file, "truck", radio.device.fingerprint)
    await radio_keyed(radio)

    page = await open_console(pages)
    await log_in(page, console_url, keep=False)
    digits = await waiting_fingerprint(page)
    await expect(page.locator("#authority-fp")).to_contain_text("Key authority:")

    # Before approval: the radio's talk reaches the page, which plays none of it.
    await radio_talks(radio)
    await expect(page.locator("#talker")).to_have_text("")
    frames = await page.evaluate("window.binaryFrames")
    assert frames >= 25, f"only {frames} audio packets reached the page"
    assert [s["pushed"] for s in await played_streams(page)] in ([], [0])
    assert rms(await played(page)) == 0.0
    await expect(page.locator("#talk")).to_be_disabled()  # and it cannot talk

    # An admin approves it, in a browser of their own, by the digits the page shows.
    admin = await admin_view(pages, console_url)
    row = admin.locator("#adm-keys tr", has=admin.get_by_role("rowheader", name="dave (user)"))
    await expect(row.locator("td").nth(0)).to_have_text(digits)  # the key the server holds
    await expect(row.locator("td").nth(2)).to_have_text("no")
    await admin.get_by_label("Fingerprint dave reads out").fill(digits)
    await row.get_by_role("button", name="Approve").click()
    await expect(admin.locator("#notice")).to_have_text("dave approved.")
    await expect(row.locator("td").nth(2)).to_have_text("yes")
    epoch = await epoch_of(registry, key_file)
    await unlocked(page, epoch)

    # After approval: the radio's speech is played by the page.
    await radio_keyed(radio, epoch)
    await radio_talks(radio)
    await page.wait_for_function(
        "() => (window.pttdTap?.streams ?? []).some((s) => s.pushed >= 25 && s.drainedAt)",
        timeout=UI_TIMEOUT_MS,
    )
    heard = await played(page)
    assert rms(heard) > 0.01, f"the page played near silence (RMS {rms(heard):.4f})"
    match = speech_match(heard)
    assert match > SPEECH_MATCH, f"what the page played does not follow the speech ({match:.2f})"

    # The page talks: the radio hears speech; the relay carries only SFrame.
    erin = await python_member(server, tls, registry)
    try:
        await approve(registry, key_file, ERIN, str(erin.keyring.identity.public.fingerprint))
        epoch = await epoch_of(registry, key_file)
        await erin.client.wait_for(p.OnRoomKey)
        erin.take_keys()
        await radio_keyed(radio, epoch)
        await unlocked(page, epoch)
        radio.speaker.clear()
        mark = erin.client.mark()
        await page_talks(page, len(speech_sample(RATE)) / RATE + TAIL_S)
        start = await erin.client.wait_for(p.OnStreamStart, since=mark)
        assert start.from_ == DAVE and start.codec_header.sframe_suite == 1
        await erin.client.wait_for(
            p.OnStreamStop, lambda e: e.stream_id == start.stream_id, since=mark
        )
        await erin.client.sync()
        opus = check_sealed(erin, relay.of(start.stream_id), DAVE, epoch)
        assert len(opus) >= 25
        assert decodes_as_speech(opus) > SPEECH_MATCH
        mixer = radio.device.mixer
        await eventually(lambda: bool(mixer.stats.played) and not mixer.stats.streams)
        recording = radio.speaker.recording()
        assert rms(recording) > 300, f"the radio heard near silence (RMS {rms(recording):.0f})"
        match = speech_match(recording)
        assert match > SPEECH_MATCH, f"what the radio played does not follow the speech ({match})"
    finally:
        await erin.client.close()


async def test_rotation_from_the_admin_view_and_a_removed_member_is_out(
    pages: Pages,
    console_url: str,
    server: RoomServer,
    registry: Registry,
    key_file: Path,
    tls: Tls,
    radios: Radios,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    relay = Relay.tap(server, monkeypatch)
    radio = await radios.add("truck")
    assert radio.device.fingerprint is not None
    await approve(registry, key_file, "truck", radio.device.fingerprint)
    page = await open_console(pages)
    await log_in(page, console_url, keep=False)
    await approve(registry, key_file, DAVE, await waiting_fingerprint(page))
    erin = await python_member(server, tls, registry)
    try:
        await approve(registry, key_file, ERIN, str(erin.keyring.identity.public.fingerprint))
        first = await epoch_of(registry, key_file)
        await unlocked(page, first)

        # A rotation from the admin view: a new epoch, and the page keeps hearing the radio.
        admin = await admin_view(pages, console_url)
        await admin.get_by_label("Room", exact=True).select_option(VAULT)
        mark = erin.client.mark()
        await admin.get_by_role("button", name="Rotate the room key").click()
        await expect(admin.locator("#notice")).to_have_text(
            f"A new key for {VAULT} is on its way to its members."
        )
        rotated = await epoch_of(registry, key_file)
        assert rotated > first
        await unlocked(page, rotated)
        await radio_keyed(radio, rotated)
        await erin.client.wait_for(p.OnRoomKey, since=mark)
        erin.take_keys()
        assert erin.keyring.key(VAULT) is not None
        assert erin.keyring.key(VAULT).epoch == rotated  # type: ignore[union-attr]

        before = len(await played(page))
        streams = len(await played_streams(page))
        await radio_talks(radio)
        await page.wait_for_function(
            "(n) => (window.pttdTap?.streams ?? []).slice(n).some((s) => s.pushed >= 25"
            " && s.drainedAt)",
            arg=streams,
            timeout=UI_TIMEOUT_MS,
        )
        heard = (await played(page))[before:]
        match = speech_match(heard)
        assert match > SPEECH_MATCH, f"after the rotation the page plays no speech ({match})"

        # erin is removed by the key authority (pttd keys remove): a new epoch without her. The
        # page talks on under it, the radio hears it, erin receives packets she cannot open.
        def remove(authority: Authority, reg: Registry) -> list[str]:
            authority.remove(VAULT, ERIN)
            return keys.sync(authority, reg)

        await as_authority(registry, key_file, remove)
        removed = await epoch_of(registry, key_file)
        assert removed > rotated
        await unlocked(page, removed)
        await radio_keyed(radio, removed)
        radio.speaker.clear()
        mark = erin.client.mark()
        await page_talks(page, len(speech_sample(RATE)) / RATE + TAIL_S)
        start = await erin.client.wait_for(p.OnStreamStart, since=mark)
        await erin.client.wait_for(
            p.OnStreamStop, lambda e: e.stream_id == start.stream_id, since=mark
        )
        payloads = relay.of(start.stream_id)
        assert len(payloads) >= 25
        assert len(erin.client.packets(start.stream_id, since=mark)) == len(payloads)
        erin.take_keys()  # nothing new for her: still the rotated epoch
        assert erin.keyring.key(VAULT).epoch == rotated  # type: ignore[union-attr]
        for payload in payloads:
            assert split_kid(decode_header(payload)[0])[0] == removed
            with pytest.raises(SFrameError):
                erin.keyring.open(VAULT, payload)
        mixer = radio.device.mixer
        await eventually(lambda: bool(mixer.stats.played) and not mixer.stats.streams)
        match = speech_match(radio.speaker.recording())
        assert match > SPEECH_MATCH, f"the radio no longer hears the page ({match})"

        # The radio revoked from the admin view: cut off, and a new epoch without it.
        await admin.get_by_role("button", name="Revoke truck").click()
        await admin.locator("#confirm-ok").click()
        await expect(admin.locator("#notice")).to_have_text("truck revoked.")
        revoked = await epoch_of(registry, key_file)
        assert revoked > removed
        await unlocked(page, revoked)
        await expect(page.locator("#online-list .member-name")).not_to_contain_text(["truck"])
        members = await as_authority(registry, key_file, lambda a, _r: a.members(VAULT))
        assert sorted(m.name for m in members) == [DAVE]
    finally:
        await erin.client.close()


async def test_logout_forgets_the_key_unless_this_browser_is_kept_approved(
    pages: Pages, console_url: str, registry: Registry, key_file: Path
) -> None:
    page = await open_console(pages)
    await log_in(page, console_url, keep=False)
    first = await waiting_fingerprint(page)
    await approve(registry, key_file, DAVE, first)
    await unlocked(page, await epoch_of(registry, key_file))

    # Logged out without "keep": the key is gone; the next login has a new one, not approved.
    await page.get_by_role("button", name="Log out").click()
    await expect(page.locator("#login-view")).to_be_visible()
    assert await databases(page) == []
    await expect(
        page.get_by_label("Keep this browser approved for encrypted rooms")
    ).not_to_be_checked()
    await log_in(page, console_url)
    # The server dropped the room key sealed for the forgotten key when the new one logged on
    # (so the page is not handed a key it must refuse): it just waits for approval.
    second = await waiting_fingerprint(page)
    assert second != first
    await expect(page.locator("#notice")).not_to_contain_text("earlier key")
    await expect(page.locator("#alert")).to_be_hidden()
    await expect(page.locator("#keep-row")).to_be_visible()

    # Approved, then kept: logging out and in again brings the same key back, still approved.
    await approve(registry, key_file, DAVE, second)
    epoch = await epoch_of(registry, key_file)
    await unlocked(page, epoch)
    await page.get_by_label("Keep this browser approved (its key stays after logging out)").check()
    await expect(page.locator("#notice")).to_have_text(
        "This browser keeps its key: it stays approved after logging out."
    )
    await log_out(page)
    await expect(page.get_by_label(KEEP_AT_LOGIN)).to_be_checked()
    await log_in(page, console_url, offered=True)
    await unlocked(page, epoch)  # no approval asked for: the key sealed for it opens
    assert await epoch_of(registry, key_file) == epoch
    # The key the page logged on with this time is the approved one (a new key would replace it).
    held = next(m for m in registry.members() if m.name == DAVE)
    assert held.identity_key is not None
    assert str(IdentityPublicKey.from_text(held.identity_key).fingerprint) == second
    await expect(
        page.get_by_label("Keep this browser approved (its key stays after logging out)")
    ).to_be_checked()


@pytest.mark.parametrize("phone", [True, False], ids=["phone", "desktop"])
async def test_screenshots_of_the_waiting_and_the_unlocked_room(
    pages: Pages, console_url: str, registry: Registry, key_file: Path, phone: bool
) -> None:
    width = "phone" if phone else "desktop"
    page = await open_console(pages, phone=phone)
    await log_in(page, console_url, keep=False)
    digits = await waiting_fingerprint(page)
    await no_horizontal_scroll(page)
    await screenshot(page, f"console-encrypted-waiting-{width}")
    await approve(registry, key_file, DAVE, digits)
    await unlocked(page, await epoch_of(registry, key_file))
    await no_horizontal_scroll(page)
    await screenshot(page, f"console-encrypted-unlocked-{width}")


async def no_horizontal_scroll(page: Page) -> None:
    width = await page.evaluate(
        "[document.documentElement.scrollWidth, document.body.scrollWidth, window.innerWidth]"
    )
    assert max(width[:2]) <= width[2], f"the page scrolls sideways: {width}"


async def test_a_kept_key_is_its_users_only(
    pages: Pages, console_url: str, registry: Registry, key_file: Path
) -> None:
    """dave keeps this browser approved; erin logs in on the same browser (same profile)."""
    page = await open_console(pages)
    await log_in(page, console_url, keep=True, offered=False)
    dave_key = await waiting_fingerprint(page)
    await approve(registry, key_file, DAVE, dave_key)
    epoch = await epoch_of(registry, key_file)
    await unlocked(page, epoch)
    await expect(page.get_by_label(KEEP_LOGGED_IN)).to_be_checked()
    await log_out(page)
    assert await databases(page) == [f"pttd-e2ee user:{DAVE}"]

    # erin: "keep" is not offered ticked for her (it is for dave), and she gets a key of her
    # own, memory only, even though she unticks "keep" herself (that once deleted dave's).
    await page.get_by_label("User name").fill(DAVE)
    await expect(page.get_by_label(KEEP_AT_LOGIN)).to_be_checked()
    await log_in(page, console_url, user=ERIN, password=ERIN_PASSWORD, offered=False)
    erin_key = await waiting_fingerprint(page, new_key=False)
    assert erin_key != dave_key
    assert await logged_on_key(registry, ERIN) == erin_key
    await expect(page.get_by_label(KEEP_LOGGED_IN)).not_to_be_checked()
    await log_out(page)
    assert await databases(page) == [f"pttd-e2ee user:{DAVE}"]
    await log_in(page, console_url, user=ERIN, password=ERIN_PASSWORD, keep=False, offered=False)
    assert await waiting_fingerprint(page) not in (dave_key, erin_key)
    # she keeps hers, then changes her mind: hers goes, dave's stays
    await page.get_by_label(KEEP_LOGGED_IN).check()
    await expect(page.locator("#notice")).to_have_text(
        "This browser keeps its key: it stays approved after logging out."
    )
    assert await databases(page) == [f"pttd-e2ee user:{DAVE}", f"pttd-e2ee user:{ERIN}"]
    await page.get_by_label(KEEP_LOGGED_IN).uncheck()
    await expect(page.locator("#notice")).to_have_text(
        "This browser's key will be forgotten when you log out."
    )
    assert await databases(page) == [f"pttd-e2ee user:{DAVE}"]
    await log_out(page)
    assert await databases(page) == [f"pttd-e2ee user:{DAVE}"]

    # dave again: "keep" offered ticked, his key (no approval asked for), still kept.
    await log_in(page, console_url, offered=True)
    await unlocked(page)
    assert await logged_on_key(registry, DAVE) == dave_key
    assert await epoch_of(registry, key_file) == epoch
    await expect(page.get_by_label(KEEP_LOGGED_IN)).to_be_checked()
