"""What a device's log says, against the real room server on 127.0.0.1.

The operator's view (presses, talk permits, refusals with their reason, other talkers starting
and stopping) is there at INFO; what was said or written is not, at any level: a text message
that reaches the device leaves only who sent it, where, and how long it was.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from device_harness import ROOM, Listener, Rig, eventually

from pttd import protocol as p
from pttd.machine import Talk
from pttd.redact import RedactingFilter

SECRET_TEXT = "the spare key is under the blue flowerpot by gate 7"
CODEC = p.CodecHeader(48000, 1, 20)


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


async def request(listener: Listener, message: p.ClientCommand, seq: int) -> p.Response:
    """Send one request as the listening user and wait for the server's answer."""
    await listener.ws.send(message.to_json())
    return await listener.wait_for(p.Response, lambda r: r.seq == seq)


# --------------------------------------------------------------------------- privacy


async def test_a_text_message_reaches_the_log_as_sender_room_and_length_only(
    rig: Rig, debug_logs: pytest.LogCaptureFixture
) -> None:
    a = await rig.device("device-a")
    listener = await rig.listener()
    answer = await request(listener, p.SendTextMessage(ROOM, SECRET_TEXT, seq=900), 900)
    assert answer.success, answer
    await eventually(lambda: a.device.counters.texts_received == 1)

    assert f"text message from listener in {ROOM} ({len(SECRET_TEXT)} characters)" in (
        messages(debug_logs, "pttd.daemon")
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
    a = await rig.device("device-a")  # the only device: every pttd.daemon line is its own
    listener = await rig.listener()
    talking = await request(listener, p.StartStream(CODEC, 20, seq=901, channel=ROOM), 901)
    assert talking.success and talking.stream_id is not None
    await a.until(lambda m: bool(m.incoming))

    a.button.press()  # the listener holds the floor
    await a.until(lambda m: m.blocked and m.talk is Talk.IDLE)
    a.button.release()
    await a.until(lambda m: not m.held_buttons)
    await request(listener, p.StopStream(talking.stream_id, seq=902), 902)
    await a.until(lambda m: not m.incoming)

    a.button.press()
    await a.transmitting()
    a.button.release()
    await a.idle()

    assert messages(caplog, "pttd.daemon") == [
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
