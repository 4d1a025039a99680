"""Audio quality and CPU cost of the device's audio path, on the shipped speech sample.

The sample is ``pttd/data/speech.wav`` (espeak-ng, 16 kHz mono, 5 s). It is brought to the
device's 48 kHz once, and the 48 kHz outputs are brought back to 16 kHz, by pttd's one resampler
(:func:`pttd.radio.audio.resample.resample`, soxr ``HQ``): that round trip alone scores the PESQ
maximum (``resampling_only``), so the conversions add nothing to what is measured. Every output
is aligned to what went in by cross-correlation first.

Quality: PESQ wide-band (ITU-T P.862.2, the ``pesq`` package) against the 16 kHz original, of

* ``codec_only``: the device's Opus settings, encode then decode, frame by frame, no transport;
* ``chain``: two simulated devices (``pttd.sim.loopback``) and the real room server on
  loopback: device A's clocked microphone plays the sample while its PTT is held → encoder →
  packets → server → device B's link → jitter buffer → decoder → mixer → B's recording speaker;
* the same two with 5 % of the packets lost (``*_loss5``): the same packet indices (seeded) for
  both. In the chain they are really lost on the way to B: B connects to the server through a
  TCP proxy that parses the server's websocket frames and leaves out the binary frames carrying
  those packet ids (whole frames, so the websocket stream stays valid). The loss sits between
  server and listener because the server numbers packets as they arrive: a packet dropped before
  the server would leave no gap for the jitter buffer to see. ``codec_only_loss5`` decodes a lost
  packet the way the jitter buffer has it decoded: from the next packet's in-band FEC data when
  the next packet is there (libopus falls back to concealment when it carries none), else by
  concealment. Whether the packets carry FEC data at all is read from their SILK LBRR flag.

* ``chain_encrypted``: the chain without loss in an end-to-end encrypted room
  (:data:`E2EE_ROOM`): a key authority made on the fly approves both devices, the server pushes
  them the room key, and every packet goes SFrame-sealed by A and opened by B.

B plays at volume 87 (0 dB gain). Chain rounds are repeated; the figure is their median.

Cost: CPU microseconds (``time.thread_time_ns``) per 20 ms frame, in this process, unpaced, no
sockets, over 500 frames of the sample, the median of several rounds, pinned to one CPU:

* ``libopus_encode``: the opuslib ctypes call to ``opus_encode`` alone, frame pointers made
  beforehand;
* ``tx_path``: what the daemon does with each captured frame: ``Device._on_frame`` (the audio
  input's callback) with the state machine transmitting: encode, ``CapturedFrame`` through the
  machine, ``SendAudio`` carried out, the ``AudioPacket`` bytes built for the link (which has no
  socket here, so nothing is written);
* ``libopus_decode``: the ctypes call to ``opus_decode`` alone, on the same frames' packets;
* ``rx_path``: per packet, what the link and the daemon do with a binary frame (parse it,
  ``Device._on_link_event``: counters, ``Mixer.push_packet``) plus one ``Mixer.pull`` of a frame
  (jitter buffer, decode, gain, mix, saturation, counters), on a clock that advances 20 ms per
  frame so the jitter buffer plays every packet;
* ``tx_path_encrypted``, ``rx_path_encrypted``: the same two in an end-to-end encrypted room,
  the device's keyring holding its room key (made here: a fresh key authority, identities and
  sealed bundles, opened by ``Keyring.accept``): each frame SFrame-sealed on the way out, each
  packet (sealed by another member) opened on the way in.

Targets: chain >= 0.98 x codec_only (both cases); each path <= 1.5 x its libopus figure; each
encrypted path <= 1.3 x the clear one; chain_encrypted >= 0.99 x chain.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import math
import os
import random
import struct
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import opuslib  # type: ignore[import-untyped]
import opuslib.api.decoder  # type: ignore[import-untyped]
import opuslib.api.encoder  # type: ignore[import-untyped]

from pttd.bench.common import (
    add_output_arguments,
    emit,
    finish,
    load_average,
    machine,
    mark,
    median,
    poll,
    start_logging,
)
from pttd.bench.server import BenchError, pinned
from pttd.demo import speech_sample
from pttd.e2ee.keyring import Keyring
from pttd.e2ee.keys import (
    AuthorityKey,
    IdentityKey,
    RoomKey,
    bundle_to_text,
    new_epoch_secret,
    seal_bundle,
)
from pttd.radio.audio import Pcm, to_pcm
from pttd.radio.audio.codec import Decoder, Encoder, OpusSettings
from pttd.radio.audio.mixer import Mixer
from pttd.radio.audio.resample import resample
from pttd.radio.config import AudioConfig
from pttd.radio.daemon import Device
from pttd.radio.machine import Link, LinkUp, Paired, PttPressed, StreamGranted
from pttd.sim.audio import silence
from pttd.sim.device import SimDevice, sim_config
from pttd.sim.loopback import ROOM, Loopback, loopback
from pttd.wire import messages as p

log = logging.getLogger(__name__)

Floats = npt.NDArray[np.float64]

RATE: Final = 48000  # the device's rate
REF_RATE: Final = 16000  # the sample's rate, PESQ wide-band's
FRAME_MS: Final = 20
LOSS_RATE: Final = 0.05
LOSS_SEED: Final = 7
UNITY_VOLUME: Final = 87  # volume_to_db(87) = -0.04 dB
TAIL_S: Final = 0.3  # the PTT is held this long after the sample ends
TALK_SLACK_S: Final = 10.0  # how much longer than real time the talk may take to send
STREAM_ID: Final = 7  # CPU part

E2EE_ROOM: Final = "crew"  # the end-to-end encrypted room of the encrypted measurements

TARGET_PESQ_RATIO: Final = 0.98
TARGET_CPU_RATIO: Final = 1.5
TARGET_E2EE_PESQ_RATIO: Final = 0.99  # encrypted chain / clear chain
TARGET_E2EE_CPU_RATIO: Final = 1.3  # encrypted path / clear path

# Defaults: full run, then --quick.
CHAIN_ROUNDS: Final = (3, 1)
CPU_ROUNDS: Final = (7, 3)
CPU_FRAMES: Final = 500

ONLINE_TIMEOUT: Final = 10.0
DRAIN_TIMEOUT: Final = 5.0
TONES_S: Final = 0.4  # B's 'connected' tone plays out before its speaker is cleared


# --------------------------------------------------------------------------- signals


def best_lag(recording: Floats, sent: Floats) -> int:
    """The delay in samples (>= 0) at which ``sent`` best matches ``recording``."""
    size = 1 << (recording.shape[0] + sent.shape[0] - 1).bit_length()
    product = np.fft.rfft(recording, size) * np.conj(np.fft.rfft(sent, size))
    corr = np.fft.irfft(product, size)[: recording.shape[0]]
    return int(np.argmax(corr))


def aligned(recording: npt.NDArray[Any], sent: Pcm) -> tuple[Floats, int]:
    """The stretch of ``recording`` that matches ``sent`` (zero-padded if short), and its lag."""
    rec = np.asarray(recording, np.float64)
    lag = best_lag(rec, sent.astype(np.float64))
    part = rec[lag : lag + sent.shape[0]]
    out = np.zeros(sent.shape[0], np.float64)
    out[: part.shape[0]] = part
    return out, lag


def pesq_wb(reference: Pcm, degraded: Floats) -> float:
    """PESQ wide-band MOS-LQO of ``degraded`` against ``reference``, both at 16 kHz."""
    try:
        from pesq import pesq  # type: ignore[import-untyped]  # noqa: PLC0415 (optional extra)
    except ImportError as exc:
        raise BenchError("the audio benchmark needs pesq: pip install 'pttd[bench]'") from exc
    return float(pesq(REF_RATE, reference.astype(np.float32), degraded.astype(np.float32), "wb"))


def score(reference: Pcm, sent: Pcm, output: npt.NDArray[Any]) -> float:
    """PESQ WB of a 48 kHz ``output`` of ``sent`` (48 kHz) against the 16 kHz ``reference``."""
    part, _lag = aligned(output, sent)
    return pesq_wb(reference, resample(part, RATE, REF_RATE))


def has_fec(packet: bytes) -> bool:
    """Whether an Opus packet of one frame carries in-band FEC data (SILK LBRR).

    In SILK and hybrid packets the first symbols after the TOC byte are the VAD flag of each
    SILK frame, then the LBRR flag, each coded with probability 1/2: the leading bits of the
    second byte.
    """
    if len(packet) < 2:
        return False
    toc = packet[0]
    config = toc >> 3
    if config >= 16 or toc & 0x3:  # CELT only, or several frames in the packet
        return False
    frame_ms = (10, 20, 40, 60)[config & 0x3] if config < 12 else (10, 20)[config & 0x1]
    silk_frames = max(1, frame_ms // 20)
    return bool((packet[1] >> (7 - silk_frames)) & 1)


def frames_of(signal: Pcm, samples: int) -> list[Pcm]:
    """``signal`` cut into frames, the last padded with silence."""
    count = -(-signal.shape[0] // samples)
    padded = np.zeros(count * samples, np.int16)
    padded[: signal.shape[0]] = signal
    return [padded[i * samples : (i + 1) * samples] for i in range(count)]


def lost_packets(count: int, rate: float, seed: int) -> frozenset[int]:
    """``round(rate * count)`` packet indices out of ``range(count)``, seeded."""
    return frozenset(random.Random(seed).sample(range(count), round(rate * count)))


# --------------------------------------------------------------------------- codec only


@dataclass(slots=True)
class Recovery:
    """How the lost packets were played."""

    lost: int = 0
    fec: int = 0  # from the next packet's FEC data
    no_fec_data: int = 0  # the next packet was there but carried none: libopus concealed
    concealed: int = 0  # the next packet was lost too


def codec_only(packets: list[bytes], lost: frozenset[int], samples: int) -> tuple[Pcm, Recovery]:
    """Decode ``packets`` with those in ``lost`` missing, recovering them as the jitter buffer
    does (from the next packet's FEC data when it is there, else concealment)."""
    decoder = Decoder(RATE)
    out: list[Pcm] = []
    tally = Recovery()
    for k, packet in enumerate(packets):
        if k not in lost:
            out.append(decoder.decode(packet))
            continue
        tally.lost += 1
        following = packets[k + 1] if k + 1 < len(packets) and k + 1 not in lost else None
        if following is None:
            tally.concealed += 1
            out.append(decoder.conceal(samples))
        else:
            if has_fec(following):
                tally.fec += 1
            else:
                tally.no_fec_data += 1
            out.append(decoder.decode_fec(following, samples))
    return np.concatenate(out), tally


# --------------------------------------------------------------------------- the lossy proxy


class LossyProxy:
    """A TCP proxy on loopback in front of the room server that loses chosen audio packets on
    their way to the client.

    Client to server, bytes pass as they are. Server to client, after the HTTP upgrade answer,
    it reads websocket frames (the server's are unmasked) and leaves out each binary frame whose
    audio packet id is in ``drop``; every other frame passes unchanged.
    """

    def __init__(self, upstream_port: int, drop: frozenset[int]) -> None:
        self.upstream_port = upstream_port
        self.drop = drop
        self.passed = 0  # audio packets
        self.dropped = 0
        self.fec_after_drop = 0  # packets right after a dropped one that carry FEC data
        self._dropped_ids: set[int] = set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    @property
    def url(self) -> str:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        up_writer: asyncio.StreamWriter | None = None
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            legs = [
                asyncio.create_task(self._pipe(reader, up_writer)),
                asyncio.create_task(self._frames(up_reader, writer)),
            ]
            try:
                await asyncio.wait(legs, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for leg in legs:
                    leg.cancel()
                await asyncio.gather(*legs, return_exceptions=True)
        except OSError as exc:
            log.warning("proxy: %s", exc)
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    w.close()
            self._tasks.discard(task)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()

    async def _frames(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(await reader.readuntil(b"\r\n\r\n"))  # the HTTP 101 answer
            while True:
                head = await reader.readexactly(2)
                length = head[1] & 0x7F
                extended = b""
                if length == 126:
                    extended = await reader.readexactly(2)
                    length = struct.unpack(">H", extended)[0]
                elif length == 127:
                    extended = await reader.readexactly(8)
                    length = struct.unpack(">Q", extended)[0]
                mask = await reader.readexactly(4) if head[1] & 0x80 else b""
                payload = await reader.readexactly(length)
                if not mask and self._lose(head[0], payload):
                    continue
                writer.write(head + extended + mask + payload)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return

    def _lose(self, first: int, payload: bytes) -> bool:
        binary_and_final = first & 0x0F == 0x2 and first & 0x80
        if not binary_and_final or len(payload) <= p.AUDIO_HEADER_SIZE:
            return False
        if payload[0] != p.AUDIO_PACKET_TYPE:
            return False
        packet_id: int = struct.unpack_from(">I", payload, 5)[0]
        if packet_id in self.drop:
            self.dropped += 1
            self._dropped_ids.add(packet_id)
            return True
        self.passed += 1
        if packet_id - 1 in self._dropped_ids and has_fec(payload[p.AUDIO_HEADER_SIZE :]):
            self.fec_after_drop += 1
        return False


# --------------------------------------------------------------------------- the chain


@dataclass(slots=True)
class ChainRun:
    recording: Pcm
    lost: int  # packets A sent that B did not receive (the proxy's drops included)
    stats: dict[str, int] = field(default_factory=dict)


async def run_chain(
    mic: Pcm, audio: AudioConfig, drop: frozenset[int], *, encrypted: bool = False
) -> ChainRun:
    """A talks ``mic`` to B through the server on loopback; B hears it through the proxy.
    ``encrypted``: in the end-to-end encrypted room :data:`E2EE_ROOM`, both devices approved."""
    talk_s = mic.shape[0] / RATE + TAIL_S
    talk_packets = math.ceil(talk_s * 1000 / audio.frame_ms)
    async with loopback() as bench:
        room = ROOM
        if encrypted:
            room = E2EE_ROOM
            bench.add_encrypted_room(room)
        proxy = LossyProxy(bench.server.port, drop)
        await proxy.start()
        try:
            a = await bench.add_device("talker", mic, audio, rooms=(room,))
            listener_audio = replace(audio, volume=UNITY_VOLUME)
            b = await bench.add_device(
                "listener",
                silence(0.1, sample_rate=RATE),
                listener_audio,
                url=proxy.url,
                rooms=(room,),
            )
            async with asyncio.timeout(ONLINE_TIMEOUT):
                await a.device.until(lambda m: m.link is Link.ONLINE)
                await b.device.until(lambda m: m.link is Link.ONLINE)
                if encrypted:
                    await ready_in_encrypted_room(bench, (a, b), room)
            await asyncio.sleep(TONES_S)
            b.speaker.clear()
            sent_before = a.device.counters.packets_sent
            a.button.press()
            # Held until the whole sample and the tail went out: on a loaded machine the
            # capture may start late, and a talk timed by the wall clock would cut the end.
            if not await poll(
                lambda: a.device.counters.packets_sent - sent_before >= talk_packets,
                talk_s + TALK_SLACK_S,
            ):
                raise BenchError(f"the chain: A did not send {talk_packets} packets")
            a.button.release()
            mixer = b.device.mixer
            if not await poll(
                lambda: bool(mixer.stats.played) and not mixer.stats.streams, DRAIN_TIMEOUT
            ):
                raise BenchError("the chain: B's stream did not end")
            stats = b.device.mixer.stats
            sent = a.device.counters.packets_sent
            received = b.device.counters.packets_received
            run = ChainRun(
                b.speaker.recording(),
                sent - received,
                {
                    "packets_sent": sent,
                    "packets_received": received,
                    "proxy_dropped": proxy.dropped,
                    "fec_data_after_drop": proxy.fec_after_drop,
                    "played": stats.played,
                    "recovered_fec": stats.recovered,
                    "concealed": stats.concealed,
                    "skipped": stats.dropped,
                    "late": stats.late,
                    "underruns": stats.underruns,
                    "packets_unopened": b.device.counters.packets_unopened,
                },
            )
            await b.stop()  # before its proxy goes, so that it does not see its link fail
        finally:
            await proxy.close()
    if not run.stats["played"]:
        raise BenchError("the chain: B played nothing")
    if run.stats["packets_unopened"]:
        raise BenchError(f"the chain: B could not open {run.stats['packets_unopened']} packets")
    return run


async def ready_in_encrypted_room(bench: Loopback, sims: Sequence[SimDevice], room: str) -> None:
    """The admin approves each of ``sims`` (online, paired after the room was made encrypted);
    returns once each holds the room key with ``room`` selected, so that it can talk there."""
    for sim in sims:
        await bench.approve(sim)
    for sim in sims:
        await sim.device.until(lambda m: m.room == room and room not in m.locked)


# --------------------------------------------------------------------------- CPU


class FakeClock:
    """A monotonic clock that the CPU measurement moves on by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


_Int16Ptr = ctypes.POINTER(ctypes.c_int16)


class RoomKeys:
    """The key material of an end-to-end encrypted room, made on the spot: a key authority, an
    identity per member, the room key (epoch 1) sealed for each. :meth:`keyring` gives a member's
    keyring holding it, as the daemon's is once the server has pushed its room key."""

    def __init__(self, room: str, names: Sequence[str]) -> None:
        self.room = room
        self.authority = AuthorityKey.generate()
        secret = new_epoch_secret()
        roster = tuple(enumerate(names))
        self._members: dict[str, tuple[IdentityKey, str]] = {}
        for index, name in roster:
            identity = IdentityKey.generate()
            key = RoomKey(
                room=room, epoch=1, sender_index=index, roster=roster, epoch_secret=secret
            )
            bundle = seal_bundle(self.authority, key, name, identity.public)
            self._members[name] = (identity, bundle_to_text(bundle))

    def keyring(self, name: str) -> Keyring:
        """A fresh keyring of member ``name`` (its SFrame receiver has seen nothing yet)."""
        identity, bundle = self._members[name]
        keyring = Keyring(identity, self.authority.public, name, generation=1)
        keyring.set_encrypted(self.room, True)
        keyring.accept(self.room, bundle)
        return keyring


class CpuBench:
    """The six CPU figures, each over the same frames (see the module docstring)."""

    def __init__(self, frames: list[Pcm], audio: AudioConfig, workdir: Path) -> None:
        self.audio = replace(audio, backend="sim")
        self.settings = OpusSettings.from_config(audio)
        self.samples = self.settings.frame_samples
        self.frames = [np.ascontiguousarray(f) for f in frames]
        self.pointers = [f.ctypes.data_as(_Int16Ptr) for f in self.frames]
        encoder = Encoder(self.settings)
        self.packets = [encoder.encode(f) for f in self.frames]
        self.wire = [p.AudioPacket(STREAM_ID, k, pk).encode() for k, pk in enumerate(self.packets)]
        # The encrypted room: the rx device hears packets another member ("talker") sealed.
        self.keys = RoomKeys(ROOM, ("talker", "tx", "rx"))
        talker = self.keys.keyring("talker")
        self.suite = talker.suite(ROOM)
        self.sealed_wire = [
            p.AudioPacket(STREAM_ID, k, talker.seal(ROOM, pk)).encode()
            for k, pk in enumerate(self.packets)
        ]
        self.workdir = workdir
        self.clock = FakeClock()
        self.checks: dict[str, int] = {}

    @staticmethod
    def _per_frame_us(ns: int, frames: int) -> float:
        return ns / frames / 1000

    def libopus_encode(self) -> float:
        encoder = Encoder(self.settings)  # a fresh one, set up as the device's; kept alive:
        state = encoder.state  # its libopus state is freed with it
        out = ctypes.create_string_buffer(4000)
        encode, n = opuslib.api.encoder.libopus_encode, self.samples
        t0 = time.thread_time_ns()
        for pointer in self.pointers:
            encode(state, pointer, n, out, 4000)
        return self._per_frame_us(time.thread_time_ns() - t0, len(self.pointers))

    def _device(self, name: str, encrypted: bool = False) -> Device:
        config = sim_config(name, "", self.workdir / name, self.audio)
        device = SimDevice.build(config, silence(0.1, sample_rate=RATE), clock=self.clock).device
        if encrypted:  # ROOM is end-to-end encrypted, and the server has pushed its key
            device.keyring = self.keys.keyring(name)
        device.machine.handle(Paired(self.clock()))  # paired and online, without a link
        device.machine.handle(LinkUp(self.clock(), (ROOM,)))
        return device

    def tx_path(self, encrypted: bool = False) -> float:
        device = self._device("tx", encrypted)
        machine = device.machine
        machine.handle(PttPressed(self.clock()))
        assert machine.request is not None
        machine.handle(StreamGranted(self.clock(), machine.request, STREAM_ID))
        if not machine.transmitting or not machine.capture_open:
            raise BenchError("CPU bench: the device is not transmitting")
        if encrypted and device._sealed(b"probe") == b"probe":
            raise BenchError("CPU bench: the encrypted tx path does not seal")
        on_frame = device._on_frame  # what the audio input calls with each captured frame
        t = self.clock()
        t0 = time.thread_time_ns()
        for frame in self.frames:
            on_frame(frame, t)
            t += FRAME_MS / 1000
        spent = time.thread_time_ns() - t0
        self.checks["tx_packets_sealed" if encrypted else "tx_packets_built"] = (
            device.counters.packets_sent
        )
        return self._per_frame_us(spent, len(self.frames))

    def libopus_decode(self) -> float:
        raw = opuslib.Decoder(RATE, 1)
        state = raw.decoder_state
        pcm = np.zeros(RATE * 120 // 1000, np.int16)
        pointer = pcm.ctypes.data_as(_Int16Ptr)
        decode, most = opuslib.api.decoder.libopus_decode, pcm.shape[0]
        t0 = time.thread_time_ns()
        for packet in self.packets:
            decode(state, packet, len(packet), pointer, most, 0)
        return self._per_frame_us(time.thread_time_ns() - t0, len(self.packets))

    def rx_path(self, encrypted: bool = False) -> float:
        device = self._device("rx", encrypted)
        clock = self.clock
        device.mixer = mixer = Mixer(RATE, self.samples, volume=self.audio.volume, clock=clock)
        on_link_event = device._on_link_event  # what the link calls with what it received
        header = self.settings.codec_header()
        wire = self.wire
        if encrypted:
            header = replace(header, sframe_suite=self.suite)
            wire = self.sealed_wire
        on_link_event(p.OnStreamStart(STREAM_ID, ROOM, "talker", header, FRAME_MS))
        parse, n, step = p.parse_audio_packet, self.samples, FRAME_MS / 1000
        t0 = time.thread_time_ns()
        for frame in wire:
            clock.now += step
            on_link_event(parse(frame))
            mixer.pull(n)
        spent = time.thread_time_ns() - t0
        stats = mixer.stats
        suffix = "_encrypted" if encrypted else ""
        self.checks[f"rx_played{suffix}"] = stats.played
        self.checks[f"rx_concealed{suffix}"] = stats.concealed
        self.checks[f"rx_unopened{suffix}"] = device.counters.packets_unopened
        return self._per_frame_us(spent, len(wire))

    def round(self) -> dict[str, float]:
        return {
            "libopus_encode": self.libopus_encode(),
            "tx_path": self.tx_path(),
            "tx_path_encrypted": self.tx_path(encrypted=True),
            "libopus_decode": self.libopus_decode(),
            "rx_path": self.rx_path(),
            "rx_path_encrypted": self.rx_path(encrypted=True),
        }


@contextlib.contextmanager
def one_cpu(pin: bool) -> Iterator[str | None]:
    """Pin this thread to the last CPU it may use (Linux, two CPUs or more, when asked);
    yields which, or None."""
    cpus = sorted(os.sched_getaffinity(0)) if pin and sys.platform == "linux" else []
    if len(cpus) < 2:
        yield None
        return
    with pinned(frozenset(cpus[-1:])):
        yield f"CPU {cpus[-1]}"


# --------------------------------------------------------------------------- the whole run


@dataclass(frozen=True, slots=True)
class AudioSettings:
    chain_rounds: int = CHAIN_ROUNDS[0]
    cpu_rounds: int = CPU_ROUNDS[0]
    cpu_frames: int = CPU_FRAMES
    loss_rate: float = LOSS_RATE
    loss_seed: int = LOSS_SEED
    quick: bool = False
    pin_cpu: bool = True


async def bench(settings: AudioSettings) -> dict[str, Any]:
    """Run the quality and cost measurements; return the report (see the module docstring)."""
    began = time.perf_counter()
    load_before = load_average()
    audio = AudioConfig()  # the device's defaults
    opus = OpusSettings.from_config(audio)
    if audio.sample_rate != RATE or audio.frame_ms != FRAME_MS:
        raise BenchError(f"the bench expects {RATE} Hz, {FRAME_MS} ms frames")
    samples = opus.frame_samples
    reference = speech_sample(REF_RATE)
    mic = to_pcm(resample(reference, REF_RATE, RATE))
    resampling_only = pesq_wb(reference, resample(mic, RATE, REF_RATE))

    # Codec only: the sample and the tail of silence the chain's talker also captures.
    frames = frames_of(mic, samples) + [np.zeros(samples, np.int16)] * round(TAIL_S * 50)
    encoder = Encoder(opus)
    packets = [encoder.encode(f) for f in frames]
    speech_packets = -(-mic.shape[0] // samples)
    drop = lost_packets(speech_packets, settings.loss_rate, settings.loss_seed)
    clean, _ = codec_only(packets, frozenset(), samples)
    lossy, recovery = codec_only(packets, drop, samples)
    pesq_codec = score(reference, mic, clean)
    pesq_codec_loss = score(reference, mic, lossy)
    log.info(
        "codec only: PESQ WB %.3f, with %d%% loss %.3f",
        pesq_codec,
        round(settings.loss_rate * 100),
        pesq_codec_loss,
    )

    chains = (
        ("chain", frozenset[int](), False),
        ("chain_loss5", drop, False),
        ("chain_encrypted", frozenset[int](), True),
    )
    chain_scores: dict[str, list[float]] = {name: [] for name, _, _ in chains}
    chain_rounds: list[dict[str, Any]] = []
    lost = 0
    for i in range(settings.chain_rounds):
        this_round: dict[str, Any] = {"round": i + 1}
        for name, drops, encrypted in chains:
            run = await run_chain(mic, audio, drops, encrypted=encrypted)
            value = score(reference, mic, run.recording)
            chain_scores[name].append(value)
            if not drops:
                lost += run.lost
            this_round[name] = {"pesq_wb": round(value, 3), **run.stats}
            log.info(
                "round %d/%d %-12s PESQ WB %.3f  (%s)",
                i + 1,
                settings.chain_rounds,
                name,
                value,
                ", ".join(f"{k} {v}" for k, v in run.stats.items()),
            )
        chain_rounds.append(this_round)

    cpu_rounds: list[dict[str, float]] = []
    with (
        tempfile.TemporaryDirectory(prefix="pttd-bench-audio-") as tmp,
        one_cpu(settings.pin_cpu) as cpu,
    ):
        loop_frames = [frames[k % speech_packets] for k in range(settings.cpu_frames)]
        cpu_bench = CpuBench(loop_frames, audio, Path(tmp))
        cpu_bench.round()  # warm-up: caches, lazy imports, allocator
        for i in range(settings.cpu_rounds):
            figures = cpu_bench.round()
            cpu_rounds.append({k: round(v, 2) for k, v in figures.items()})
            log.info(
                "CPU round %d/%d: %s µs per frame",
                i + 1,
                settings.cpu_rounds,
                ", ".join(f"{k} {v:.1f}" for k, v in figures.items()),
            )
        checks = cpu_bench.checks
        if not checks.get("rx_played") == checks.get("rx_played_encrypted") == settings.cpu_frames:
            raise BenchError(f"CPU bench: the rx path did not play every packet: {checks}")
        if checks.get("rx_unopened_encrypted") or not checks.get("tx_packets_sealed"):
            raise BenchError(f"CPU bench: the encrypted paths did not seal or open: {checks}")

    pesq = {
        "codec_only": round(pesq_codec, 3),
        "chain": median(chain_scores["chain"], 3),
        "codec_only_loss5": round(pesq_codec_loss, 3),
        "chain_loss5": median(chain_scores["chain_loss5"], 3),
        "chain_encrypted": median(chain_scores["chain_encrypted"], 3),
        "resampling_only": round(resampling_only, 3),
    }
    cpu_us = {k: median([r[k] for r in cpu_rounds], 1) for k in cpu_rounds[0]}
    ratios = {
        "pesq_no_loss": round(pesq["chain"] / pesq["codec_only"], 3),
        "pesq_loss5": round(pesq["chain_loss5"] / pesq["codec_only_loss5"], 3),
        "tx_path": round(cpu_us["tx_path"] / cpu_us["libopus_encode"], 2),
        "rx_path": round(cpu_us["rx_path"] / cpu_us["libopus_decode"], 2),
        "pesq_encrypted": round(pesq["chain_encrypted"] / pesq["chain"], 3),
        "tx_path_encrypted": round(cpu_us["tx_path_encrypted"] / cpu_us["tx_path"], 2),
        "rx_path_encrypted": round(cpu_us["rx_path_encrypted"] / cpu_us["rx_path"], 2),
    }
    fec_packets = sum(has_fec(pk) for pk in packets[:speech_packets])
    return {
        "pesq_wb": pesq,
        "cpu_us_per_frame": cpu_us,
        "ratios": ratios,
        "lost": lost,
        "loss": {
            "rate": settings.loss_rate,
            "seed": settings.loss_seed,
            "packets_lost": len(drop),
            "packets": speech_packets,
            "codec_only": asdict(recovery),
            "chain": chain_rounds[-1]["chain_loss5"],
        },
        "fec": {
            "expected_loss_percent": opus.expected_loss_percent,
            "packets_with_fec_data": fec_packets,
            "packets": speech_packets,
        },
        "encrypted": {
            "room": E2EE_ROOM,
            "suite": cpu_bench.suite,
            "chain_packets_unopened": chain_rounds[-1]["chain_encrypted"]["packets_unopened"],
        },
        "targets": {
            "pesq_ratio": TARGET_PESQ_RATIO,
            "cpu_ratio": TARGET_CPU_RATIO,
            "e2ee_pesq_ratio": TARGET_E2EE_PESQ_RATIO,
            "e2ee_cpu_ratio": TARGET_E2EE_CPU_RATIO,
        },
        "targets_met": {
            "pesq_no_loss": ratios["pesq_no_loss"] >= TARGET_PESQ_RATIO,
            "pesq_loss5": ratios["pesq_loss5"] >= TARGET_PESQ_RATIO,
            "tx_path": ratios["tx_path"] <= TARGET_CPU_RATIO,
            "rx_path": ratios["rx_path"] <= TARGET_CPU_RATIO,
            "pesq_encrypted": ratios["pesq_encrypted"] >= TARGET_E2EE_PESQ_RATIO,
            "tx_path_encrypted": ratios["tx_path_encrypted"] <= TARGET_E2EE_CPU_RATIO,
            "rx_path_encrypted": ratios["rx_path_encrypted"] <= TARGET_E2EE_CPU_RATIO,
        },
        "settings": {
            **asdict(settings),
            "opus": asdict(opus),
            "listener_volume": UNITY_VOLUME,
            "sample_s": round(reference.shape[0] / REF_RATE, 2),
            "statistic": "median of rounds",
            "cpu_clock": "time.thread_time_ns",
            "cpu_pinning": cpu,
            **machine(load_before),
        },
        "rounds": {"chain": chain_rounds, "cpu_us_per_frame": cpu_rounds},
        "elapsed_s": round(time.perf_counter() - began, 1),
    }


# --------------------------------------------------------------------------- output, CLI


def format_report(report: dict[str, Any]) -> str:
    q, c, r, met = (report[k] for k in ("pesq_wb", "cpu_us_per_frame", "ratios", "targets_met"))
    t = report["targets"]
    s = report["settings"]
    loss, fec = report["loss"], report["fec"]
    rec = loss["codec_only"]
    chain = loss["chain"]
    lossy = f"{loss['rate']:.0%} loss"
    lines = [
        f"pttd bench audio: speech sample ({s['sample_s']} s, 16 kHz) at 48 kHz, Opus "
        f"{s['opus']['bitrate'] // 1000} kbit/s, {s['opus']['frame_ms']} ms frames, complexity "
        f"{s['opus']['complexity']}; median of {s['chain_rounds']} chain round(s)",
        "",
        f"PESQ WB (resampling 16k->48k->16k alone: {q['resampling_only']:.2f})",
        f"{'':<16}{'codec only':>11}{'chain':>8}{'ratio':>8}   target",
        f"{'no loss':<16}{q['codec_only']:>11.3f}{q['chain']:>8.3f}{r['pesq_no_loss']:>8.3f}"
        f"   >= {t['pesq_ratio']:.2f}  {mark(met['pesq_no_loss'])}",
        f"{lossy:<16}{q['codec_only_loss5']:>11.3f}{q['chain_loss5']:>8.3f}"
        f"{r['pesq_loss5']:>8.3f}   >= {t['pesq_ratio']:.2f}  {mark(met['pesq_loss5'])}",
        f"{'encrypted room':<16}{'':>11}{q['chain_encrypted']:>8.3f}{r['pesq_encrypted']:>8.3f}"
        f"   >= {t['e2ee_pesq_ratio']:.2f} x the clear chain  {mark(met['pesq_encrypted'])}",
        f"  {loss['packets_lost']} of {loss['packets']} packets lost. Codec only: {rec['fec']} "
        f"recovered from FEC data, {rec['no_fec_data']} concealed (next packet had no FEC data), "
        f"{rec['concealed']} concealed (next lost too).",
        f"  Chain (last round): {chain['proxy_dropped']} dropped by the proxy, jitter buffer "
        f"{chain['recovered_fec']} FEC recoveries, {chain['concealed']} concealed, "
        f"{chain['skipped']} skipped, {chain['underruns']} underruns.",
        f"  Packets carrying FEC data: {fec['packets_with_fec_data']} of {fec['packets']} "
        f"(expected_loss_percent {fec['expected_loss_percent']}).",
        "",
        f"CPU µs per {s['opus']['frame_ms']} ms frame ({s['cpu_frames']} frames, median of "
        f"{s['cpu_rounds']} rounds, {s['cpu_pinning'] or 'not pinned'})",
        f"{'libopus encode':<16}{c['libopus_encode']:>8.1f}",
        f"{'tx path':<16}{c['tx_path']:>8.1f}   x{r['tx_path']:.2f}   target <= "
        f"x{t['cpu_ratio']:.1f}  {mark(met['tx_path'])}",
        f"{'libopus decode':<16}{c['libopus_decode']:>8.1f}",
        f"{'rx path':<16}{c['rx_path']:>8.1f}   x{r['rx_path']:.2f}   target <= "
        f"x{t['cpu_ratio']:.1f}  {mark(met['rx_path'])}",
        f"End-to-end encrypted room (SFrame suite {report['encrypted']['suite']}), against the "
        "clear path",
        f"{'tx path':<16}{c['tx_path_encrypted']:>8.1f}   x{r['tx_path_encrypted']:.2f}   "
        f"target <= x{t['e2ee_cpu_ratio']:.1f}  {mark(met['tx_path_encrypted'])}",
        f"{'rx path':<16}{c['rx_path_encrypted']:>8.1f}   x{r['rx_path_encrypted']:.2f}   "
        f"target <= x{t['e2ee_cpu_ratio']:.1f}  {mark(met['rx_path_encrypted'])}",
        "",
        f"Load average {s['load_average_before']} before, {s['load_average_after']} after; took "
        f"{report['elapsed_s']:.0f} s.",
        "Other work on the machine delays packets: a late one makes the jitter buffer hold",
        "(conceal a frame and shift what follows), which PESQ marks down.",
    ]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_output_arguments(parser, "one chain round, fewer CPU rounds")
    parser.add_argument(
        "--no-pin",
        dest="pin_cpus",
        action="store_false",
        help="do not pin the CPU measurement to one CPU",
    )


def settings_from(args: argparse.Namespace) -> AudioSettings:
    pick = 1 if args.quick else 0
    return AudioSettings(
        chain_rounds=CHAIN_ROUNDS[pick],
        cpu_rounds=CPU_ROUNDS[pick],
        quick=args.quick,
        pin_cpu=args.pin_cpus,
    )


def run(args: argparse.Namespace) -> int:
    start_logging(args.quiet)
    report = asyncio.run(bench(settings_from(args)))
    emit(report, args, format_report)
    return finish("pttd bench audio", report["targets_met"], args.report_only)
