"""End-to-end encrypted rooms, end to end: the real room server on loopback, real simulated devices
paired through the real pairing flow, the key authority driven as the admin drives it
(:mod:`pttd.server.keys`, through a registry of its own, as another process would).

What this proves (the issue's proof):

* the relay sees only SFrame: every binary frame the server relays is an SFrame packet under the
  talker's key id, none carries an Opus packet the talker's encoder made, and the server's
  database holds neither the epoch secret nor any device's private identity key; the listener
  hears the speech as well as in a clear room (PESQ);
* a malicious server can neither slip its own key in at approval (the fingerprint read on the
  device does not match) nor hand a device a room key of its own (not signed by the room's key
  authority: the room stays locked, a press plays the error tone and the microphone never opens);
* a member removed under a live talk cannot open what is sealed after the rotation, while the
  others keep hearing; a device offline at a rotation gets the new epoch at its next logon.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from waits import eventually

from pttd import cli
from pttd.bench.audio import RATE, REF_RATE, UNITY_VOLUME, score
from pttd.demo import speech_sample
from pttd.e2ee.authority import Authority, FingerprintMismatch
from pttd.e2ee.keyring import NoRoomKey
from pttd.e2ee.keys import (
    REFUSED_SIGNATURE,
    AuthorityKey,
    IdentityKey,
    IdentityPublicKey,
    RoomKey,
    bundle_to_text,
    make_kid,
    new_epoch_secret,
    seal_bundle,
    split_kid,
)
from pttd.e2ee.sframe import SFrameError, decode_header
from pttd.radio.audio.codec import Decoder
from pttd.radio.config import AudioConfig
from pttd.radio.inputs import Button
from pttd.radio.machine import Talk, Tone
from pttd.server import keys
from pttd.server.app import RoomServer
from pttd.server.registry import Registry
from pttd.sim.audio import silence
from pttd.sim.device import SimDevice
from pttd.sim.loopback import ROOM, Loopback, loopback
from pttd.wire import messages as p

CREW = "crew"  # the encrypted room (sorted before ROOM: the devices select it)
KEYS_WAIT_S = 10.0
TAIL_S = 0.3  # the PTT is held this long after the speech ends


# --------------------------------------------------------------------------- helpers


@dataclass
class Relayed:
    """One binary frame the server relayed: its payload, and to how many listeners."""

    payload: bytes
    listeners: int


@dataclass
class Tap:
    """Every binary frame the server's core relays, as it leaves the relay."""

    frames: list[Relayed] = field(default_factory=list)

    @classmethod
    def on(cls, server: RoomServer, monkeypatch: pytest.MonkeyPatch) -> Tap:
        tap = cls()
        core = server.core
        relay = core.binary

        def binary(conn: Any, frame: bytes, now: float) -> Any:
            actions = relay(conn, frame, now)
            for action in actions:
                data = getattr(action, "data", None)
                if isinstance(data, bytes):
                    packet = p.parse_audio_packet(data)
                    tap.frames.append(Relayed(packet.payload, len(action.to)))
            return actions

        monkeypatch.setattr(core, "binary", binary)
        return tap

    def kids(self, since: int = 0) -> list[int]:
        return [decode_header(f.payload)[0] for f in self.frames[since:]]


