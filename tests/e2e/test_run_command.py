"""``pttd run --config PATH`` as a real process against the room server on 127.0.0.1.

The configuration is the installer's: the server's address, a state directory holding a
credential from a real pairing, simulated audio, a serial PTT accessory on a pty. A listening
Channel-API client hears the device come online, key up and stop; systemd's notification
socket is a unix datagram socket the test binds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from device_harness import ROOM, TIMEOUT, Rig
from pttd_process import start_pttd_run
from waits import eventually

from pttd.radio.store import Store
from pttd.wire import messages as p

T = TypeVar("T")

START_TIMEOUT = 60.0  # a cold interpreter importing numpy and opuslib on a loaded machine


def write_config(path: Path, rig: Rig, state: Path, *, serial_port: str = "") -> None:
    ptt = f'\n[[ptt]]\nkind = "serial"\nport = "{serial_port}"\n' if serial_port else ""
    path.write_text(
        f"""\
[device]
name = "field-1"

[server]
url = "{rig.url}"

[state]
dir = "{state}"

[audio]
backend = "sim"
{ptt}
[console]
port = ""

[log]
level = "INFO"
""",
        encoding="utf-8",
    )


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@contextlib.asynccontextmanager
async def pttd_run(
    config: Path, log: Path, env: dict[str, str]
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``pttd run --config`` in a child process (stderr to ``log``); killed if still running."""
    proc = await start_pttd_run(config, log, env)
    try:
        yield proc
    except BaseException:
        text = await asyncio.to_thread(log.read_text, errors="replace")
        print(f"--- pttd run's log ---\n{text}")  # shown with the failure
        raise
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def while_running(proc: asyncio.subprocess.Process, log: Path, wanted: Awaitable[T]) -> T:
    """Await ``wanted``, failing at once (with the daemon's log) if the daemon exits first."""
    waiter = asyncio.ensure_future(wanted)
    exited = asyncio.ensure_future(proc.wait())
    try:
        await asyncio.wait({waiter, exited}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        exited.cancel()
    if waiter.done():
        return waiter.result()
    waiter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiter
    text = await asyncio.to_thread(log.read_text, errors="replace")
    pytest.fail(f"pttd run exited early ({proc.returncode}):\n{text}")


async def terminate(proc: asyncio.subprocess.Process) -> int:
    proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(TIMEOUT):
        return await proc.wait()


@pytest.fixture
def pty() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    try:
        yield master, os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


async def test_pttd_run_comes_online_talks_through_the_serial_ptt_and_stops_on_sigterm(
    rig: Rig, tmp_path: Path, pty: tuple[int, str]
) -> None:
    master, port = pty
    state = tmp_path / "state"
    credential = await rig.credential("field-1")
    Store(state).save_credential(credential)
    config = tmp_path / "pttd.toml"
    write_config(config, rig, state, serial_port=port)
    log = tmp_path / "pttd.log"
    listener = await rig.listener()
    await listener.wait_for(p.OnChannelStatus, lambda e: e.users_online == 1)

    async with pttd_run(config, log, clean_env()) as proc:
        await while_running(
            proc,
            log,
            listener.wait_for(
                p.OnChannelStatus,
                lambda e: e.channel == ROOM and e.users_online == 2,
                timeout=START_TIMEOUT,
            ),
        )
        device = next(d for d in rig.registry.list_devices() if d.name == "field-1")
        assert device.last_seen is not None

        # The room hears the device before the device has heard the server's answer: a press
        # in between would rightly be refused (not online yet). The daemon's log says when it
        # is online and when the accessory's port is open (pyserial drops what came before).
        def logged(*lines: str) -> bool:
            text = log.read_text(encoding="utf-8", errors="replace")
            return all(line in text for line in lines)

        await while_running(
            proc, log, eventually(lambda: logged("online at", f"{port}: open"), START_TIMEOUT)
        )
        os.write(master, b"+PTT=P\r\n")
        start = await while_running(
            proc, log, listener.wait_for(p.OnStreamStart, lambda e: e.from_ == "field-1")
        )
        assert start.channel == ROOM
        await eventually(lambda: len(listener.packets(start.stream_id)) >= 10)
        assert len(listener.of(p.OnStreamStart)) == 1

        assert await terminate(proc) == 0
    stop = await listener.wait_for(p.OnStreamStop, lambda e: e.stream_id == start.stream_id)
    assert stop.reason is None  # the device stopped its stream before it closed the link
    await listener.wait_for(p.OnChannelStatus, lambda e: e.users_online == 1)
    text = log.read_text(encoding="utf-8", errors="replace")
    assert "online at" in text and "device field-1 stopped" in text
    assert credential.auth_token not in text  # tokens never reach a log line


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A unix datagram socket standing in for systemd's NOTIFY_SOCKET (a short path: the
    address of a unix socket is limited to about 100 bytes)."""
    with tempfile.TemporaryDirectory(prefix="pttd-notify-") as directory:
        path = str(Path(directory) / "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.setblocking(False)
        try:
            yield sock, path
        finally:
            sock.close()


async def test_pttd_run_tells_systemd_ready_feeds_the_watchdog_and_says_stopping(
    rig: Rig, tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, address = notify_socket
    state = tmp_path / "state"
    Store(state).save_credential(await rig.credential("field-1"))
    config = tmp_path / "pttd.toml"
    write_config(config, rig, state)
    messages: list[str] = []
    arrived = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def receive() -> None:
        while True:
            data = await loop.sock_recv(sock, 4096)
            messages.extend(data.decode().splitlines())
            arrived.set()

    async def until_seen(line: str, count: int = 1, timeout: float = TIMEOUT) -> None:
        async with asyncio.timeout(timeout):
            while messages.count(line) < count:
                arrived.clear()
                await arrived.wait()

    receiver = asyncio.create_task(receive())
    env = clean_env(NOTIFY_SOCKET=address, WATCHDOG_USEC="2000000")
    try:
        log = tmp_path / "pttd.log"
        async with pttd_run(config, log, env) as proc:
            await while_running(proc, log, until_seen("READY=1", timeout=START_TIMEOUT))
            assert "STATUS=running" in messages
            await until_seen("WATCHDOG=1", count=2)  # every WATCHDOG_USEC / 2 while alive
            assert "STOPPING=1" not in messages
            assert await terminate(proc) == 0
            await until_seen("STOPPING=1")
    finally:
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await receiver
    assert messages.index("READY=1") < messages.index("STOPPING=1")


async def test_pttd_run_refuses_a_broken_config(tmp_path: Path) -> None:
    config = tmp_path / "pttd.toml"
    config.write_text('[audio]\nbackend = "alsa"\n', encoding="utf-8")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pttd.cli",
        "run",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=clean_env(),
    )
    async with asyncio.timeout(START_TIMEOUT):
        _, err = await proc.communicate()
    assert proc.returncode == 1
    assert "audio.backend" in err.decode()
