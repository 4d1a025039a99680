"""The device daemon against the real room server: GPIO PTT on gpiozero's MockFactory pins.

Press/release, refusal, time-out (the device's and the server's), room change, the server killed
mid-transmission and restarted, a revoked credential. Each device is a real
:class:`pttd.radio.daemon.Device` paired through the real pairing flow, on simulated audio; the
server
is a real :class:`RoomServer` on 127.0.0.1; a listening Channel-API client hears what the room
hears. The privacy rule is checked at every event: the microphone, the state machine's word for
it and the transmit LED agree, and every way out of talking closes the microphone first.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path
from typing import Any

import pytest
from device_harness import (
    OTHER_ROOM,
    ROOM,
    HoldingRelay,
    Rig,
    RunningDevice,
    eventually,
)
from gpiozero.pins.mock import MockFactory, MockPin

from pttd.errors import PairingFailed
from pttd.radio.config import ButtonsConfig, LedsConfig, PttConfig, TalkConfig
from pttd.radio.link import LinkSettings, pair
from pttd.radio.machine import (
    ChangeRoom,
    CredentialRefused,
    Link,
    LinkConnecting,
    LinkDown,
    Talk,
    Tone,
)
from pttd.radio.store import Store
from pttd.server.app import ServerSettings
from pttd.server.registry import Registry
from pttd.wire import messages as p

PTT_PIN, ROOM_UP_PIN, ROOM_DOWN_PIN = 17, 22, 23
ONLINE_LED, TRANSMIT_LED, RECEIVE_LED, ERROR_LED = 5, 6, 13, 19
GPIO_PTT = (PttConfig(kind="gpio", pin=PTT_PIN),)
LEDS = LedsConfig(online=ONLINE_LED, transmit=TRANSMIT_LED, receive=RECEIVE_LED, error=ERROR_LED)


async def gpio_device(
    rig: Rig, factory: MockFactory, name: str = "device-a", **config: Any
) -> RunningDevice:
    """A device with a GPIO PTT on pin 17 (pull-up: pressed = low) and four GPIO LEDs."""
    return await rig.device(
        name, ptt=GPIO_PTT, leds=LEDS, pin_factory=factory, observe=True, **config
    )


def privacy_held(device: RunningDevice) -> None:
    """After every event: the microphone is open exactly when the machine says so, and the
    transmit LED is lit exactly while the microphone is open."""
    assert device.snaps, "no events observed"
    for snap in device.snaps:
        assert snap.mic_open == snap.capture_open == snap.transmit_lit, snap


async def blinking(pin: MockPin) -> None:
    """The LED on ``pin`` toggles by itself (gpiozero's blink thread)."""
    changes = len(pin.states)
    await eventually(lambda: len(pin.states) >= changes + 3)


# --------------------------------------------------------------------------- press and release


async def test_gpio_press_talks_to_the_room_and_the_transmit_led_follows_the_mic(
    rig: Rig, factory: MockFactory
) -> None:
    a = await gpio_device(rig, factory)
    b = await rig.device("device-b")
    listener = await rig.listener()
    ptt, transmit = factory.pin(PTT_PIN), factory.pin(TRANSMIT_LED)
    assert factory.pin(ONLINE_LED).state is True
    assert transmit.state is False and not a.mic.is_open

    ptt.drive_low()
    await a.until(lambda m: m.capture_open)
    # The microphone opens at the press, before the floor is granted: no syllable is lost.
    assert a.mic.is_open and transmit.state is True
    await a.transmitting()
    assert Tone.TALK_PERMIT in a.device.counters.tones
    start = await listener.wait_for(p.OnStreamStart, lambda e: e.from_ == a.name)
    assert start.channel == ROOM
    await eventually(lambda: b.device.counters.packets_received >= 10)
    await eventually(lambda: b.device.mixer.stats.played >= 5)  # decoded and played at B
    assert b.device.mixer.stats.streams >= 1
    assert b.machine.incoming == {start.stream_id: a.name}
    assert factory.pin(RECEIVE_LED).state is False  # A's own receive LED: A hears nothing

    ptt.drive_high()
    await a.idle()
    assert not a.mic.is_open and transmit.state is False
    stop = await listener.wait_for(p.OnStreamStop, lambda e: e.stream_id == start.stream_id)
    assert stop.reason is None  # the device's own stop_stream
    await b.until(lambda m: not m.incoming)
    # Every packet A sent was relayed, in order, before the stop; nothing after it.
    sent = a.device.counters.packets_sent
    assert sent > 0
    assert len(listener.packets(start.stream_id)) == sent
    assert b.device.counters.packets_received == sent
    ids = [pkt.packet_id for pkt in listener.packets(start.stream_id)]
    assert ids == list(range(sent))

    privacy_held(a)
    assert [s.state for s in transmit.states].count(True) == 1  # lit once, for the one talk
    assert a.device.counters.talks == 1


async def test_receive_led_is_lit_while_another_device_talks(
    rig: Rig, factory: MockFactory
) -> None:
    a = await gpio_device(rig, factory)
    b = await rig.device("device-b")
    receive = factory.pin(RECEIVE_LED)
    b.button.press()
    await a.until(lambda m: bool(m.incoming))
    assert receive.state is True
    assert factory.pin(TRANSMIT_LED).state is False and not a.mic.is_open
    b.button.release()
    await a.until(lambda m: not m.incoming)
    assert receive.state is False


# --------------------------------------------------------------------------- refusal


async def test_press_while_another_talks_is_refused_busy_and_sends_nothing(
    rig: Rig, factory: MockFactory
) -> None:
    relay = HoldingRelay(rig.port)
    await relay.start()
    rig.on_close(relay.close)
    # A reaches the server through a relay that can hold the server's answers back, so that
    # A is seen waiting for the floor with audio held, deterministically.
    a = await gpio_device(rig, factory, server_url=relay.url)
    b = await rig.device("device-b")
    listener = await rig.listener()
    b.button.press()
    await b.transmitting()
    b_start = await listener.wait_for(p.OnStreamStart, lambda e: e.from_ == b.name)
    await a.until(lambda m: b_start.stream_id in m.incoming)

    relay.hold()
    factory.pin(PTT_PIN).drive_low()
    await a.until(lambda m: m.held_frames >= 3)  # captured, held until the floor is granted
    assert a.machine.talk is Talk.REQUESTING and a.mic.is_open
    relay.release()

    await a.until(lambda m: m.talk is Talk.IDLE)
    assert not a.mic.is_open and not a.machine.capture_open
    assert a.machine.held_frames == 0  # dropped, never sent
    assert Tone.BUSY in a.device.counters.tones
    assert "busy" in a.machine.last_error and b.name in a.machine.last_error
    assert a.device.counters.packets_sent == 0
    assert factory.pin(TRANSMIT_LED).state is False

    # Still held: nothing reopens.
    assert a.machine.blocked
    b.button.release()
    await listener.wait_for(p.OnStreamStop, lambda e: e.stream_id == b_start.stream_id)
    assert not a.mic.is_open
    # No packet of A's reached anyone: every relayed packet was B's.
    assert {pkt.stream_id for pkt in listener.packets()} == {b_start.stream_id}
    assert b.device.counters.packets_received == 0
    assert rig.server is not None
    assert rig.server.packets_relayed == b.device.counters.packets_sent
    assert len(listener.of(p.OnStreamStart)) == 1

    factory.pin(PTT_PIN).drive_high()
    await a.until(lambda m: not m.blocked)
    privacy_held(a)


# --------------------------------------------------------------------------- time-outs


async def test_transmit_time_out_closes_the_mic_and_a_held_button_does_not_reopen(
    rig: Rig,
) -> None:
    a = await rig.device("device-a", talk=TalkConfig(timeout=1.0), observe=True)
    b = await rig.device("device-b")
    listener = await rig.listener()
    a.button.press()
    await a.transmitting()
    start = await listener.wait_for(p.OnStreamStart, lambda e: e.from_ == a.name)

    await a.until(lambda m: m.talk is Talk.IDLE)  # the 1 s talk timer
    assert not a.mic.is_open
    assert Tone.TIMEOUT_WARNING in a.device.counters.tones
    assert a.machine.last_error == "transmit time-out"
    stop = await listener.wait_for(p.OnStreamStop, lambda e: e.stream_id == start.stream_id)
    assert stop.reason is None  # the device stopped its stream itself
    await b.until(lambda m: not m.incoming)

    # The button is still held: the mic stays closed, and no new stream is asked for. The
    # machine is blocked, and only a release then a press open it again (test_machine.py).
    assert a.button.is_held() and a.machine.blocked
    assert a.machine.talk is Talk.IDLE and a.machine.request is None and not a.mic.is_open
    assert a.device.counters.talks == 1
    mark = listener.mark()

    a.button.release()
    await a.until(lambda m: not m.blocked)
    a.button.press()
    await a.transmitting()
    await listener.wait_for(p.OnStreamStart, lambda e: e.from_ == a.name, since=mark)
    a.button.release()
    await a.idle()
    privacy_held(a)


async def test_server_talk_time_limit_closes_the_mic(tmp_path: Path) -> None:
    settings = ServerSettings(host="127.0.0.1", port=0, max_talk_time=0.5, registry_poll=0.05)
    rig = Rig(tmp_path, settings)
    await rig.start_server()
    try:
        a = await rig.device("device-a", observe=True)
        b = await rig.device("device-b")
        listener = await rig.listener()
        a.button.press()
        await a.transmitting()
        start = await listener.wait_for(p.OnStreamStart, lambda e: e.from_ == a.name)

        await a.until(lambda m: m.talk is Talk.IDLE)
        assert not a.mic.is_open
        assert Tone.TIMEOUT_WARNING in a.device.counters.tones
        assert "timeout" in a.machine.last_error
        stop = await listener.wait_for(p.OnStreamStop, lambda e: e.stream_id == start.stream_id)
        assert stop.reason == p.REASON_TIMEOUT
        await b.until(lambda m: not m.incoming)
        assert a.machine.blocked  # held, not reopened
        a.button.release()
        await a.until(lambda m: not m.blocked)
        assert not a.mic.is_open
        privacy_held(a)
    finally:
        await rig.close()


# --------------------------------------------------------------------------- rooms


async def test_room_buttons_change_the_room_persist_it_and_close_the_mic_first(
    rig: Rig, factory: MockFactory
) -> None:
    a = await gpio_device(
        rig,
        factory,
        rooms=(ROOM, OTHER_ROOM),
        buttons=ButtonsConfig(room_up=ROOM_UP_PIN, room_down=ROOM_DOWN_PIN),
    )
    b = await rig.device("device-b")  # in ROOM only
    listener = await rig.listener((ROOM, OTHER_ROOM))
    store = Store(a.device.config.state.dir)
    ptt, up, down = factory.pin(PTT_PIN), factory.pin(ROOM_UP_PIN), factory.pin(ROOM_DOWN_PIN)
    assert a.machine.rooms == (ROOM, OTHER_ROOM) and a.machine.room == ROOM
    assert store.settings().room == ROOM

    up.drive_low()
    await a.until(lambda m: m.room == OTHER_ROOM)
    up.drive_high()
    assert Tone.ROOM in a.device.counters.tones
    assert store.settings().room == OTHER_ROOM

    ptt.drive_low()
    await a.transmitting()
    start = await listener.wait_for(p.OnStreamStart, lambda e: e.from_ == a.name)
    assert start.channel == OTHER_ROOM
    await eventually(lambda: len(listener.packets(start.stream_id)) >= 3)

    # Room change while transmitting: the mic closes first, the stream stops.
    down.drive_low()
    await a.until(lambda m: m.room == ROOM)
    down.drive_high()
    assert not a.mic.is_open and a.machine.talk is Talk.IDLE
    changed = next(s for s in a.snaps if isinstance(s.event, ChangeRoom) and s.event.step == -1)
    assert not changed.mic_open and not changed.transmit_lit
    stop = await listener.wait_for(p.OnStreamStop, lambda e: e.stream_id == start.stream_id)
    assert stop.reason is None
    assert store.settings().room == ROOM
    assert b.device.counters.streams_heard == 0  # B is not in the other room

    # The PTT is still held: nothing reopens until it is released; then A talks in ROOM.
    assert a.machine.blocked and not a.mic.is_open
    ptt.drive_high()
    await a.until(lambda m: not m.blocked)
    ptt.drive_low()
    await a.transmitting()
    again = await listener.wait_for(
        p.OnStreamStart, lambda e: e.from_ == a.name and e.stream_id != start.stream_id
    )
    assert again.channel == ROOM
    await eventually(lambda: b.device.counters.packets_received >= 3)
    ptt.drive_high()
    await a.idle()
    privacy_held(a)

    # The selection survives a restart.
    up.drive_low()
    await a.until(lambda m: m.room == OTHER_ROOM)
    up.drive_high()
    await a.stop()
    plain = dataclasses.replace(a.device.config, ptt=(), buttons=ButtonsConfig(), leds=LedsConfig())
    restarted = await rig.run_device(plain)
    assert restarted.machine.room == OTHER_ROOM


# --------------------------------------------------------------------------- link loss


async def test_server_killed_mid_transmission_closes_the_mic_and_the_device_comes_back(
    rig: Rig, factory: MockFactory
) -> None:
    a = await gpio_device(rig, factory)
    b = await rig.device("device-b")
    ptt, online = factory.pin(PTT_PIN), factory.pin(ONLINE_LED)
    ptt.drive_low()
    await a.transmitting()
    await eventually(lambda: b.device.counters.packets_received >= 5)

    await rig.stop_server()
    await a.until(lambda m: m.link is not Link.ONLINE)
    down = next(s for s in a.snaps if isinstance(s.event, LinkDown))
    # Closed in the very step that handled the link loss.
    assert not down.capture_open and not down.mic_open and not down.transmit_lit
    assert down.talk is Talk.IDLE
    assert not a.mic.is_open
    assert Tone.DISCONNECTED in a.device.counters.tones
    assert a.machine.link is Link.CONNECTING
    await blinking(online)
    await b.until(lambda m: m.link is not Link.ONLINE)

    # Held through the loss: nothing reopens. A fresh press while offline: the error tone.
    assert a.machine.blocked and not a.mic.is_open
    ptt.drive_high()
    await a.until(lambda m: not m.blocked)
    errors = a.device.counters.tones.count(Tone.ERROR)
    ptt.drive_low()
    await a.until(lambda m: m.blocked)
    assert a.device.counters.tones.count(Tone.ERROR) == errors + 1
    assert not a.mic.is_open
    ptt.drive_high()

    # A new server on the same port, same registry: both come back by themselves.
    connects = a.device.link.connects
    await rig.start_server()
    await a.online()
    await b.online()
    assert a.device.link.connects == connects + 1
    assert online.state is True  # steady again
    assert a.machine.room == ROOM

    ptt.drive_low()
    await a.transmitting()
    received = b.device.counters.packets_received
    await eventually(lambda: b.device.counters.packets_received >= received + 5)
    ptt.drive_high()
    await a.idle()
    b.button.press()
    await b.transmitting()
    await a.until(lambda m: bool(m.incoming))
    b.button.release()
    await b.idle()
    privacy_held(a)


async def test_revoked_credential_shows_unpaired_and_stops_retrying(
    rig: Rig, factory: MockFactory
) -> None:
    a = await gpio_device(rig, factory)
    b = await rig.device("device-b")
    ptt, error = factory.pin(PTT_PIN), factory.pin(ERROR_LED)
    assert error.state is False
    ptt.drive_low()
    await a.transmitting()
    await b.until(lambda m: bool(m.incoming))

    def revoke() -> None:  # as `pttd server device revoke` would: another process, same file
        admin = Registry(rig.db_path)
        try:
            credential = a.device.credential
            assert credential is not None
            admin.revoke_device(credential.device_name)
        finally:
            admin.close()

    assert Store(a.device.config.state.dir).settings().room == ROOM
    await asyncio.to_thread(revoke)
    await a.until(lambda m: m.link is Link.UNPAIRED)
    assert not a.mic.is_open and a.machine.talk is Talk.IDLE
    refused = next(s for s in a.snaps if isinstance(s.event, CredentialRefused))
    assert not refused.mic_open and not refused.transmit_lit
    status = a.device.status()
    assert (status.paired, status.rooms, status.room) == (False, (), None)
    assert Store(a.device.config.state.dir).settings().room is None  # nothing kept
    await blinking(error)
    await b.until(lambda m: not m.incoming)  # the server ended A's stream

    def attempts() -> int:
        return sum(isinstance(s.event, LinkConnecting) for s in a.snaps)

    # Revoked by the server's close (1008 `revoked`) on the first connection: no second logon
    # was needed to tell. The core decided (refused, no retry): the link waits for a pairing.
    await eventually(lambda: a.device.link.paused)
    assert a.device.link.core.result == "refused"
    assert attempts() == 1 and a.device.link.connects == 1
    assert a.machine.link is Link.UNPAIRED

    ptt.drive_high()
    await a.until(lambda m: not m.held_buttons)
    errors = a.device.counters.tones.count(Tone.ERROR)
    ptt.drive_low()
    await a.until(lambda m: m.blocked)
    assert a.device.counters.tones.count(Tone.ERROR) == errors + 1
    assert not a.mic.is_open and a.machine.talk is Talk.IDLE
    ptt.drive_high()
    after = a.snaps.index(refused)
    assert not any(s.mic_open for s in a.snaps[after:])
    privacy_held(a)


async def test_revoked_device_restarts_unpaired_and_a_new_pairing_brings_it_back(
    rig: Rig,
) -> None:
    a = await rig.device("device-a", observe=True)
    credential = a.device.credential
    assert credential is not None
    await a.stop()
    await asyncio.to_thread(rig.registry.revoke_device, credential.device_name)

    assert Store(a.device.config.state.dir).settings().room == ROOM
    again = await rig.run_device(a.device.config, online=False, observe=True)
    await again.until(lambda m: m.link is Link.UNPAIRED)
    assert again.device.link.connects == 0
    assert (again.device.status().rooms, again.device.status().room) == ((), None)
    assert Store(a.device.config.state.dir).settings().room is None
    assert "logon refused" in again.device.link.last_error
    again.button.press()
    await again.until(lambda m: m.blocked)
    assert Tone.ERROR in again.device.counters.tones and not again.mic.is_open
    again.button.release()

    fresh = await rig.credential(credential.device_name)
    again.device.store.save_credential(fresh)
    again.device.set_credential(fresh)
    await again.online()
    again.button.press()
    await again.transmitting()
    again.button.release()
    await again.idle()
    privacy_held(again)


async def test_stopping_while_transmitting_closes_the_mic_and_stops_the_stream(
    rig: Rig,
) -> None:
    a = await rig.device("device-a", observe=True)
    listener = await rig.listener()
    a.button.press()
    await a.transmitting()
    start = await listener.wait_for(p.OnStreamStart, lambda e: e.from_ == a.name)
    await a.stop()
    assert not a.mic.is_open and not a.speaker.is_running
    stop = await listener.wait_for(p.OnStreamStop, lambda e: e.stream_id == start.stream_id)
    assert stop.reason is None  # stopped by the device, not cut by the disconnection
    assert a.machine.link is Link.OFFLINE
    privacy_held(a)


async def test_listener_sees_the_device_join_and_leave(rig: Rig) -> None:
    listener = await rig.listener()
    a = await rig.device("device-a")
    await listener.wait_for(p.OnChannelStatus, lambda e: e.users_online == 2)
    await a.stop()
    await listener.wait_for(p.OnChannelStatus, lambda e: e.users_online == 1)


async def test_an_unrelated_not_authorized_then_a_drop_leaves_the_device_paired(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """The sticky-revocation bug: an ``on_error`` ``not authorized`` without a seq (here the
    server's answer to a text for a room the device is not in) and, later, the server going
    away must not leave the radio unpaired: it comes back by itself."""
    caplog.set_level(logging.WARNING, logger="pttd.radio.link")
    a = await rig.device("device-a", observe=True)
    a.device.link.send_text("nowhere", "hello")  # no seq: the server's error has none either

    def told() -> bool:
        return any("the server says: not authorized" in r.getMessage() for r in caplog.records)

    await eventually(told)
    assert a.machine.link is Link.ONLINE
    await rig.stop_server()
    await a.until(lambda m: m.link is not Link.ONLINE)
    await rig.start_server()
    await a.until(lambda m: m.link in (Link.UNPAIRED, Link.ONLINE))
    assert a.machine.link is Link.ONLINE
    assert a.device.status().paired and a.device.link.connects == 2
    assert not any(isinstance(s.event, CredentialRefused) for s in a.snaps)


async def test_a_rate_limited_logon_is_not_a_revocation(tmp_path: Path) -> None:
    settings = ServerSettings(host="127.0.0.1", port=0, auth_failures=2, auth_window=60.0)
    rig = Rig(tmp_path, settings)
    await rig.start_server()
    try:
        config = await rig.paired_config("device-a")
        for _ in range(2):  # someone at the same address fumbles pairing codes
            with pytest.raises(PairingFailed):
                await pair(rig.url, "AAAA-BBBB-CCCC", "intruder", LinkSettings())
        # The address is blocked for codes and passwords, not for a valid device credential:
        # radios behind one NAT must not be locked out by someone guessing there.
        a = await rig.run_device(config, online=False)
        await a.until(lambda m: m.link in (Link.UNPAIRED, Link.ONLINE))
        assert a.machine.link is Link.ONLINE
    finally:
        await rig.close()
