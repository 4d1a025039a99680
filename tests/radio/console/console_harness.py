"""Helpers for the console tests over a real pty: the installer's terminal, and a rig with a real
room server, a real (simulated-audio) device and its console on the pty's slave.

The console opens the slave through a symlink (``ttyCONSOLE``), as udev gives a USB serial
adapter a stable name; the test is the installer's laptop, reading and writing the master.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import select
import threading
import time
import tty
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from waits import eventually

from pttd.radio.config import ConsoleConfig
from pttd.radio.console.device_backend import build_console
from pttd.radio.console.serial_console import SerialConsole
from pttd.redact import LogBuffer
from pttd.server.app import ServerSettings
from pttd.sim.device import SimDevice, sim_config
from pttd.sim.loopback import Loopback, loopback

TIMEOUT = 5.0
PROMPT = re.compile(rb"pttd\[[^\]\r\n]*\]> $")
ROOMS = ("ops", "yard")


class Pty:
    """A pseudo-terminal: ``path`` is the slave the console opens; the test has the master."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        tty.setraw(slave)  # no line-discipline echo before the console opens it
        self.path = os.ttyname(slave)
        os.close(slave)  # the console opens it by path; the pts lives while the master is open
        self.open = True

    def close(self) -> None:
        if self.open:
            self.open = False
            os.close(self.master)


class Terminal:
    """The installer's end: writes go to the master, a thread collects everything read back."""

    def __init__(self, pty: Pty) -> None:
        self.pty = pty
        self._buffer = bytearray()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="test terminal", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self.pty.master], [], [], 0.02)
                if not ready:
                    continue
                data = os.read(self.pty.master, 65536)
            except OSError as exc:
                if exc.errno in (errno.EBADF, errno.EINVAL) or not self.pty.open:
                    return  # the master was closed
                self._stop.wait(0.01)  # EIO: no slave open at the moment
                continue
            with self._lock:
                self._buffer += data

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.pty.master, view) :]

    @property
    def transcript(self) -> bytes:
        with self._lock:
            return bytes(self._buffer)

    def mark(self) -> int:
        with self._lock:
            return len(self._buffer)

    def since(self, mark: int) -> bytes:
        with self._lock:
            return bytes(self._buffer[mark:])

    async def wait_for(
        self, pattern: re.Pattern[bytes] | bytes, mark: int = 0, timeout: float = TIMEOUT
    ) -> bytes:
        """Output since ``mark`` once it matches ``pattern`` (a regex, or bytes it contains)."""

        def found(out: bytes) -> bool:
            if isinstance(pattern, bytes):
                return pattern in out
            return pattern.search(out) is not None

        try:
            await eventually(lambda: found(self.since(mark)), timeout, every=0.005)
        except AssertionError:
            raise AssertionError(f"no {pattern!r} in {self.since(mark)!r}") from None
        return self.since(mark)

    async def command(
        self, line: str, until: re.Pattern[bytes] | bytes = PROMPT, timeout: float = TIMEOUT
    ) -> str:
        """Type ``line`` and Enter; return the reply: the output after the echoed line, up to
        (not including) the next prompt."""
        mark = self.mark()
        self.write(line.encode() + b"\r")
        out = await self.wait_for(until, mark, timeout)
        text = out.decode("utf-8", "replace")
        _, _, reply = text.partition("\r\n")  # the echo of the line ends at the first CRLF
        if isinstance(until, re.Pattern):
            reply = reply.rpartition("\r\n")[0]  # the prompt is the last, unfinished line
        return reply.replace("\r\n", "\n").rstrip("\n")

    async def answer(self, line: str) -> str:
        """Answer a question (the next prompt may be another question or the shell's)."""
        return await self.command(line, until=re.compile(rb"(?:: |> )$"))


class SkewClock:
    """The device's (and so its console's) monotonic clock: ``time.monotonic()`` plus what the
    test moved it on by (a wait the console asks for, without waiting)."""

    def __init__(self) -> None:
        self.skew = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.skew

    def advance(self, seconds: float) -> None:
        self.skew += seconds


