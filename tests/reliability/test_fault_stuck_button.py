"""A stuck PTT button (or a toggle left on) never means a hot microphone for ever.

The device's transmit time-out ends the talk: capture closes, the stream stops, a warning tone
plays, the floor frees, and nothing reopens until the button is released. In toggle mode the
same time-out drops the latch. Behind it, the server's own maximum talk time ends a stream whose
device would go on (an old firmware, a talk time-out set longer than the server allows).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from channel_client import Client
from relkit import (
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

from pttd.radio.config import TalkConfig
from pttd.radio.machine import Tone
from pttd.server.app import RoomServer, ServerSettings
from pttd.server.registry import Registry
from pttd.wire import messages as p

TALK_TIMEOUT = 1.0  # the shortest the config allows


async def nothing_reopens(radio: Radio, listener: Client) -> None:
    """No talk starts again by itself (:meth:`Radio.check_waits_for_a_press`), nor did one
    start meanwhile."""
    radio.check_waits_for_a_press()
    await listener.sync()
    started = [e for e in listener.drain() if isinstance(e, p.OnStreamStart)]
    assert not [s for s in started if s.from_ == radio.name], started


async def timed_out(radio: Radio, listener: Client, stream_id: int, reason: str | None) -> None:
    stop = await listener.next_of(p.OnStreamStop, where=lambda s: s.stream_id == stream_id)
    assert stop.reason == reason
    await radio.wait_mic_closed(timeout=1.0)
    assert Tone.TIMEOUT_WARNING in radio.sim.device.counters.tones
    answer = await listener.start()  # the floor is free
    assert answer.success and answer.stream_id is not None
    assert (await listener.stop(answer.stream_id)).success


@pytest.mark.parametrize("mode", ["hold", "toggle"])
async def test_transmit_time_out_ends_a_stuck_talk(
    tmp_path: Path, registry: Registry, server: RoomServer, mode: str
) -> None:
    credential = await pair_over_wire(server.url, registry, "radio-stuck")
    radio = await start_radio(
        tmp_path,
        credential,
        talk=TalkConfig(mode=mode, timeout=TALK_TIMEOUT),  # type: ignore[arg-type]
    )
    listener = await user_client(server.url, "alice", PASSWORDS["alice"])
    async with radios_stopped([radio]):
        await radio.wait_online()
        button = radio.sim.button
        button.press()
        if mode == "toggle":
            button.release()  # latched on: the talk goes on without the button
        start = await hear_stream(listener, radio.name)
        await radio.wait_transmitting()
        # The stuck talk ends by itself (the device's stop: no reason on the server's side).
        await timed_out(radio, listener, start.stream_id, None)
        # Held (or latched) still: nothing reopens, nothing more is sent.
        await nothing_reopens(radio, listener)
        if mode == "hold":
            button.release()
        # The next press is a fresh talk.
        button.press()
        if mode == "toggle":
            button.release()
        again = await hear_stream(listener, radio.name)
        assert again.stream_id != start.stream_id
        if mode == "toggle":
            button.press()  # toggled off
            button.release()
        else:
            button.release()
        await radio.wait_mic_closed()
        stop = await listener.next_of(
            p.OnStreamStop, where=lambda s: s.stream_id == again.stream_id
        )
        assert stop.reason is None
    await listener.close()


@pytest.mark.parametrize("settings", [fast_server_settings(max_talk_time=1.0)])
async def test_server_talk_limit_backs_the_device_up(
    tmp_path: Path, registry: Registry, server: RoomServer, settings: ServerSettings
) -> None:
    credential = await pair_over_wire(server.url, registry, "radio-long")
    radio = await start_radio(tmp_path, credential, talk=TalkConfig(timeout=600.0))
    listener = await user_client(server.url, "alice", PASSWORDS["alice"])
    async with radios_stopped([radio]):
        await radio.wait_online()
        radio.sim.button.press()
        start = await hear_stream(listener, radio.name)
        await timed_out(radio, listener, start.stream_id, p.REASON_TIMEOUT)
        await eventually(lambda: "timeout" in radio.machine.last_error, what="reason shown")
        await nothing_reopens(radio, listener)
        radio.sim.button.release()
    await listener.close()
