"""The serial PTT accessory over a real pty (the adapter opens the slave, the test is the
accessory writing on the master), plus the line parser on its own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import serial  # type: ignore[import-untyped]
from hypothesis import given
from hypothesis import strategies as st
from waits import eventually

from pttd.radio.inputs import Button
from pttd.radio.inputs.serial_ptt import LineParser, SerialPtt

TIMEOUT = 5.0
PTT_DOWN, PTT_UP = (Button.PTT, True), (Button.PTT, False)
SOS_DOWN, SOS_UP = (Button.EMERGENCY, True), (Button.EMERGENCY, False)


class Pty:
    """A pseudo-terminal: ``path`` is the slave the adapter opens; the test writes the master."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        self.path = os.ttyname(slave)
        os.close(slave)  # the adapter opens it by path; the pts lives while the master is open
        self.open = True

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> None:
        if self.open:
            self.open = False
            os.close(self.master)


@pytest.fixture
def pty() -> Iterator[Pty]:
    pty = Pty()
    yield pty
    pty.close()


@contextlib.asynccontextmanager
async def running(port: str, recorder) -> AsyncIterator[SerialPtt]:
    ptt = SerialPtt(port, 9600, retry_s=0.02, read_timeout_s=0.2)
    await ptt.start(recorder)
    try:
        await eventually(lambda: ptt.connected)
        yield ptt
    finally:
        await asyncio.wait_for(ptt.close(), TIMEOUT)


@pytest.mark.parametrize("eol", [b"\r\n", b"\n", b"\r"], ids=["CRLF", "LF", "CR"])
async def test_press_and_release(pty, recorder, eol):
    async with running(pty.path, recorder):
        pty.write(b"+PTT=P" + eol)
        edges = await recorder.wait_for(1)
        pty.write(b"+PTT=R" + eol + b"+PTT=P" + eol + b"+PTT=R" + eol)
        await recorder.wait_for(4)
    assert recorder.summary() == [PTT_DOWN, PTT_UP] * 2
    assert edges[0].source == f"serial:{pty.path}"
    recorder.check_delivery()


async def test_sos_and_ptt_together(pty, recorder):
    async with running(pty.path, recorder):
        pty.write(b"+PTT=P\r\n+SOS=P\r\n+SOS=R\r\n+PTT=R\r\n")
        await recorder.wait_for(4)
    assert recorder.summary() == [PTT_DOWN, SOS_DOWN, SOS_UP, PTT_UP]


async def test_garbage_is_ignored(pty, recorder, caplog):
    with caplog.at_level(logging.DEBUG, logger="pttd.radio.inputs.serial_ptt"):
        async with running(pty.path, recorder):
            pty.write(b"AT+BRSF=0\r\nOK\r\n\xff\xfe\x80garbage\r\n\r\n\n")
            pty.write(b"x" * 5000 + b"+PTT=P\r\n")  # overlong: ignored whole
            pty.write(b"+PTT=X\r\n+FOO=P\r\n+PTTP\r\n")
            pty.write(b"\x00\x00+PTT=P\x00\r\n")  # noise around a token: still counts
            await recorder.wait_for(1)
            pty.write(b"\xff+PTT=R\r\n")
            await recorder.wait_for(2)
    assert recorder.summary() == [PTT_DOWN, PTT_UP]
    assert "ignored line b'OK'" in caplog.text
    assert "over 128 bytes" in caplog.text


async def test_lines_split_across_writes(pty, recorder):
    async with running(pty.path, recorder):
        for piece in (b"+P", b"TT", b"=P\r", b"\n+PTT", b"=R"):
            pty.write(piece)
            # Paced, so that the adapter is likely to read the pieces one by one (the outcome
            # must not depend on it).
            await asyncio.sleep(0.02)
        await recorder.wait_for(1)
        terminated = time.monotonic()
        pty.write(b"\r\n")
        edges = await recorder.wait_for(2)
    assert recorder.summary() == [PTT_DOWN, PTT_UP]
    # The release was not taken before its line ended: it is stamped after the terminator.
    assert edges[1].t >= terminated


async def test_repeated_press_is_one_edge(pty, recorder):
    async with running(pty.path, recorder):
        pty.write(b"+PTT=P\r\n+PTT=P\r\n+PTT=P\r\n+PTT=R\r\n+PTT=R\r\n")
        pty.write(b"+SOS=P\r\n")  # a marker: lines are taken in order, so the repeats are done
        await recorder.wait_for(3)
    assert recorder.summary()[:3] == [PTT_DOWN, PTT_UP, SOS_DOWN]


