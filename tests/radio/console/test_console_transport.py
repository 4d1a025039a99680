"""The console's transport on its own terms: pyserial URLs, an absent port, a terminal that reads
nothing, a line that echoes everything back, the audio devices the status lists, and scrypt kept
off the event loop."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import serial  # type: ignore[import-untyped]
from console_harness import PROMPT, Pty, Terminal, console_rig
from waits import eventually

from pttd.radio.config import AudioConfig, Config, ConsoleConfig
from pttd.radio.console import device_backend
from pttd.radio.console.device_backend import DeviceBackend, build_console
from pttd.radio.console.interpreter import CheckPin, HashPin, PinChecked, PinHashed
from pttd.sim.audio import silence
from pttd.sim.device import SimDevice, sim_config

JSON_LINE = re.compile(rb"\r\n(\{\"[a-z_]+\":.*\"audio_devices\".*\})\r\n")


def console_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("pttd console")]


async def loop_serves(sim: SimDevice) -> None:
    """The device's loop is not starved: a press and a release reach its state machine (each
    bounded by the harness's timeout; a loop blocked for the console's write time-out per line
    would take minutes)."""
    sim.button.press()
    await sim.until(lambda m: bool(m.held_buttons))
    sim.button.release()
    await sim.until(lambda m: not m.held_buttons)


async def test_no_console_without_a_port(tmp_path: Path) -> None:
    sim = SimDevice.build(sim_config("a", "", tmp_path), silence(0.1, sample_rate=48000))
    assert build_console(sim.device) is None


async def test_an_echoing_line_mutes_the_console_instead_of_a_storm(tmp_path: Path, caplog) -> None:
    """loop:// sends back all the console writes: the greeting comes back as lines, the
    answers to those come back, and so on. The guard stops it and the daemon's loop keeps
    serving the device."""
    config = sim_config("a", "", tmp_path, console=ConsoleConfig(port="loop://"))
    sim = SimDevice.build(config, silence(0.1, sample_rate=48000))
    await sim.start()
    console = build_console(sim.device, retry_s=0.05, read_timeout_s=0.05, mute_s=0.5)
    assert console is not None
    try:
        with caplog.at_level(logging.WARNING, logger="pttd.radio.console"):
            await console.start()
            await eventually(lambda: console.mutes >= 1, what="the echo storm muted")
            await loop_serves(sim)
        assert console.connected and console.sessions == 1
        assert console.mutes == 1
        assert "muted for 0.5 s" in caplog.text
        assert sim.device.status().link == "unpaired"
    finally:
        await console.close()
        await sim.stop()
    assert console_threads() == []


async def test_absent_port_is_retried_and_close_is_prompt(
    tmp_path: Path, caplog, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = sim_config("a", "", tmp_path, console=ConsoleConfig(port=str(tmp_path / "ttyNONE")))
    sim = SimDevice.build(config, silence(0.1, sample_rate=48000))
    console = build_console(sim.device, retry_s=0.02)
    assert console is not None
    attempts: list[str] = []
    serial_for_url = serial.serial_for_url

    def counted(url: str, *args: object, **kwargs: object) -> object:
        attempts.append(url)
        return serial_for_url(url, *args, **kwargs)

    monkeypatch.setattr(serial, "serial_for_url", counted)
    with caplog.at_level(logging.WARNING, logger="pttd.radio.console"):
        await console.start()
        await eventually(lambda: len(attempts) >= 5, what="five tries to open the port")
    assert not console.connected and console.sessions == 0
    assert caplog.text.count("cannot open") == 1  # said once, not every retry
    # Close is prompt: it ends the wait between tries. Made an hour long here, that wait would
    # outlast the threads' join on close, and a reader thread would be left.
    console.retry_s = 3600.0
    tries = len(attempts)
    await eventually(lambda: len(attempts) > tries, what="a try before the long wait")
    await console.close()
    assert console_threads() == []


async def test_a_terminal_that_reads_nothing_does_not_block_the_daemon(tmp_path: Path) -> None:
    async with console_rig(tmp_path, write_timeout_s=1.0, max_lines_per_s=10**9) as rig:
        rig.terminal.close()  # the laptop stops reading; the pty's buffer fills up
        stalled = Terminal.__new__(Terminal)  # a writer only
        stalled.pty = rig.pty
        for _ in range(300):
            stalled.write(b"help\r")  # ~1 KiB of answer each
        # Were writes made on the loop, each would hold it for the 1 s write time-out.
        await loop_serves(rig.sim)
        assert rig.sim.device.status().link == "unpaired"
        rig.terminal = Terminal(rig.pty)  # reading again: the console answers
        # What was dropped is dropped; the rest drains. An answer given while the backlog is
        # still over its bound is dropped too: ask until one comes.
        match = None
        for _ in range(10):
            mark = rig.terminal.mark()
            rig.terminal.write(b"\x03status --json\r")
            with contextlib.suppress(AssertionError):
                out = await rig.terminal.wait_for(JSON_LINE, mark, timeout=1.0)
                match = JSON_LINE.search(out)
                break
        assert match is not None and json.loads(match.group(1))["link"] == "unpaired"


async def test_console_on_a_plain_pty_path(tmp_path: Path) -> None:
    """No symlink: the pts path itself, as a device path in the config would be."""
    pty = Pty()
    terminal = Terminal(pty)
    config = sim_config("plain", "", tmp_path, console=ConsoleConfig(port=pty.path))
    sim = SimDevice.build(config, silence(0.1, sample_rate=48000))
    await sim.start()
    console = build_console(sim.device, read_timeout_s=0.05)
    assert console is not None
    try:
        await console.start()
        await terminal.wait_for(PROMPT)
        assert await terminal.command("version") != ""
    finally:
        await console.close()
        await sim.stop()
        terminal.close()
        pty.close()


def test_audio_devices_listed_for_portaudio_without_failing(tmp_path: Path) -> None:
    config = Config(audio=AudioConfig(backend="sounddevice"))
    device = types.SimpleNamespace(config=config)
    names = DeviceBackend(device).audio_devices()  # type: ignore[arg-type]
    assert isinstance(names, list) and all(isinstance(n, str) for n in names)
    sim = types.SimpleNamespace(config=Config(audio=AudioConfig(backend="sim")))
    assert DeviceBackend(sim).audio_devices() == ["simulated"]  # type: ignore[arg-type]


async def test_scrypt_runs_in_a_worker_thread_not_on_the_loop(tmp_path: Path, monkeypatch) -> None:
    """The back-end hashes and checks a PIN off the event loop, where the audio runs."""
    sim = SimDevice.build(sim_config("a", "", tmp_path), silence(0.1, sample_rate=48000))
    backend = DeviceBackend(sim.device)
    threads: list[int] = []

    def in_thread(real: Callable[..., Any]) -> Callable[..., Any]:
        def spy(*args: Any, **kwargs: Any) -> Any:
            threads.append(threading.get_ident())
            return real(*args, **kwargs)

        return spy

    monkeypatch.setattr(device_backend, "hash_pin", in_thread(device_backend.hash_pin))
    monkeypatch.setattr(device_backend, "pin_matches", in_thread(device_backend.pin_matches))
    hashed = await backend.run(HashPin("2468", 16), lambda _: None)
    assert isinstance(hashed, PinHashed)
    assert await backend.run(CheckPin("2468", hashed.record), lambda _: None) == PinChecked(True)
    assert await backend.run(CheckPin("2469", hashed.record), lambda _: None) == PinChecked(False)
    assert len(threads) == 3 and threading.get_ident() not in threads