@dataclass
class ConsoleRig:
    tmp: Path
    bench: Loopback
    sim: SimDevice
    console: SerialConsole
    pty: Pty
    terminal: Terminal
    port: Path  # the stable name the console opens
    logs: LogBuffer
    clock: SkewClock

    @property
    def state(self) -> Path:
        return Path(self.sim.device.config.state.dir)

    async def code(self, rooms: Iterable[str] = ROOMS, **kw: Any) -> str:
        pair_code = await asyncio.to_thread(self.bench.registry.create_pair_code, list(rooms), **kw)
        return pair_code.code

    async def pair(self) -> tuple[str, str]:
        """Pair through the console; (code, token)."""
        code = await self.code()
        reply = await self.terminal.command(f"pair {self.bench.server.url} {code}")
        assert "online in room ops" in reply, reply
        credential = self.sim.device.store.credential()
        assert credential is not None
        return code, credential.auth_token

    async def replug(self) -> None:
        """Pull the cable (close the master) and plug a new one in under the same name."""
        old_sessions = self.console.sessions
        self.terminal.close()
        self.pty.close()
        await eventually(lambda: not self.console.connected, TIMEOUT, "the console let go")
        self.pty = Pty()
        replacement = self.tmp / "ttyCONSOLE.new"
        replacement.symlink_to(self.pty.path)
        replacement.replace(self.port)
        self.terminal = Terminal(self.pty)
        await self.terminal.wait_for(PROMPT)
        assert self.console.sessions == old_sessions + 1


def secrets_absent(text: str | bytes, *secrets: str) -> None:
    """None of ``secrets`` (nor a code without its dashes) appears in ``text``."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    for secret in secrets:
        assert secret not in text, f"a secret leaked: {text!r}"
        assert secret.replace("-", "") not in text, f"a secret leaked: {text!r}"


@contextlib.asynccontextmanager
async def console_rig(
    tmp_path: Path,
    *,
    server_url: str = "",
    ca_file: str = "",
    scrypt_n: int | None = None,
    **options: Any,
) -> AsyncIterator[ConsoleRig]:
    """A room server (rooms ops, yard), an unpaired device with simulated audio and in-memory
    LEDs, and its console on a pty; the console has greeted the terminal when this yields."""
    settings = ServerSettings(host="127.0.0.1", port=0, registry_poll=0.05)
    async with loopback(settings) as bench:
        for room in ROOMS:
            await asyncio.to_thread(bench.registry.add_room, room)
        pty = Pty()
        port = tmp_path / "ttyCONSOLE"
        port.symlink_to(pty.path)
        config = sim_config(
            "gate-1",
            server_url,
            tmp_path / "state",
            console=ConsoleConfig(port=str(port)),
            ca_file=ca_file,
        )
        clock = SkewClock()
        sim = SimDevice.build(config, clock=clock, timeout=TIMEOUT)
        logs = LogBuffer()
        pttd_logger = logging.getLogger("pttd")
        old_level = pttd_logger.level
        pttd_logger.setLevel(logging.DEBUG)
        pttd_logger.addHandler(logs)
        await sim.start()
        options = {"retry_s": 0.05, "read_timeout_s": 0.05, **options}
        console = build_console(sim.device, log_buffer=logs, **options)
        assert console is not None
        if scrypt_n is not None:
            console.console.scrypt_n = scrypt_n
        terminal = Terminal(pty)
        rig = ConsoleRig(tmp_path, bench, sim, console, pty, terminal, port, logs, clock)
        try:
            await console.start()
            await terminal.wait_for(PROMPT)
            yield rig
        finally:
            await console.close()
            await sim.stop()
            rig.terminal.close()
            rig.pty.close()
            pttd_logger.removeHandler(logs)
            pttd_logger.setLevel(old_level)