def opus_packets(sim: SimDevice, monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every Opus packet ``sim``'s encoder makes from now on."""
    made: list[bytes] = []
    encode = sim.device.encoder.encode

    def recording(frame: Any) -> bytes:
        packet: bytes = encode(frame)
        made.append(packet)
        return packet

    monkeypatch.setattr(sim.device.encoder, "encode", recording)
    return made


def opened_packets(sim: SimDevice, monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every Opus packet ``sim`` hands its jitter buffer from now on (opened, if encrypted)."""
    pushed: list[bytes] = []
    push = sim.device.mixer.push_packet

    def recording(stream_id: int, packet_id: int, payload: bytes, now: float) -> None:
        pushed.append(payload)
        push(stream_id, packet_id, payload, now)

    monkeypatch.setattr(sim.device.mixer, "push_packet", recording)
    return pushed


def glitches(sim: SimDevice) -> int:
    """Frames ``sim``'s jitter buffer could not play as they came, so far."""
    s = sim.device.mixer.stats
    return s.concealed + s.underruns + s.late + s.dropped + s.decode_errors


def admin(bench: Loopback, work: Callable[[Authority, Registry], Any]) -> Any:
    """Run ``work`` as the admin's own process would: through a registry of its own (the server
    notices its writes)."""
    assert bench.authority is not None
    with Registry(bench.registry.path) as registry:
        return work(bench.authority, registry)


async def as_admin(bench: Loopback, work: Callable[[Authority, Registry], Any]) -> Any:
    return await asyncio.to_thread(admin, bench, work)


async def keyed(sim: SimDevice, room: str = CREW, epoch: int | None = None) -> None:
    """Wait until ``sim`` may talk in ``room`` (holding ``epoch``, if given)."""

    def ready(_: object) -> bool:
        keyring = sim.device.keyring
        key = keyring.key(room) if keyring else None
        return (
            room not in sim.machine.locked
            and key is not None
            and (epoch is None or key.epoch == epoch)
        )

    async with asyncio.timeout(KEYS_WAIT_S):
        await sim.device.until(ready)


def encodings(secret: bytes) -> list[bytes]:
    """``secret`` as raw bytes and as every base64 text it could be stored as."""
    texts = {
        base64.b64encode(secret),
        base64.urlsafe_b64encode(secret),
        base64.b64encode(secret).rstrip(b"="),
        base64.urlsafe_b64encode(secret).rstrip(b"="),
        secret.hex().encode(),
    }
    return [secret, *texts]


def database_contents(path: Path | str) -> Iterator[bytes]:
    """Every value of every table of the SQLite database at ``path``, as bytes; then the raw
    bytes of the database file and its journal files."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        assert tables, "no tables"
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    if isinstance(value, bytes):
                        yield value
                    elif value is not None:
                        yield str(value).encode()
    db.close()
    path = Path(path)
    for file in path.parent.glob(path.name + "*"):
        yield file.read_bytes()


def identity_private_key(sim: SimDevice) -> bytes:
    data = json.loads((Path(sim.device.config.state.dir) / "identity.json").read_text())
    return base64.b64decode(data["private"])


def epoch_secret(bench: Loopback, room: str = CREW) -> bytes:
    assert bench.authority is not None
    data = json.loads(bench.authority.path.read_text())
    return base64.urlsafe_b64decode(data["rooms"][room]["epoch_secret"] + "==")


async def talk(a: SimDevice, b: SimDevice, seconds: float) -> None:
    """A holds the PTT ``seconds`` (its microphone plays from the start), then B's stream ends."""
    b.speaker.clear()
    a.button.press()
    await a.transmitting()
    await asyncio.sleep(seconds)  # the speech plays: a duration, not a wait for absence
    a.button.release()
    await a.idle()
    mixer = b.device.mixer
    await eventually(
        lambda: bool(mixer.stats.played) and not mixer.stats.streams, what="B's stream ended"
    )


# --------------------------------------------------------------------------- 1. the relay


async def test_two_devices_talk_in_an_encrypted_room_and_the_relay_sees_only_sframe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reference = speech_sample(REF_RATE)
    speech = speech_sample(RATE)
    listener = replace(AudioConfig(), volume=UNITY_VOLUME)
    async with loopback() as bench:
        bench.add_encrypted_room(CREW)
        tap = Tap.on(bench.server, monkeypatch)
        a = await bench.add_device("talker", speech, rooms=(CREW, ROOM))
        b = await bench.add_device(
            "listener", silence(0.1, sample_rate=RATE), listener, rooms=(CREW, ROOM)
        )
        await a.online()
        await b.online()
        for sim in (a, b):
            await bench.approve(sim)
        await keyed(a)
        await keyed(b)
        sent = opus_packets(a, monkeypatch)
        heard = opened_packets(b, monkeypatch)
        assert a.machine.room == CREW
        await talk(a, b, len(speech) / RATE + TAIL_S)
        encrypted = b.speaker.recording()
        glitches_encrypted = glitches(b)

        # The relay saw SFrame only, under A's key id, and none of A's Opus packets.
        key = a.device.keyring.key(CREW) if a.device.keyring else None
        assert key is not None
        assert sent and len(tap.frames) >= len(sent) - 2
        assert set(tap.kids()) == {make_kid(key.epoch, key.sender_index)}
        assert all(f.listeners == 1 for f in tap.frames)
        for frame in tap.frames:
            for opus in sent:
                assert opus not in frame.payload
        # … and B opened every packet A sealed, bit for bit what A's encoder made.
        assert b.device.counters.packets_unopened == 0
        assert heard == sent[: len(heard)] and len(heard) == len(tap.frames)

        # The same talk in the clear room, for the comparison.
        a.button.press(Button.ROOM_DOWN)
        a.button.release(Button.ROOM_DOWN)
        await a.until(lambda m: m.room == ROOM)
        clear_from = len(tap.frames)
        await talk(a, b, len(speech) / RATE + TAIL_S)
        clear = b.speaker.recording()
        glitches_clear = glitches(b) - glitches_encrypted
        assert len(tap.frames) > clear_from  # the tap sees clear talks too: it would have seen

        # The database holds no key material: neither the epoch secret nor a private key.
        secrets = [epoch_secret(bench), identity_private_key(a), identity_private_key(b)]
        contents = list(database_contents(bench.registry.path))
        for secret in secrets:
            for form in encodings(secret):
                assert not any(form in value for value in contents)

    # What B opened, decoded: A's encoding exactly (deterministic, whatever the machine's load).
    decoder = Decoder(RATE)
    pesq_opened = score(reference, speech, np.concatenate([decoder.decode(x) for x in heard]))
    # What B's speaker played: a frame concealed on a loaded machine (the simulated speaker's
    # clock) costs up to 0.6; compared with the clear room only when neither talk had one.
    pesq_encrypted = score(reference, speech, encrypted)
    pesq_clear = score(reference, speech, clear)
    print(
        f"PESQ WB: opened packets {pesq_opened:.3f}; B's speaker: encrypted room "
        f"{pesq_encrypted:.3f} ({glitches_encrypted} glitches), clear room {pesq_clear:.3f} "
        f"({glitches_clear} glitches)"
    )
    assert pesq_opened >= 3.0
    assert np.abs(encrypted).max() >= 0.25 * np.abs(speech).max()  # B's speaker played it
    if glitches_encrypted == 0:  # a concealed frame costs up to 0.6: only a clean talk is scored
        assert pesq_encrypted >= 2.5
    if glitches_encrypted == glitches_clear == 0:
        assert pesq_encrypted >= pesq_clear - 0.1


# --------------------------------------------------------------------------- 2. a malicious server


async def test_a_server_that_substitutes_its_own_key_at_approval_is_caught_by_the_fingerprint() -> (
    None
):
    async with loopback() as bench:
        bench.add_encrypted_room(CREW)
        a = await bench.add_device("gate", rooms=(CREW,))
        await a.online()
        shown = a.device.fingerprint
        assert shown is not None
        before = bench.authority.path.read_bytes() if bench.authority else b""

        def substitute_then_approve(authority: Authority, registry: Registry) -> None:
            # The server (its database) swaps in a key of its own for the device …
            assert registry.set_identity_key(
                "device", "gate", IdentityKey.generate().public.to_text()
            )
            # … and the admin approves with the fingerprint the device's console shows.
            keys.approve(authority, registry, "gate", shown)

        with pytest.raises(FingerprintMismatch):
            await as_admin(bench, substitute_then_approve)
        assert bench.authority is not None
        assert CREW not in bench.authority.rooms()  # nothing approved, nothing added
        assert bench.authority.path.read_bytes() == before
        assert bench.registry.room_key_epochs(CREW) == {}
        assert CREW in a.machine.locked and a.device.keyring is not None
        assert a.device.keyring.key(CREW) is None


async def test_a_room_key_the_server_seals_itself_is_refused_and_the_room_stays_locked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with loopback() as bench:
        bench.add_encrypted_room(CREW)
        a = await bench.add_device("gate", rooms=(CREW,))
        await a.online()
        assert a.machine.room == CREW and CREW in a.machine.locked

        def forge(_: Authority, registry: Registry) -> None:
            # The server wraps an epoch secret of its own for the device, with a key of its own.
            member = next(m for m in registry.members() if m.name == "gate")
            assert member.identity_key is not None
            forged = RoomKey(
                room=CREW,
                epoch=1,
                sender_index=0,
                roster=((0, "gate"),),
                epoch_secret=new_epoch_secret(),
            )
            bundle = seal_bundle(
                AuthorityKey.generate(),
                forged,
                "gate",
                IdentityPublicKey.from_text(member.identity_key),
            )
            registry.publish_room_keys(CREW, [("gate", 1, bundle_to_text(bundle))])

        await as_admin(bench, forge)
        async with asyncio.timeout(KEYS_WAIT_S):
            await a.device.until(lambda m: REFUSED_SIGNATURE in m.locked.get(CREW, ""))
        assert any(REFUSED_SIGNATURE in r.getMessage() for r in caplog.records)
        assert a.device.keyring is not None and a.device.keyring.key(CREW) is None

        # A press there: the error tone, and the microphone never opens.
        errors = a.device.counters.tones.count(Tone.ERROR)
        a.button.press()
        await eventually(lambda: a.device.counters.tones.count(Tone.ERROR) > errors)
        assert not a.machine.capture_open and not a.mic.is_open
        assert a.machine.talk is Talk.IDLE
        a.button.release()
        assert not a.machine.capture_open and not a.mic.is_open
        assert a.device.counters.packets_sent == 0 and a.device.counters.talks == 0
        assert REFUSED_SIGNATURE in (a.machine.last_error or "")


# --------------------------------------------------------------------------- 3. revocation


async def test_a_member_removed_under_a_live_talk_cannot_open_the_new_epoch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with loopback() as bench:
        bench.add_encrypted_room(CREW)
        tap = Tap.on(bench.server, monkeypatch)
        a = await bench.add_device("a", rooms=(CREW,))  # a looping tone
        b = await bench.add_device("b", silence(0.1, sample_rate=RATE), rooms=(CREW,))
        c = await bench.add_device("c", silence(0.1, sample_rate=RATE), rooms=(CREW,))
        for sim in (a, b, c):
            await sim.online()
            await bench.approve(sim)
        for sim in (a, b, c):
            await keyed(sim)
        assert bench.authority is not None
        old = bench.authority.epoch(CREW)
        c_keyring = c.device.keyring
        assert c_keyring is not None

        a.button.press()
        await a.transmitting()
        await eventually(lambda: c.device.counters.packets_received >= 10, what="C hears A before")
        assert c.device.counters.packets_unopened == 0

        def remove_c(authority: Authority, registry: Registry) -> None:
            authority.remove(CREW, "c")
            keys.sync(authority, registry)

        await as_admin(bench, remove_c)
        new = bench.authority.epoch(CREW)
        assert new > old
        await keyed(a, epoch=new)
        await keyed(b, epoch=new)
        rotated = len(tap.frames)
        await eventually(
            lambda: sum(1 for k in tap.kids(rotated) if split_kid(k)[0] == new) >= 10,
            what="A talks under the new epoch",
        )
        heard_by_b = b.device.counters.packets_received
        await eventually(
            lambda: b.device.counters.packets_received >= heard_by_b + 10, what="B hears on"
        )
        a.button.release()
        await a.idle()
        await b.until(lambda m: not m.incoming)

        # B opened everything, across the rotation; C opened nothing of the new epoch.
        assert b.device.counters.packets_unopened == 0
        fresh = [f.payload for f in tap.frames if split_kid(decode_header(f.payload)[0])[0] == new]
        assert len(fresh) >= 10
        assert c.device.counters.packets_unopened >= len(fresh) - 2  # all that reached it
        assert c.device.keyring is c_keyring  # C kept its old keyring …
        key = c_keyring.key(CREW)
        assert key is not None and key.epoch == old  # … and its old key
        for payload in fresh:
            with pytest.raises((SFrameError, NoRoomKey)):
                c_keyring.open(CREW, payload)
        assert bench.registry.room_key_epochs(CREW) == {"a": new, "b": new}


# --------------------------------------------------------------------------- 4. catching up


async def test_a_device_offline_at_a_rotation_gets_the_new_epoch_at_its_next_logon() -> None:
    async with loopback() as bench:
        bench.add_encrypted_room(CREW)
        a = await bench.add_device("a", rooms=(CREW,))
        b = await bench.add_device("b", silence(0.1, sample_rate=RATE), rooms=(CREW,))
        for sim in (a, b):
            await sim.online()
            await bench.approve(sim)
        for sim in (a, b):
            await keyed(sim)
        assert bench.authority is not None
        old = bench.authority.epoch(CREW)

        await b.stop()
        bench.devices.remove(b)

        def rotate(authority: Authority, registry: Registry) -> None:
            authority.rotate(CREW)
            keys.sync(authority, registry)

        await as_admin(bench, rotate)
        new = bench.authority.epoch(CREW)
        assert new > old
        await keyed(a, epoch=new)

        # B starts again from its state directory (as after a power cut) and logs on.
        b = SimDevice.build(b.device.config, silence(0.1, sample_rate=RATE))
        await b.start()
        bench.devices.append(b)
        await b.online()
        await keyed(b, epoch=new)

        a.button.press()
        await a.transmitting()
        await eventually(lambda: b.device.mixer.stats.received >= 10, what="B hears A")
        a.button.release()
        await a.idle()
        assert b.device.counters.packets_unopened == 0


async def test_a_late_entrant_hears_an_encrypted_talk_already_going_on() -> None:
    """Late entry works in an encrypted room: B logs on while A talks; its room key comes
    before the talk's start (the server's order), and it opens A's packets from the first it
    gets (each SFrame packet stands alone)."""
    async with loopback() as bench:
        bench.add_encrypted_room(CREW)
        speech = speech_sample(RATE)
        a = await bench.add_device("a", speech, rooms=(CREW,))
        b = await bench.add_device("b", silence(0.1, sample_rate=RATE), rooms=(CREW,))
        for sim in (a, b):
            await sim.online()
            await bench.approve(sim)
        for sim in (a, b):
            await keyed(sim)
        await b.stop()
        bench.devices.remove(b)

        a.button.press()
        await a.transmitting()
        b = SimDevice.build(b.device.config, silence(0.1, sample_rate=RATE))
        await b.start()
        bench.devices.append(b)
        await b.online()
        await eventually(lambda: b.device.mixer.stats.received >= 20, what="B hears A's talk")
        a.button.release()
        await a.idle()
        assert b.device.counters.streams_heard == 1  # the talk it joined
        # Every packet it got opened. (One still in flight at the release may be counted as
        # received after the mixer's stream ended: received >= what the mixer took.)
        assert b.device.counters.packets_unopened == 0
        assert b.device.counters.packets_received >= b.device.mixer.stats.received >= 20


# --------------------------------------------------------------------------- 5. the CLI


def test_pttd_keys_approve_with_a_wrong_fingerprint_says_so_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, key_file = tmp_path / "server.db", tmp_path / "authority.json"
    assert cli.main(["server", "room", "add", CREW, "--db", str(db)]) == 0
    # As a missing key file's message says: `pttd keys init FILE`.
    assert cli.main(["keys", "init", str(key_file), "--db", str(db)]) == 0
    with Registry(db) as registry:
        registry.set_encrypted(CREW, True)
        code = registry.create_pair_code([CREW])
        registry.redeem_pair_code(code.code, "gate")
        device = IdentityKey.generate()
        registry.set_identity_key("device", "gate", device.public.to_text())
    before = key_file.read_bytes()
    wrong = str(IdentityKey.generate().public.fingerprint)
    capsys.readouterr()
    args = ["keys", "approve", "gate", wrong, "--key-file", str(key_file), "--db", str(db)]
    assert cli.main(args) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("pttd: "), err
    assert "does not match the fingerprint read on the device" in err
    assert "Traceback" not in err
    assert key_file.read_bytes() == before
    with Registry(db) as registry:
        assert registry.room_key_epochs(CREW) == {}

    # The right one approves (the same command line otherwise).
    args[3] = str(device.public.fingerprint)
    assert cli.main(args) == 0
    assert "gate approved for crew" in capsys.readouterr().out
    assert key_file.read_bytes() != before
