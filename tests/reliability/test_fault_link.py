"""Link faults between a device and the room server, through a loopback proxy the tests control:
stall, drop (reset), cut (black hole), slow drip.

The talker is a simulated device whose server address is the proxy; the listener is a plain
Channel-API client connected to the server directly, so it sees what the server does. Keepalive
pings are short on both sides (0.3 s interval, 0.6 s timeout), so a dead link shows within seconds.
Throughout, the privacy watch checks that the microphone is never open while the device is not
online.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from channel_client import Client
from faultproxy import FaultProxy
from relkit import (
    FAST_LINK,
    PASSWORDS,
    Radio,
    fast_server_settings,
    hear_stream,
    pair_over_wire,
    radios_stopped,
    start_radio,
    user_client,
)
from waits import eventually

from pttd.radio.machine import Link, LinkConnecting, LinkDown, Tone
from pttd.server.app import RoomServer, ServerSettings
from pttd.server.registry import Registry
from pttd.wire import messages as p


@dataclass
class Rig:
    server: RoomServer
    proxy: FaultProxy
    talker: Radio
    listener: Client


@pytest.fixture
async def rig(tmp_path: Path, registry: Registry, server: RoomServer) -> AsyncIterator[Rig]:
    async with FaultProxy(server.port) as proxy:
        credential = await pair_over_wire(server.url, registry, "radio-far")
        talker = await start_radio(
            tmp_path, credential, url=proxy.url, link=replace(FAST_LINK, open_timeout=1.5)
        )
        listener = await user_client(server.url, "alice", PASSWORDS["alice"])
        async with radios_stopped([talker]):
            await talker.wait_online()
            yield Rig(server, proxy, talker, listener)
            proxy.restore()
        await listener.close()


async def listener_sees_users(listener: Client, count: int) -> None:
    await listener.next_of(p.OnChannelStatus, where=lambda s: s.users_online == count)


async def start_talk(rig: Rig) -> int:
    rig.talker.sim.button.press()
    await rig.talker.wait_transmitting()
    start = await hear_stream(rig.listener, rig.talker.name)
    return start.stream_id


async def talk_fully_heard(rig: Rig, packets: int = 20) -> None:
    """A whole talk on a good link (``packets`` sent at least): every packet the device sent
    reaches the listener."""
    counters = rig.talker.sim.device.counters
    sent_before = counters.packets_sent
    rig.talker.sim.button.press()
    await rig.talker.wait_transmitting()
    start = await rig.listener.next_of(p.OnStreamStart, where=lambda s: s.from_ == "radio-far")
    await eventually(lambda: counters.packets_sent - sent_before >= packets, what="talking")
    rig.talker.sim.button.release()
    await rig.talker.wait_mic_closed()
    got = 0
    while True:
        event = await rig.listener.next()
        if isinstance(event, p.AudioPacket) and event.stream_id == start.stream_id:
            got += 1
        elif isinstance(event, p.OnStreamStop) and event.stream_id == start.stream_id:
            assert event.reason is None  # the talker's own stop
            break
    assert got == counters.packets_sent - sent_before > 0


async def test_stall_while_transmitting_is_detected_on_both_sides(rig: Rig) -> None:
    stream_id = await start_talk(rig)
    rig.proxy.stall()
    # The server's pings go unanswered: it drops the talker and ends the orphaned stream.
    stop = await rig.listener.next_of(p.OnStreamStop, where=lambda s: s.stream_id == stream_id)
    assert stop.reason == p.REASON_DISCONNECTED
    # The device's pings go unanswered too: the link goes down and the microphone closes.
    await rig.talker.wait_offline()
    await rig.talker.wait_mic_closed(timeout=0.5)
    assert Tone.DISCONNECTED in rig.talker.sim.device.counters.tones
    # The floor is free for others at once.
    answer = await rig.listener.start()
    assert answer.success and answer.stream_id is not None
    assert (await rig.listener.stop(answer.stream_id)).success
    # The network comes back: the device reconnects by itself; the held button opens nothing.
    rig.proxy.restore()
    await rig.talker.wait_online()
    assert not rig.talker.sim.mic.is_open
    rig.talker.sim.button.release()
    await talk_fully_heard(rig)


@pytest.mark.parametrize("settings", [fast_server_settings(ping_interval=60.0, ping_timeout=60.0)])
async def test_device_notices_first_and_its_new_logon_frees_the_floor(
    rig: Rig, settings: ServerSettings
) -> None:
    """The server is slow to notice (long keepalive): the orphaned talk holds the floor until
    the device, back on a new route, logs on again and its new connection replaces the old."""
    stream_id = await start_talk(rig)
    connects = rig.talker.connects
    rig.proxy.stall()
    await rig.talker.wait_offline()  # the device's own pings went unanswered
    await rig.talker.wait_mic_closed(timeout=0.5)
    assert stream_id in rig.server.core.streams  # the server has not noticed anything yet
    refused = await rig.listener.start()
    assert (refused.reason, refused.talker) == (p.REASON_BUSY, "radio-far")
    rig.proxy.let_new_through()  # the old connection stays wedged
    await rig.talker.wait_reconnected(connects)
    stop = await rig.listener.next_of(p.OnStreamStop, where=lambda s: s.stream_id == stream_id)
    assert stop.reason == p.REASON_DISCONNECTED
    assert stream_id not in rig.server.core.streams
    rig.talker.sim.button.release()
    await talk_fully_heard(rig)


async def test_reset_while_transmitting(rig: Rig) -> None:
    stream_id = await start_talk(rig)
    connects = rig.talker.connects
    rig.proxy.drop()
    await rig.talker.wait_mic_closed()
    stop = await rig.listener.next_of(p.OnStreamStop, where=lambda s: s.stream_id == stream_id)
    assert stop.reason == p.REASON_DISCONNECTED
    await rig.talker.wait_reconnected(connects)
    assert not rig.talker.sim.mic.is_open  # still held: a cut talk does not resume by itself
    rig.talker.sim.button.release()
    await talk_fully_heard(rig)


async def test_network_cut_then_back(rig: Rig) -> None:
    await listener_sees_users(rig.listener, 2)
    rig.proxy.cut()  # open connections stall, new ones go into a black hole
    await rig.talker.wait_offline()
    await listener_sees_users(rig.listener, 1)  # the server let the dead peer go
    # Pressing while offline: an error tone, the microphone never opens.
    tones = rig.talker.sim.device.counters.tones
    errors = tones.count(Tone.ERROR)
    rig.talker.sim.button.press()
    await eventually(lambda: tones.count(Tone.ERROR) > errors, what="error tone")
    # Several connection attempts time out in the black hole; the microphone stays shut.
    attempts = rig.talker.seen(LinkConnecting)
    await eventually(lambda: rig.talker.seen(LinkConnecting) >= attempts + 2, what="attempts")
    assert rig.talker.machine.link is Link.CONNECTING
    assert not rig.talker.sim.mic.is_open
    assert rig.proxy.connections >= 2
    rig.talker.sim.button.release()
    rig.proxy.restore()
    await rig.talker.wait_online()
    await listener_sees_users(rig.listener, 2)
    await talk_fully_heard(rig)


async def test_slow_drip_link(rig: Rig) -> None:
    # 800 bytes/s each way: enough for the handshake, the logon and pings, not for the audio.
    rig.proxy.drip(16, 0.02)
    connects = rig.talker.connects
    rig.proxy.drop()
    # Connecting and logging on over the slow link (the server's 0.6 s pong deadline may cost a
    # try or two while the logon crawls through).
    await rig.talker.wait_reconnected(connects, timeout=30)
    sent = rig.talker.sim.device.counters.packets_sent
    mic = rig.talker.sim.mic
    captured, downs = mic.frames_delivered, rig.talker.seen(LinkDown)
    rig.talker.sim.button.press()
    # 2 s of audio (24 kbit/s) into 6.4 kbit/s: the backlog grows, until the server's keepalive
    # gives up on the link, as a rule.
    await eventually(
        lambda: mic.frames_delivered >= captured + 100 or rig.talker.seen(LinkDown) > downs,
        what="2 s captured, or the link lost",
    )
    rig.talker.sim.button.release()
    await rig.talker.wait_mic_closed()
    heard = [e for e in rig.listener.drain() if isinstance(e, p.AudioPacket)]
    assert len(heard) <= rig.talker.sim.device.counters.packets_sent - sent
    # Back to a good link: whatever state the slow link left, the device recovers and works.
    rig.proxy.restore()
    connects = rig.talker.connects
    rig.proxy.drop()  # a fresh connection, not the one with a backlog
    await rig.talker.wait_reconnected(connects)
    await eventually(lambda: not rig.server.core.streams, what="no floor held")
    rig.listener.drain()
    await talk_fully_heard(rig)
