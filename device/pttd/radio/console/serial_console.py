"""The installer console's transport: a serial port in the daemon, 8N1, 115200 baud by default.

The port is opened with :func:`serial.serial_for_url` (a device such as ``/dev/ttyAMA0`` or the
USB gadget's ``/dev/ttyGS0``, a pty, ``loop://``) and read on a thread of its own; bytes cross
into the asyncio loop in one place (``call_soon_threadsafe``), where the line editor and the
interpreter run. Output goes out through a writer thread, so a terminal that reads nothing (no
cable, flow control stuck) never blocks the loop: after ``write_timeout_s`` the output is dropped.

When the port vanishes (cable pulled, USB gadget unplugged) it is reopened every ``retry_s``
seconds; each opening starts a new session (locked, with a greeting and a prompt).

Effects (pairing, the audio test, saving a setting, hashing a PIN …) run as tasks on the loop
while the console waits for them; the interpreter may answer one's outcome with the next. Ctrl-C
cancels one, and anything else typed meanwhile is read after it.

A line that sends back what it receives (``loop://``, a loopback plug, a host-side tty left in
echo mode with no terminal program on it) would make the console answer its own output for
ever. More than ``max_lines_per_s`` lines in a second — far beyond typing — mutes the console
for ``mute_s`` seconds: input is read and dropped, nothing is sent, so the echo dies out. The
count is the server's token bucket (:class:`pttd.ratelimit.RateLimiter`): ``max_lines_per_s`` a
second, bursts as many.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final, Literal, Protocol, TypeAlias

import serial  # type: ignore[import-untyped]

from pttd.radio.console import interpreter
from pttd.radio.console.editor import MAX_LINE, Cancelled, Line, LineEditor, Rejected
from pttd.radio.console.interpreter import Console, Effect, Outcome
from pttd.ratelimit import RateLimiter

log = logging.getLogger(__name__)

BACKLOG_MAX: Final = 4096  # bytes typed while an effect runs, kept for after it
OUTPUT_MAX: Final = 256 * 1024  # bytes waiting for a terminal that does not read; more are dropped
MAX_LINES_PER_S: Final = 100  # a pasted screenful passes; an echo storm (hundreds) does not
MUTE_S: Final = 5.0
_Item: TypeAlias = bytes | Literal["opened", "lost"]


class EffectRunner(Protocol):
    async def run(self, effect: Effect, progress: Callable[[str], None]) -> Outcome: ...


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8", "replace")


class SerialConsole:
    """The console on ``port``: ``await start()``, then ``await close()``."""

    def __init__(
        self,
        port: str,
        console: Console,
        runner: EffectRunner,
        *,
        baudrate: int = 115200,
        retry_s: float = 1.0,
        read_timeout_s: float = 0.2,
        write_timeout_s: float = 2.0,
        max_line: int = MAX_LINE,
        max_lines_per_s: int = MAX_LINES_PER_S,
        mute_s: float = MUTE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.port = port
        self.console = console
        self.runner = runner
        self.baudrate = baudrate
        self.retry_s = retry_s
        self.read_timeout_s = read_timeout_s
        self.write_timeout_s = write_timeout_s
        self.clock = clock
        self.editor = LineEditor(max_line)
        self.sessions = 0  # times the port was opened
        self.max_lines_per_s = max_lines_per_s
        self.mute_s = mute_s
        self.mutes = 0  # times an echo storm muted the console
        self._lines = self._line_limit(clock())
        self._muted_until = -math.inf
        self._stop = threading.Event()
        self._lock = threading.Lock()  # guards _serial: the writer writes, the reader closes
        self._serial: Any = None
        self._connected = threading.Event()
        self._out: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._out_bytes = 0  # queued in _out (under _out_lock)
        self._out_lock = threading.Lock()
        self._backlog: deque[_Item] = deque()
        self._backlog_bytes = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: asyncio.Queue[_Item] | None = None
        self._threads: list[threading.Thread] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        """True while the port is open."""
        return self._connected.is_set()

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError(f"console on {self.port}: already started")
        self._loop = asyncio.get_running_loop()
        self._inbox = asyncio.Queue()
        self._task = asyncio.create_task(self._serve(), name="console")
        self._threads = [
            threading.Thread(target=self._read_loop, name="pttd console reader", daemon=True),
            threading.Thread(target=self._write_loop, name="pttd console writer", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        log.info("console on %s at %d baud", self.port, self.baudrate)

    async def close(self) -> None:
        self._stop.set()
        with self._lock:
            port = self._serial
        if port is not None and hasattr(port, "cancel_read"):
            with contextlib.suppress(Exception):
                port.cancel_read()  # wakes a blocked read at once (POSIX ports)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._out.put(None)
        for thread in self._threads:
            await asyncio.to_thread(thread.join, self.read_timeout_s + self.write_timeout_s + 5)
            if thread.is_alive():
                log.error("console: %s did not stop", thread.name)

    # -- threads -----------------------------------------------------------------------------

    def _post(self, item: _Item) -> None:
        loop, inbox = self._loop, self._inbox
        assert loop is not None and inbox is not None
        with contextlib.suppress(RuntimeError):  # the loop closed under us: shutting down
            loop.call_soon_threadsafe(inbox.put_nowait, item)

    def _open(self) -> Any:
        return serial.serial_for_url(
            self.port,
            baudrate=self.baudrate,
            bytesize=serial.EIGHTBITS,
            parity=serial.PARITY_NONE,
            stopbits=serial.STOPBITS_ONE,
            timeout=self.read_timeout_s,
            write_timeout=self.write_timeout_s,
        )

    def _read_loop(self) -> None:
        outage_logged = False
        while not self._stop.is_set():
            try:
                port = self._open()
            except (OSError, ValueError) as exc:  # SerialException is an OSError
                if not outage_logged:
                    log.warning("console: cannot open %s (%s); retrying", self.port, exc)
                    outage_logged = True
                self._stop.wait(self.retry_s)
                continue
            outage_logged = False
            with self._lock:
                self._serial = port
            self._connected.set()
            log.info("console: %s open", self.port)
            self._post("opened")
            try:
                while not self._stop.is_set():
                    data: bytes = port.read(1)  # up to read_timeout_s, or cancel_read()
                    if data:
                        waiting = port.in_waiting
                        if waiting:
                            data += port.read(waiting)
                        self._post(bytes(data))
            except Exception as exc:  # SerialException/OSError when the port vanishes
                log.warning("console: %s lost (%s); reopening", self.port, exc)
                outage_logged = True
            finally:
                self._connected.clear()
                with self._lock:
                    self._serial = None
                    with contextlib.suppress(Exception):
                        port.close()
                self._post("lost")
            self._stop.wait(self.retry_s)

    def _write_loop(self) -> None:
        while True:
            data = self._out.get()
            if data is None:
                return
            with self._out_lock:
                self._out_bytes -= len(data)
            with self._lock:
                port = self._serial
                if port is None:
                    continue  # no terminal: dropped
                try:
                    port.write(data)
                except serial.SerialTimeoutException:
                    log.debug("console: nobody reads %s; %d bytes dropped", self.port, len(data))
                except Exception as exc:
                    log.debug("console: write to %s failed: %s", self.port, exc)

    # -- the loop side ----------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        if not data:
            return
        with self._out_lock:
            if self._out_bytes + len(data) > OUTPUT_MAX:
                return  # nobody has read for a long while: dropped, as by the write time-out
            self._out_bytes += len(data)
        self._out.put(data)

    def _say(self, text: str) -> None:
        if text:
            self._send(_crlf(text if text.endswith("\n") else text + "\n"))

    def _prompt(self) -> None:
        now = self.clock()
        self.editor.secret = self.console.secret_input
        self._send(_crlf(self.console.prompt(now)))

    async def _serve(self) -> None:
        assert self._inbox is not None
        while True:
            if self._backlog:
                item = self._backlog.popleft()
                if isinstance(item, bytes):
                    self._backlog_bytes -= len(item)
            else:
                item = await self._inbox.get()
            try:
                await self._handle(item)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not take the console down: say it, go on
                log.exception("console: error handling input")
                self.editor.reset()
                self._say("internal error (logged); try again")
                self._prompt()

    async def _handle(self, item: _Item) -> None:
        if item == "opened":
            self.sessions += 1
            self.editor.reset()
            self._say("\n" + self.console.start_session(self.clock()))
            self._prompt()
            return
        if item == "lost":
            self.editor.reset()
            return
        assert isinstance(item, bytes)
        if self.clock() < self._muted_until:
            return  # an echo storm: dropped until it has died out
        self.editor.feed(item)
        while (step := self.editor.step()) is not None:
            self._send(step.echo)
            event = step.event
            if event is not None and self._storm():
                return
            if isinstance(event, Line):
                reply = self.console.handle_line(event.text, self.clock(), secret=event.secret)
                self._say(reply.text)
                await self._effects(reply.effect)
                self._prompt()
                await asyncio.sleep(0)  # a long paste must not hold up the device's loop
            elif isinstance(event, Cancelled):
                self._say(self.console.cancel(self.clock()))
                self._prompt()
            elif isinstance(event, Rejected):
                self._say(event.message)
                self._prompt()

    def _line_limit(self, now: float) -> RateLimiter:
        return RateLimiter(self.max_lines_per_s, self.max_lines_per_s, now)

    def _storm(self) -> bool:
        """Count a line; True (and muted) when lines come faster than anyone types."""
        now = self.clock()
        if self._lines.allow(now):
            return False
        self.mutes += 1
        self._muted_until = now + self.mute_s
        self._lines = self._line_limit(now)  # a full bucket once the mute ends
        self.editor.reset()
        log.warning(
            "console: over %d lines a second on %s (a line echoing the console's output back?):"
            " muted for %g s",
            self.max_lines_per_s,
            self.port,
            self.mute_s,
        )
        return True

    async def _effects(self, effect: Effect | None) -> None:
        """Carry ``effect`` out, and the effects the interpreter answers its outcome with."""
        while effect is not None:
            outcome = await self._effect(effect)
            reply = self.console.finish(effect, outcome, self.clock())
            self._say(reply.text)
            effect = reply.effect

    async def _effect(self, effect: Effect) -> Outcome:
        assert self._inbox is not None
        task = asyncio.create_task(self.runner.run(effect, self._progress))
        try:
            while not task.done():
                getter = asyncio.ensure_future(self._inbox.get())
                done, _ = await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()  # the item, if any, stays in the queue
                    continue
                self._hold_during(getter.result(), task)
        except asyncio.CancelledError:  # the console is closing: stop the effect first
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise
        outcome: Outcome
        try:
            outcome = task.result()
        except asyncio.CancelledError:
            outcome = interpreter.Cancelled()
        except Exception as exc:
            log.info("console: %s failed: %s", type(effect).__name__, exc)
            outcome = exc
        return outcome

    def _hold_during(self, item: _Item, task: asyncio.Task[Outcome]) -> None:
        """Input that came while an effect runs: Ctrl-C cancels it; the rest waits."""
        if isinstance(item, bytes) and b"\x03" in item:
            task.cancel()
            self._send(b"^C\r\n")
            item = item.split(b"\x03", 1)[1]
            if not item:
                return
        if isinstance(item, bytes):
            if self._backlog_bytes + len(item) > BACKLOG_MAX:
                log.debug("console: %d bytes typed during a command dropped", len(item))
                return
            self._backlog_bytes += len(item)
        self._backlog.append(item)

    def _progress(self, text: str) -> None:
        self._send(_crlf(text))
