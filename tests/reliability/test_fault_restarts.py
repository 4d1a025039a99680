"""The room server restarted 20 times under three simulated devices, idle and mid-transmission,
gracefully and as a crash (connections aborted with no close frame).

After every restart: every device is back online by itself, nobody is left transmitting or
"receiving" a stream that died with the old server, the new server holds no floor and a press
works. Throughout: the microphone is never open while a device is not online (the privacy watch
checks after every event each device handles).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from pathlib import Path

from relkit import Radio, fast_server_settings, pair_over_wire, radios_stopped, start_radio
from waits import TIMEOUT, eventually

from pttd.radio.machine import LinkConnecting, Talk, Tone
from pttd.server.app import RoomServer, ServerSettings
from pttd.server.registry import Registry

RESTARTS = 20


async def start_server_on(registry: Registry, settings: ServerSettings) -> RoomServer:
    """Start on ``settings.port``; the old listener just closed, so retry a busy port briefly."""
    for attempt in range(50):
        server = RoomServer(registry, settings)
        try:
            await server.start()
        except OSError:
            if attempt == 49:
                raise
            await asyncio.sleep(0.05)
            continue
        return server
    raise AssertionError("unreachable")


async def stop_server(server: RoomServer, *, crash: bool) -> None:
    if crash:  # no close frames, no stream stops: the peers see the TCP connection die
        for ws in list(server.core.sessions):
            transport = ws.transport
            if transport is not None:
                transport.abort()
    await asyncio.wait_for(server.close(), TIMEOUT)


async def talk_is_heard(talker: Radio, listeners: list[Radio], server: RoomServer) -> None:
    """Press, get the floor, be heard by every listener, release, floor free again."""
    before = [r.sim.device.counters.packets_received for r in listeners]
    talker.sim.button.press()
    await talker.wait_transmitting()
    await eventually(
        lambda: all(
            r.sim.device.counters.packets_received > b
            for r, b in zip(listeners, before, strict=True)
        ),
        what=f"{[r.name for r in listeners]} hear {talker.name}",
    )
    talker.sim.button.release()
    await talker.wait_mic_closed()
    await eventually(lambda: not server.core.streams, what="floor released")
    await eventually(
        lambda: all(not r.machine.incoming for r in listeners), what="listeners saw the stop"
    )


async def test_server_restarted_20_times(tmp_path: Path, registry: Registry) -> None:
    settings = fast_server_settings()
    server = await start_server_on(registry, settings)
    settings = replace(settings, port=server.port)  # devices keep the address they paired with
    radios: list[Radio] = []
    try:
        for i in range(3):
            credential = await pair_over_wire(server.url, registry, f"radio-{i}")
            radios.append(await start_radio(tmp_path, credential))
        async with radios_stopped(radios):
            for radio in radios:
                await radio.wait_online()
            for i in range(RESTARTS):
                talker = radios[i % 3]
                listeners = [r for r in radios if r is not talker]
                during_talk = i % 2 == 1
                crash = i % 4 >= 2  # graceful, graceful-mid-talk, crash, crash-mid-talk, …
                if during_talk:
                    talker.sim.button.press()
                    await talker.wait_transmitting()
                    await eventually(
                        lambda: all(r.machine.incoming for r in listeners),  # noqa: B023
                        what="listeners hear the talk",
                    )
                connects = [r.sim.device.link.connects for r in radios]

                await stop_server(server, crash=crash)
                for radio in radios:
                    await radio.wait_offline()
                    await radio.wait_mic_closed(timeout=1.0)  # closed with the link, at once
                    assert radio.machine.talk is Talk.IDLE
                if i % 5 == 0:  # a press during the outage: error tone, the mic stays shut
                    tones = listeners[0].sim.device.counters.tones
                    errors = tones.count(Tone.ERROR)
                    listeners[0].sim.button.press()
                    await eventually(
                        lambda: tones.count(Tone.ERROR) > errors,  # noqa: B023
                        what="error tone on a press while offline",
                    )
                    assert not listeners[0].sim.mic.is_open
                    listeners[0].sim.button.release()
                # The devices retry against the closed port meanwhile: one attempt fails and
                # the next one starts.
                attempts = [r.seen(LinkConnecting) for r in radios]
                await eventually(
                    lambda: all(
                        r.seen(LinkConnecting) >= a + 2
                        for r, a in zip(radios, attempts, strict=True)  # noqa: B023
                    ),
                    what="attempts against the closed port",
                )

                server = await start_server_on(registry, settings)
                for radio in radios:
                    await radio.wait_online()
                assert all(
                    r.sim.device.link.connects == c + 1
                    for r, c in zip(radios, connects, strict=True)
                ), "each device reconnected exactly once"
                if during_talk:
                    # The button is still held: the cut talk does not resume by itself.
                    talker.check_waits_for_a_press()
                    talker.sim.button.release()
                assert not server.core.streams
                for radio in radios:
                    assert radio.machine.talk is Talk.IDLE, radio.name
                    assert not radio.machine.incoming, f"{radio.name}: stuck receiving"
                    assert not radio.machine.blocked or radio.machine.held_buttons
                next_talker = radios[(i + 1) % 3]
                await talk_is_heard(
                    next_talker, [r for r in radios if r is not next_talker], server
                )
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.close(), TIMEOUT)
    for radio in radios:
        assert radio.sim.device.link.connects == RESTARTS + 1
