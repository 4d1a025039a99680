"""Serial PTT accessories (Bluetooth SPP PTT buttons, USB-serial foot switches).

They send text lines, terminated by CR, LF or CRLF, in one of two dialects (both always read):

* ``+PTT=P`` / ``+PTT=R`` (PTT pressed/released) and ``+SOS=P`` / ``+SOS=R`` (emergency);
* Bluetooth hand microphones over HFP (their RFCOMM serial link): ``AT+XEVENT=TALK,1`` /
  ``AT+XEVENT=TALK,0`` and ``AT+XEVENT=SOS,1`` / ``AT+XEVENT=SOS,0``.
 Anything else on the wire (other
lines, overlong lines, bytes that are not UTF-8) is logged at debug and ignored; a token with
line noise around it (``\\x00+PTT=R``) still counts, so that a release is never lost to noise.

The port is opened with :func:`serial.serial_for_url` (a device path, a pty, ``loop://``,
``rfc2217://``…) and read on a thread: pyserial is blocking. When the port vanishes (cable
pulled, Bluetooth link dropped) the adapter reports it gone
(:class:`~pttd.radio.inputs.InputGone`: the held buttons are up, a talk it latched on ends) and
reopens the port every ``retry_s`` seconds until :meth:`SerialPtt.close`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from typing import Any, Final

import serial  # type: ignore[import-untyped]

from pttd.radio.inputs import Button, EdgeHandler, EdgeSink

log = logging.getLogger(__name__)

MAX_LINE: Final = 128  # bytes; longer lines are noise
_TOKEN: Final = re.compile(
    rb"\+(PTT|SOS)=([PR])(?![A-Za-z0-9])|\+XEVENT=(TALK|SOS),([01])(?![A-Za-z0-9.])",
    re.IGNORECASE,
)
_BUTTONS: Final = {b"PTT": Button.PTT, b"TALK": Button.PTT, b"SOS": Button.EMERGENCY}
_PRESSED: Final = (b"P", b"1")


class LineParser:
    """Bytes in, (button, pressed) out; keeps partial lines between calls. Never raises."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._max_line = max_line
        self._buffer = bytearray()
        self._discarding = False  # inside an overlong line: drop until its terminator

    def feed(self, data: bytes) -> list[tuple[Button, bool]]:
        found: list[tuple[Button, bool]] = []
        for chunk in re.split(rb"([\r\n])", data):
            if chunk in (b"\r", b"\n"):
                if not self._discarding:
                    found.extend(self._line(bytes(self._buffer)))
                self._buffer.clear()
                self._discarding = False
            elif chunk and not self._discarding:
                self._buffer += chunk
                if len(self._buffer) > self._max_line:
                    log.debug("serial PTT: line over %d bytes ignored", self._max_line)
                    self._buffer.clear()
                    self._discarding = True
        return found

    @staticmethod
    def _line(line: bytes) -> list[tuple[Button, bool]]:
        if not line.strip():
            return []
        found = [
            (
                _BUTTONS[(m.group(1) or m.group(3)).upper()],
                (m.group(2) or m.group(4)).upper() in _PRESSED,
            )
            for m in _TOKEN.finditer(line)
        ]
        if not found:
            log.debug("serial PTT: ignored line %r", line)
        return found


class SerialPtt:
    """A serial PTT accessory on ``port`` (a device path or a pyserial URL)."""

    def __init__(
        self,
        port: str,
        baudrate: int = 9600,
        *,
        retry_s: float = 1.0,
        read_timeout_s: float = 0.5,
    ) -> None:
        self._port = port
        self._baudrate = baudrate
        self._retry_s = retry_s
        self._read_timeout_s = read_timeout_s
        self._source = f"serial:{port}"
        self._sink = EdgeSink(self._source)
        self._stop = threading.Event()
        self._lock = threading.Lock()  # guards _serial between the reader and close()
        self._serial: Any = None
        self._connected = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        return self._source

    @property
    def connected(self) -> bool:
        """True while the port is open."""
        return self._connected.is_set()

    async def start(self, handler: EdgeHandler) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self._source}: already started")
        self._sink.connect(handler)
        self._thread = threading.Thread(target=self._run, name=f"pttd {self._source}", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        self._stop.set()
        with self._lock:
            if self._serial is not None and hasattr(self._serial, "cancel_read"):
                self._serial.cancel_read()  # wakes a blocked read at once (POSIX ports)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, self._read_timeout_s + 5)
            if self._thread.is_alive():
                log.error("%s: reader thread did not stop", self._source)
        self._sink.release_all()
        self._sink.disconnect()

    # ------------------------------------------------------------------ reader thread

    def _run(self) -> None:
        outage_logged = False
        while not self._stop.is_set():
            try:
                port = serial.serial_for_url(
                    self._port, baudrate=self._baudrate, timeout=self._read_timeout_s
                )
            except (OSError, ValueError) as exc:  # SerialException is an OSError
                if not outage_logged:
                    log.warning("%s: cannot open (%s); retrying", self._source, exc)
                    outage_logged = True
                else:
                    log.debug("%s: still cannot open: %s", self._source, exc)
                self._stop.wait(self._retry_s)
                continue
            outage_logged = False
            with self._lock:
                self._serial = port
            log.info("%s: open", self._source)
            self._connected.set()
            try:
                self._read(port)  # returns only once close() is called
            except Exception as exc:  # SerialException/OSError when it vanishes
                log.warning("%s: lost (%s); reopening", self._source, exc)
                outage_logged = True
            finally:
                self._connected.clear()
                with self._lock:
                    self._serial = None
                try:
                    port.close()
                except Exception as exc:
                    log.debug("%s: close: %s", self._source, exc)
                if not self._stop.is_set():  # gone; else close() releases what is held
                    self._sink.lost(self._source)
            self._stop.wait(self._retry_s)

    def _read(self, port: Any) -> None:
        parser = LineParser()
        while not self._stop.is_set():
            data: bytes = port.read(1)  # blocks up to read_timeout_s, or until cancel_read()
            if not data:
                continue
            waiting = port.in_waiting
            if waiting:
                data += port.read(waiting)
            for button, pressed in parser.feed(data):
                self._sink.edge(button, pressed, self._source)
