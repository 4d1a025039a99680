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

from pttd.bench.audio import RATE, REF_RATE, UNITY_VOLUME, score
from pttd.demo import speech_sample
from pttd.e2ee.authority import Authority
from pttd.e2ee.keys import make_kid
from pttd.e2ee.sframe import decode_header
from pttd.radio.audio.codec import Decoder
from pttd.radio.config import AudioConfig
from pttd.radio.inputs import Button
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
    assert pesq_encrypted >= 2.5
    if glitches_encrypted == glitches_clear == 0:
        assert pesq_encrypted >= pesq_clear - 0.1