async def test_port_vanishing_mid_press_says_gone_then_reconnects(tmp_path: Path, recorder):
    """Cable pulled while the buttons are held: one notice that the accessory is gone (it
    stands for their release: no release edges); then the port comes back."""
    first, second = Pty(), Pty()
    link = tmp_path / "ttyPTT"  # a stable name, as udev gives a Bluetooth rfcomm port
    link.symlink_to(first.path)
    source = f"serial:{link}"
    try:
        async with running(str(link), recorder) as ptt:
            first.write(b"+PTT=P\r\n+SOS=P\r\n")
            await recorder.wait_for(2)
            first.close()  # hang-up
            gone = await recorder.wait_gone(1)
            assert [g.source for g in gone] == [source]
            assert recorder.items[2:] == gone and recorder.summary() == [PTT_DOWN, SOS_DOWN]
            assert {edge.source for edge in recorder.edges} == {source}
            await eventually(lambda: not ptt.connected)
            replacement = tmp_path / "new"
            replacement.symlink_to(second.path)
            replacement.replace(link)
            await eventually(lambda: ptt.connected)
            second.write(b"+PTT=P\r\n")  # back: a fresh press, not a repeat
            await recorder.wait_for(3)
        await recorder.wait_for(4)  # closing releases it
    finally:
        first.close()
        second.close()
    assert recorder.summary()[2:] == [PTT_DOWN, PTT_UP]
    assert len(recorder.gone) == 1  # closing is not vanishing
    recorder.check_delivery()


async def test_absent_port_retries_until_closed(tmp_path: Path, recorder, monkeypatch):
    attempts: list[str] = []
    serial_for_url = serial.serial_for_url

    def counted(url: str, *args: object, **kwargs: object) -> object:
        attempts.append(url)
        return serial_for_url(url, *args, **kwargs)

    monkeypatch.setattr(serial, "serial_for_url", counted)
    ptt = SerialPtt(str(tmp_path / "no-such-tty"), retry_s=0.01)
    await ptt.start(recorder)
    await eventually(lambda: len(attempts) >= 3, what="three tries to open the port")
    assert not ptt.connected
    await asyncio.wait_for(ptt.close(), TIMEOUT)
    assert recorder.edges == []


async def test_loop_url(recorder):
    """pyserial URLs work too: loop:// echoes what is written to it."""
    async with running("loop://", recorder) as ptt:
        with ptt._lock:
            port = ptt._serial
        port.write(b"+PTT=P\n+PTT=R\n")
        await recorder.wait_for(2)
    assert recorder.summary() == [PTT_DOWN, PTT_UP]


def test_parser_tokens_and_terminators():
    parser = LineParser()
    assert parser.feed(b"+PTT=P\r\n+ptt=r\n+SOS=P\r+SOS=R\r\n") == [
        PTT_DOWN,
        PTT_UP,
        SOS_DOWN,
        SOS_UP,
    ]
    assert parser.feed(b"+PTT=PX\r\n+PTT=\r\n") == []  # not tokens
    assert parser.feed(b"+PTT=P+PTT=R\n") == [PTT_DOWN, PTT_UP]


def test_parser_reads_the_hfp_hand_microphone_dialect():
    """Bluetooth hand microphones over HFP send AT+XEVENT lines on their RFCOMM link."""
    parser = LineParser()
    assert parser.feed(b"AT+XEVENT=TALK,1\r\nAT+XEVENT=SOS,1\r\n") == [PTT_DOWN, SOS_DOWN]
    assert parser.feed(b"AT+XEVENT=SOS,0\r\nat+xevent=talk,0\r\n") == [SOS_UP, PTT_UP]
    assert parser.feed(b"AT+XEVENT=TALK,10\r\nAT+XEVENT=TALK,\r\nAT+XEVENT=VOL,1\r\n") == []
    assert parser.feed(b"AT+XEVENT=TALK,1a\r\nAT+XEVENT=TALK,1.5\r\n") == []
    assert parser.feed(b"\x00AT+XEVENT=TALK,0\r\n") == [PTT_UP]  # noise around it


async def test_an_hfp_hand_microphone_on_a_pty(pty, recorder):
    """The same adapter, the other dialect: press, SOS and release over a real pty."""
    async with running(pty.path, recorder):
        pty.write(b"AT+XEVENT=TALK,1\r\n")
        await recorder.wait_for(1)
        pty.write(b"AT+XEVENT=SOS,1\r\nAT+XEVENT=SOS,0\r\nAT+XEVENT=TALK,0\r\n")
        await recorder.wait_for(4)
    assert recorder.summary() == [PTT_DOWN, SOS_DOWN, SOS_UP, PTT_UP]


def test_parser_overlong_line_is_dropped_up_to_its_end():
    parser = LineParser(max_line=16)
    assert parser.feed(b"A" * 10) == []
    assert parser.feed(b"B" * 10 + b"+PTT=P") == []  # now over 16: discarding
    assert parser.feed(b"+PTT=P\r\n") == []  # still the same overlong line
    assert parser.feed(b"+PTT=P\r\n") == [PTT_DOWN]


@given(st.lists(st.binary(max_size=300), max_size=20))
def test_parser_never_raises_and_keeps_bounded_state(chunks):
    parser = LineParser(max_line=64)
    for chunk in chunks:
        for button, pressed in parser.feed(chunk):
            assert button in (Button.PTT, Button.EMERGENCY)
            assert isinstance(pressed, bool)
        assert len(parser._buffer) <= 64


@given(st.binary(max_size=40), st.binary(max_size=40))
def test_parser_token_split_anywhere(before, after):
    """A terminated line arrives the same however the bytes are split into reads."""
    noise = bytes(b for b in before + after if b not in b"\r\n+")
    line = noise[:20] + b" +PTT=R " + noise[20:] + b"\r\n"
    for cut in range(len(line) + 1):
        parser = LineParser()
        assert parser.feed(line[:cut]) + parser.feed(line[cut:]) == [PTT_UP]
