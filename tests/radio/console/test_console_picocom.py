"""The console driven through a real terminal program: picocom, inside a detached tmux session.

Two ptys joined back to back stand for the serial cable: the daemon's console opens one slave,
picocom (what the installer runs on the laptop) opens the other, and a thread copies bytes
between the two masters. tmux gives picocom a terminal; the test types with ``send-keys`` and
reads the screen with ``capture-pane``, as an installer would see it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from console_harness import Pty, console_rig

from pttd import __version__

pytestmark = pytest.mark.skipif(
    shutil.which("picocom") is None or shutil.which("tmux") is None,
    reason="needs picocom and tmux (apt-get install picocom tmux; scripts/setup installs them)",
)

TIMEOUT = 10.0


class Cable(threading.Thread):
    """Copies bytes both ways between two pty masters, as a null-modem cable would."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(name="test cable", daemon=True)
        self.ends = {a: b, b: a}
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                ready, _, _ = select.select(list(self.ends), [], [], 0.02)
                for fd in ready:
                    data = os.read(fd, 4096)
                    os.write(self.ends[fd], data)
            except OSError:
                self.stopping.wait(0.01)  # a side not open yet, or gone

    def stop(self) -> None:
        self.stopping.set()
        self.join(2)


class Tmux:
    """A private tmux server (its own socket) with one detached session."""

    def __init__(self, socket_name: str) -> None:
        self.base = ["tmux", "-L", socket_name]

    def run(self, *args: str) -> str:
        env = {**os.environ, "TERM": "xterm-256color"}
        done = subprocess.run(
            [*self.base, *args],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env=env,
            check=True,
        )
        return done.stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "console")

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "console", *keys)

    async def until(self, needle: str, timeout: float = TIMEOUT) -> str:
        """The screen, once it shows ``needle``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while needle not in (screen := await asyncio.to_thread(self.screen)):
            if loop.time() > deadline:
                raise AssertionError(f"{needle!r} never appeared on the screen:\n{screen}")
            await asyncio.sleep(0.05)
        return screen


@contextlib.contextmanager
def picocom_in_tmux(port: str, log: Path) -> Iterator[Tmux]:
    tmux = Tmux(f"pttd-test-{os.getpid()}")
    command = f"picocom -b 115200 --quiet --logfile {log} {port}"
    tmux.run("new-session", "-d", "-s", "console", "-x", "120", "-y", "40", command)
    try:
        yield tmux
    finally:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            tmux.run("kill-server")


async def test_installer_pairs_through_picocom(tmp_path: Path) -> None:
    async with console_rig(tmp_path) as rig:
        laptop = Pty()
        cable = Cable(rig.pty.master, laptop.master)
        rig.terminal.close()  # the cable reads the console's side from now on
        cable.start()
        try:
            with picocom_in_tmux(laptop.path, tmp_path / "picocom.log") as tmux:
                # picocom opens its port: Enter until the console's prompt shows (what is typed
                # before picocom is ready goes nowhere).
                for _ in range(20):
                    tmux.keys("Enter")
                    with contextlib.suppress(AssertionError):
                        await tmux.until("pttd[unpaired]>", timeout=0.5)  # (trailing blanks)
                        break
                else:
                    await tmux.until("pttd[unpaired]>")

                # Typing mistakes fixed the usual way: Backspace, arrow keys (swallowed).
                tmux.keys("-l", "statuz")
                tmux.keys("BSpace", "Left", "Right", "Up")
                tmux.keys("-l", "s")
                tmux.keys("Enter")
                screen = await tmux.until("uptime:")
                assert "link:         unpaired" in screen
                assert f"version:      {__version__}" in screen

                # Ctrl-C drops a half-typed line.
                tmux.keys("-l", "factory-res")
                tmux.keys("C-c")
                await tmux.until("factory-res^C")

                # Pairing with a code, typed at the masked question.
                url = rig.bench.server.url
                code = await rig.code()
                tmux.keys("-l", f"pair {url}")
                tmux.keys("Enter")
                await tmux.until("pairing code:")
                tmux.keys("-l", code)
                tmux.keys("Enter")
                screen = await tmux.until("online in room ops")
                assert "*" * len(code) in screen and code not in screen
                await tmux.until("pttd[online ops]>")

                tmux.keys("-l", "rooms")
                tmux.keys("Enter")
                screen = await tmux.until("  yard")
                assert "* ops" in screen
            log = (tmp_path / "picocom.log").read_text(errors="replace")
            assert "online in room ops" in log and code not in log
        finally:
            cable.stop()
            laptop.close()
