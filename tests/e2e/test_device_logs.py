"""What a device's log says, against the real room server on 127.0.0.1.

The operator's view (presses, talk permits, refusals with their reason, other talkers starting
and stopping) is there at INFO; what was said or written is not, at any level: a text message
that reaches the device leaves only who sent it, where, and how long it was. A server that is
down is logged once, then summed up, not once per reconnect attempt.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterator

import pytest
from device_harness import ROOM, Rig, RunningDevice, make_device
from waits import eventually

from pttd.radio.machine import Link, LinkConnecting, Talk
from pttd.redact import RedactingFilter
from pttd.wire import messages as p

SECRET_TEXT = "the spare key is under the blue flowerpot by gate 7"


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every logger at DEBUG (websockets' frame logging too), through the redacting filter the
    daemon's handlers have (it reduces a websocket frame to its kind and size)."""
    caplog.set_level(logging.DEBUG)
    redacting = RedactingFilter()
    caplog.handler.addFilter(redacting)
    try:
        yield caplog
    finally:
        caplog.handler.removeFilter(redacting)


def messages(caplog: pytest.LogCaptureFixture, logger: str, level: int = logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno == level]


# --------------------------------------------------------------------------- privacy


async def test_a_text_message_reaches_the_log_as_sender_room_and_length_only(
    rig: Rig, debug_logs: pytest.LogCaptureFixture
) -> None:
    a = await rig.device("device-a")
    listener = await rig.listener()
    answer = await listener.request(lambda seq: p.SendTextMessage(ROOM, SECRET_TEXT, seq=seq))
    assert answer.success, answer
    await eventually(lambda: a.device.counters.texts_received == 1)

    assert f"text message from listener in {ROOM} ({len(SECRET_TEXT)} characters)" in (
        messages(debug_logs, "pttd.radio.daemon")
    )
    for record in debug_logs.records:
        text = record.getMessage() + (record.exc_text or "")
        for piece in ("blue flowerpot", "spare key", SECRET_TEXT):
            assert piece not in text, (record.name, text)


# --------------------------------------------------------------------------- the operator's view


async def test_presses_permits_refusals_and_other_talkers_are_logged_without_content(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pttd")
    a = await rig.device("device-a")  # the only device: every pttd.radio.daemon line is its own
    listener = await rig.listener()
    talking = await listener.start(ROOM)
    assert talking.success and talking.stream_id is not None
    await a.until(lambda m: bool(m.incoming))

    a.button.press()  # the listener holds the floor
    await a.until(lambda m: m.blocked and m.talk is Talk.IDLE)
    a.button.release()
    await a.until(lambda m: not m.held_buttons)
    await listener.stop(talking.stream_id)
    await a.until(lambda m: not m.incoming)

    a.button.press()
    await a.transmitting()
    a.button.release()
    await a.idle()

    assert messages(caplog, "pttd.radio.daemon") == [
        "device device-a running",
        f"room {ROOM} selected",
        f"listener talks in {ROOM}",
        f"PTT pressed: asking to talk in {ROOM}",
        f"talk in {ROOM} refused: busy (listener is talking)",
        "PTT released",
        f"listener stopped talking in {ROOM}",
        f"PTT pressed: asking to talk in {ROOM}",
        f"talk permitted in {ROOM}",
        f"talk in {ROOM} ended: PTT released",
    ]


# --------------------------------------------------------------------------- a server that is down


class ManualClock:
    """The device's monotonic clock, moved by the test: when the outage's summary falls due is
    then the test's to say, however slowly the machine runs."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def attempts(device: RunningDevice) -> int:
    return sum(isinstance(s.event, LinkConnecting) for s in device.snaps)


async def test_a_server_that_is_down_is_logged_once_summed_up_and_back_once(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pttd")
    config = await rig.paired_config("device-a")
    await rig.stop_server()  # nobody listens on its port now; a restart binds it again
    clock = ManualClock()
    a = make_device(config, clock=clock)
    link = a.device.link
    link.settings = dataclasses.replace(link.settings, backoff_initial=0.01, backoff_max=0.02)
    a.observe()
    rig.devices.append(a)
    await a.start()

    def link_lines() -> list[str]:
        return messages(caplog, "pttd.radio.link", logging.WARNING)

    # Attempt n+1 starts only after attempt n's failure was handled (and logged, if at all).
    await a.until(lambda _: attempts(a) >= 8)
    first = f"link to {rig.url}: cannot reach the server"
    assert len(link_lines()) == 1 and link_lines()[0].startswith(first), link_lines()

    clock.now += 15.0  # past the first summary's time
    seen = attempts(a)
    await a.until(lambda _: attempts(a) >= seen + 3)
    lines = link_lines()
    assert len(lines) == 2, lines
    summary = f"link to {rig.url}: still no connection after 15 s: "
    assert lines[1].startswith(summary) and re.search(
        r": \d+ attempts in the last 15 s failed \(cannot reach the server", lines[1]
    ), lines[1]

    clock.now += 5.0
    await rig.start_server()
    await a.online()
    back = [m for m in messages(caplog, "pttd.radio.link") if m.startswith("online at")]
    assert len(back) == 1 and re.search(r"; back after 20 s \(\d+ attempts failed\)$", back[0])
    assert len(link_lines()) == 2
    assert a.machine.link is Link.ONLINE
