"""``pttd run`` killed while it transmits.

The device is a real ``pttd run --config`` process (simulated audio, a serial PTT accessory on a
real pty, logging at DEBUG); a Channel-API client in the room listens through the server.

* SIGTERM: capture closes and the device stops its stream before it closes the link (the
  listener sees ``on_stream_stop`` without a reason, then no more packets), and it exits 0.
* SIGTERM with the network gone (its route black-holed just before): it still exits 0, in
  bounded time, and the server's keepalive ends the orphaned talk.
* SIGKILL: nothing of the device runs any more; the kernel closes its socket, the server ends the
  orphaned stream (reason ``disconnected``) and the floor is free for the next talker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from channel_client import Client
from faultproxy import FaultProxy
from pttd_process import start_pttd_run
from relkit import PASSWORDS, ROOM, pair_over_wire, secret_fragments, user_client
from waits import TIMEOUT, eventually

from pttd.radio.store import Store
from pttd.server.app import RoomServer
from pttd.server.registry import Registry
from pttd.wire import messages as p

START_TIMEOUT = 60.0  # a cold interpreter importing numpy and opuslib on a loaded machine
NAME = "radio-sig"


@pytest.fixture
def pty() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    try:
        yield master, os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


def write_config(path: Path, url: str, state: Path, port: str) -> None:
    path.write_text(
        f"""\
[device]
name = "{NAME}"

[server]
url = "{url}"

[state]
dir = "{state}"

[audio]
backend = "sim"
sample_rate = 16000

[[ptt]]
kind = "serial"
port = "{port}"

[log]
level = "DEBUG"
""",
        encoding="utf-8",
    )


async def press_until_heard(master: int, listener: Client) -> p.OnStreamStart:
    """pyserial flushes what arrived before it opened the port: repeat the press until heard
    (a repeated ``+PTT=P`` is not a second press)."""
    async with asyncio.timeout(START_TIMEOUT):
        while True:
            os.write(master, b"+PTT=P\r\n")
            with contextlib.suppress(TimeoutError):
                return await listener.next_of(p.OnStreamStart, 0.5, where=lambda s: s.from_ == NAME)


@pytest.mark.parametrize("mode", ["sigterm", "sigkill", "sigterm-cut-off"])
async def test_pttd_run_killed_while_transmitting(
    tmp_path: Path,
    registry: Registry,
    server: RoomServer,
    pty: tuple[int, str],
    mode: str,
) -> None:
    master, port = pty
    sig = signal.SIGKILL if mode == "sigkill" else signal.SIGTERM
    proxy = FaultProxy(server.port)  # the device's route to the server, for the cut-off case
    await proxy.start()
    credential = replace(await pair_over_wire(server.url, registry, NAME), server_url=proxy.url)
    state = tmp_path / "state"
    Store(state).save_credential(credential)
    config = tmp_path / "pttd.toml"
    write_config(config, proxy.url, state, port)
    listener = await user_client(server.url, "alice", PASSWORDS["alice"])
    log = tmp_path / "pttd.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
    proc = await start_pttd_run(config, log, env)
    try:
        await listener.next_of(
            p.OnChannelStatus,
            START_TIMEOUT,
            where=lambda s: s.channel == ROOM and s.users_online == 2,
        )
        # The server counts the device in before the device has its logon answer: a press in
        # between would be refused (offline) and block until released. Wait for its own word.
        await eventually(lambda: "online at" in log.read_text(errors="replace"), START_TIMEOUT)
        start = await press_until_heard(master, listener)
        for _ in range(10):  # it is really talking
            await listener.next_of(p.AudioPacket, where=lambda a: a.stream_id == start.stream_id)

        if mode == "sigterm-cut-off":
            proxy.cut()  # the network goes, and then the device is told to stop
        proc.send_signal(sig)
        async with asyncio.timeout(TIMEOUT):  # bounded even with nobody at the other end
            code = await proc.wait()
        stop = await listener.next_of(
            p.OnStreamStop, where=lambda s: s.stream_id == start.stream_id
        )
        if mode == "sigterm":
            assert code == 0
            assert stop.reason is None  # the device's own stop, before its link closed
        elif mode == "sigterm-cut-off":
            assert code == 0
            assert stop.reason == p.REASON_DISCONNECTED  # the server's keepalive noticed
        else:
            assert code == -signal.SIGKILL
            assert stop.reason == p.REASON_DISCONNECTED  # the server cleaned up after it
        while True:  # up to the server's note that the device left: no packet after the stop
            event = await listener.next()
            assert not isinstance(event, p.AudioPacket), event
            if isinstance(event, p.OnChannelStatus) and event.users_online == 1:
                break
        # The server has let the device's connection go: nothing of it can come any more.
        await listener.sync()
        assert not [e for e in listener.drain() if isinstance(e, p.AudioPacket)]
        assert not server.core.streams
        answer = await listener.start()  # the floor is free
        assert answer.success and answer.stream_id is not None
        assert (await listener.stop(answer.stream_id)).success
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await listener.close()
        await proxy.close()
        text = log.read_text(encoding="utf-8", errors="replace")
        print("pttd run log (DEBUG lines left out):")  # shown if the test fails
        print(
            "\n".join(
                line for line in text.splitlines() if " DEBUG " not in line or "inputs" in line
            )[-3000:]
        )
    assert "online at" in text
    if sig is signal.SIGTERM:
        assert f"device {NAME} stopped" in text
    leaked = [f for f in secret_fragments(credential.auth_token) if f in text]
    assert not leaked, "the device's token reached its DEBUG log"
