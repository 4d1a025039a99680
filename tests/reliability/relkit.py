"""Helpers for the reliability suite: simulated devices with short timeouts that can be pointed
at a proxy, and a privacy watch on the device state machine. The Channel-API client and
``eventually`` are shared: see ``tests/support/channel_client.py`` and ``tests/support/waits.py``;
the devices are built as every simulated device is (``pttd.sim.device``).

Imported by path (pytest puts this directory on ``sys.path``); the name is unique in the tree.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from channel_client import Client
from waits import TIMEOUT, eventually

from pttd.bench import common
from pttd.radio.audio import Pcm
from pttd.radio.config import AudioConfig, TalkConfig
from pttd.radio.link import LinkSettings, pair
from pttd.radio.machine import DeviceMachine, Event, Link, Talk
from pttd.radio.store import Credential, Store
from pttd.server.app import ServerSettings
from pttd.server.registry import Registry
from pttd.sim.audio import sine
from pttd.sim.device import SimDevice, sim_config
from pttd.wire import messages as p

ROOM = "alpha"
PASSWORDS = {
    "alice": "alice-long-password-1",
    "bob": "bob-long-password-2",
    "mallory": "mallory-long-password-3",
}
SAMPLE_RATE = 16000  # the simulated devices run at 16 kHz: cheaper Opus, same code paths

# Keepalive and back-off short enough that a stall or an outage shows in about a second.
FAST_LINK = LinkSettings(
    backoff_initial=0.05,
    backoff_max=0.3,
    open_timeout=2.0,
    answer_timeout=3.0,
    ping_interval=0.3,
    ping_timeout=0.6,
)


def fast_server_settings(**changes: Any) -> ServerSettings:
    base = ServerSettings(
        host="127.0.0.1",
        port=0,
        registry_poll=0.05,
        ping_interval=0.3,
        ping_timeout=0.6,
        close_timeout=0.5,
    )
    return replace(base, **changes)


def secret_fragments(secret: str, width: int = 10) -> set[str]:
    """Every ``width``-character window of ``secret`` (a leak of part of a secret is a leak)."""
    if len(secret) <= width:
        return {secret}
    return {secret[i : i + width] for i in range(len(secret) - width + 1)}


def code_spellings(code: str) -> set[str]:
    """A pairing code as a user might type it: with and without dashes, any case."""
    bare = code.replace("-", "")
    return {code, code.lower(), bare, bare.lower(), " ".join(code.split("-"))}


# --------------------------------------------------------------------------- protocol client


async def user_client(
    url: str, user: str, password: str, rooms: tuple[str, ...] = (ROOM,), **connect: Any
) -> Client:
    client = await Client.connect(url, **connect)
    answer = await client.logon(rooms, username=user, password=password)
    assert answer.success, answer
    return client


# --------------------------------------------------------------------------- privacy watch


@dataclass
class PrivacyWatch:
    """Wraps a device's state machine: after every event it handles, the microphone may be open
    only while online (or in the installer's audio test), and before every event the simulated
    microphone's real state must match what the machine last said."""

    sim: SimDevice
    violations: list[str]
    events: int = 0
    kinds: Counter[type[Event]] = field(default_factory=Counter)  # events handled, by kind
    _depth: int = 0

    @classmethod
    def install(cls, sim: SimDevice) -> PrivacyWatch:
        watch = cls(sim, [])
        machine = sim.device.machine
        handle = machine.handle

        def watched(event: Event) -> list[Any]:
            watch._before(machine, event)
            watch._depth += 1
            try:
                return handle(event)
            finally:
                watch._depth -= 1
                watch._after(machine, event)

        machine.handle = watched  # type: ignore[method-assign]
        return watch

    def _before(self, m: DeviceMachine, event: Event) -> None:
        self.events += 1
        self.kinds[type(event)] += 1
        if self._depth == 0 and self.sim.mic.is_open != m.capture_open:
            self.violations.append(
                f"before {type(event).__name__}: mic open={self.sim.mic.is_open} but machine "
                f"capture_open={m.capture_open}"
            )

    def _after(self, m: DeviceMachine, event: Event) -> None:
        if m.capture_open and m.link is not Link.ONLINE and not m.audio_test:
            self.violations.append(
                f"after {type(event).__name__}: capture open while link {m.link.value}"
            )
        if m.talk is not Talk.IDLE and not m.capture_open:
            self.violations.append(f"after {type(event).__name__}: talking with capture closed")

    def check(self) -> None:
        assert self.events > 0, "the watch saw no event: not installed?"
        assert not self.violations, self.violations[:5]
        if self._depth == 0:
            assert self.sim.mic.is_open == self.sim.device.machine.capture_open


# --------------------------------------------------------------------------- simulated devices


@dataclass
class Radio:
    """A simulated device under test, with its privacy watch."""

    sim: SimDevice
    watch: PrivacyWatch
    credential: Credential

    @property
    def machine(self) -> DeviceMachine:
        return self.sim.device.machine

    @property
    def name(self) -> str:
        return self.credential.device_name

    @property
    def online(self) -> bool:
        return self.machine.link is Link.ONLINE

    async def wait_online(self, timeout: float = TIMEOUT) -> None:
        await eventually(lambda: self.online, timeout, f"{self.name} online")

    @property
    def connects(self) -> int:
        return self.sim.device.link.connects

    async def wait_reconnected(self, since: int, timeout: float = TIMEOUT) -> None:
        """Online on a connection made after the one counted in ``since``."""
        await eventually(
            lambda: self.connects > since and self.online, timeout, f"{self.name} reconnected"
        )

    async def wait_offline(self, timeout: float = TIMEOUT) -> None:
        await eventually(lambda: not self.online, timeout, f"{self.name} offline")

    async def wait_transmitting(self, timeout: float = TIMEOUT) -> None:
        await eventually(lambda: self.machine.transmitting, timeout, f"{self.name} transmitting")

    def seen(self, kind: type[Event]) -> int:
        """How many events of ``kind`` the device has handled (``LinkConnecting``: attempts)."""
        return self.watch.kinds[kind]

    def check_waits_for_a_press(self) -> None:
        """No talk starts until a new press, however long one waits: only a press starts a talk
        (the state machine decides every talk), and the machine is idle with no request out and
        no talk timer armed, waiting for every button to be up (hold mode) or with its latch
        dropped (toggle mode). A state, checked now: no pause watches for it."""
        m = self.machine
        assert m.talk is Talk.IDLE and m.request is None and not m.capture_open, m
        assert m.blocked if m.held_buttons else not m.latched, m
        assert not self.sim.mic.is_open

    async def wait_mic_closed(self, timeout: float = TIMEOUT) -> None:
        await eventually(
            lambda: not self.sim.mic.is_open and not self.machine.capture_open,
            timeout,
            f"{self.name} mic closed",
        )


def speech_like(seconds: float = 2.0) -> Pcm:
    """A test signal (two tones): cheap to make, never silent."""
    a = sine(440.0, seconds, sample_rate=SAMPLE_RATE, amplitude=0.25)
    b = sine(1250.0, seconds, sample_rate=SAMPLE_RATE, amplitude=0.15)
    mixed: Pcm = (a.astype("int32") + b.astype("int32")).clip(-32767, 32767).astype("int16")
    return mixed


async def pair_over_wire(
    url: str, registry: Registry, name: str, rooms: tuple[str, ...] = (ROOM,)
) -> Credential:
    code = await asyncio.to_thread(registry.create_pair_code, list(rooms))
    return await pair(url, code.code, name, FAST_LINK)


async def start_radio(
    directory: Path,
    credential: Credential,
    *,
    url: str | None = None,
    mic: Pcm | None = None,
    talk: TalkConfig | None = None,
    link: LinkSettings = FAST_LINK,
    restart_on_open: bool = True,
    audio: AudioConfig | None = None,
    save: bool = True,
    ca_file: str = "",
) -> Radio:
    """A simulated device whose stored credential points at ``url`` (a proxy, say); with
    ``save=False`` it starts on what its state directory already holds."""
    if url is not None:
        credential = replace(credential, server_url=url)
    state = directory / credential.device_name
    if save:
        Store(state).save_credential(credential)
    config = sim_config(
        credential.device_name,
        credential.server_url,
        state,
        audio or AudioConfig(sample_rate=SAMPLE_RATE, bitrate=16000, complexity=0, volume=87),
        talk=talk,
        ca_file=ca_file,
    )
    sim = SimDevice.build(
        config,
        mic if mic is not None else speech_like(),
        restart_on_open=restart_on_open,
        timeout=TIMEOUT,
    )
    tls = sim.device.link.settings  # what the device made of its config: keep that
    sim.device.link.settings = replace(link, ca_file=tls.ca_file, tls_verify=tls.tls_verify)
    watch = PrivacyWatch.install(sim)
    await sim.start()
    return Radio(sim, watch, credential)


@contextlib.asynccontextmanager
async def radios_stopped(radios: list[Radio]) -> AsyncIterator[list[Radio]]:
    """Stop every radio however the test ends (bounded); check their privacy watches."""
    try:
        yield radios
    finally:
        for radio in radios:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(radio.sim.stop(), TIMEOUT)
    for radio in radios:
        radio.watch.check()


async def hear_stream(listener: Client, talker: str, timeout: float = TIMEOUT) -> p.OnStreamStart:
    """Wait for a stream of ``talker`` to start and its first packet to arrive."""
    start = await listener.next_of(p.OnStreamStart, timeout, where=lambda s: s.from_ == talker)
    await listener.next_of(p.AudioPacket, timeout, where=lambda a: a.stream_id == start.stream_id)
    return start


def proc_rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc (as the benchmarks read it)."""
    kb = common.proc_status_kb(pid, "VmRSS")
    assert kb is not None, "no VmRSS in /proc/PID/status"
    return kb * 1024


def proc_cpu_seconds(pid: int) -> float:
    """CPU time of a process, from /proc (as the benchmarks read it)."""
    seconds = common.proc_cpu_seconds(pid)
    assert seconds is not None, "no /proc/PID"
    return seconds
