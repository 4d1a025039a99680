"""Hostile clients cannot make the server hold their replies without bound.

Every frame the server sends goes to a connection only while that connection reads: one that
stops reading is dropped once ``max_write_buffer`` is waiting for it, whether what waits is
audio, text messages from the room, or the pongs websockets sends by itself. The honest talk
in the same server loses nothing. The clients here pause reading at the socket and shrink their
receive buffer, so the server's backlog grows after a few kilobytes rather than after the
kernel's megabytes; each attack is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import replace

import pytest
from channel_client import Client
from relkit import PASSWORDS, fast_server_settings, user_client

from pttd.server.app import RoomServer, ServerSettings
from pttd.server.registry import Registry
from pttd.wire import messages as p

LIMIT = 64 * 1024
MARK = struct.Struct(">I")


@pytest.fixture
def settings() -> ServerSettings:
    return replace(fast_server_settings(), max_write_buffer=LIMIT, max_text_rate=1000.0)


async def deaf_client(url: str) -> Client:
    """A client that will read nothing once :func:`go_deaf` is called, with a small kernel
    receive buffer so that its backlog builds up on the server."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    host, port = url.removeprefix("ws://").rsplit(":", 1)
    sock.connect((host, int(port)))
    return await Client.connect(url, sock=sock, ping_interval=None)


def go_deaf(server: RoomServer, client: Client) -> None:
    """Read nothing more; the server's kernel send buffer to it is made small too, so that what
    waits for it piles up in the server's own memory after a few kilobytes."""
    for ws in server.core.sessions:
        if ws.remote_address == client.ws.local_address:
            ws.transport.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDBUF, 4096
            )
    client.ws.transport.pause_reading()


def gone(server: RoomServer, client: Client) -> bool:
    return client.ws.local_address not in {ws.remote_address for ws in server.core.sessions}


async def ping_until_cut(
    server: RoomServer, pinger: Client, meanwhile: Callable[[], Awaitable[None]] | None = None
) -> int:
    """Ping (125 bytes each) without reading until the server drops ``pinger`` (at most 20 000
    pings: ~2.5 MB of pongs if never cut, within 30 s); awaits ``meanwhile`` every 200 pings.
    The number of pings sent."""
    async with asyncio.timeout(30):
        for i in range(20_000):
            if gone(server, pinger):
                break
            try:
                await pinger.ws.ping(bytes(121) + i.to_bytes(4, "big"))
            except Exception:
                break
            if meanwhile is not None and i % 200 == 0:
                await meanwhile()
        while not gone(server, pinger):  # noqa: ASYNC110 - the core hears of the cut soon after
            await asyncio.sleep(0.05)
    pinger.ws.transport.resume_reading()  # it finds its connection gone
    await asyncio.wait_for(pinger.closed.wait(), 5)
    return i


async def test_pings_without_reading_are_cut_off(server: RoomServer) -> None:
    """An anonymous client that pings and never reads: websockets answers each ping with a
    pong; the server cuts it after 64 KiB of input without a logon (or ``max_write_buffer`` of
    unread replies, whichever comes first)."""
    alice = await user_client(server.url, "alice", PASSWORDS["alice"])
    bob = await user_client(server.url, "bob", PASSWORDS["bob"])
    stream = (await alice.start()).stream_id
    assert stream is not None
    pinger = await deaf_client(server.url)
    go_deaf(server, pinger)
    heard = 0

    async def honest_packet() -> None:
        """The honest talk goes on meanwhile, and loses nothing."""
        nonlocal heard
        await alice.send_audio(stream, MARK.pack(heard) + bytes(60))
        packet = await bob.next_of(p.AudioPacket)
        assert MARK.unpack_from(packet.payload)[0] == heard
        heard += 1

    pings = await ping_until_cut(server, pinger, honest_packet)
    assert pings * 125 < 2 * LIMIT + 64 * 1024, "the server let pongs pile up past its bound"
    assert heard > 0
    for client in (alice, bob, pinger):
        await client.close()


async def test_a_member_that_reads_nothing_is_dropped_whatever_the_room_sends(
    server: RoomServer, registry: Registry
) -> None:
    """Text messages, not only audio, are bounded: 2 KB messages to a room with a deaf member."""
    alice = await user_client(server.url, "alice", PASSWORDS["alice"])
    bob = await user_client(server.url, "bob", PASSWORDS["bob"])
    deaf = await deaf_client(server.url)
    answer = await deaf.logon(("alpha",), username="bob", password=PASSWORDS["bob"])
    assert answer.success
    go_deaf(server, deaf)
    text = "x" * 2000
    async with asyncio.timeout(30):
        for i in range(2_000):  # noqa: B007 - 4 MB of text at most
            if gone(server, deaf):
                break
            answer = await alice.request(lambda seq: p.SendTextMessage("alpha", text, seq=seq))
            assert answer.success
            assert (await bob.next_of(p.OnTextMessage)).text == text  # bob keeps up
    assert gone(server, deaf), "the server kept buffering for a member that reads nothing"
    assert i * 2000 < 2 * LIMIT + 64 * 1024  # cut at the bound, give or take the kernel's buffers
    assert server.core.directory.room("alpha").users_online == 2
    deaf.ws.transport.resume_reading()
    await asyncio.wait_for(deaf.closed.wait(), 5)
    for client in (alice, bob, deaf):
        await client.close()


@pytest.mark.parametrize(
    "settings", [replace(fast_server_settings(), max_write_buffer=LIMIT, log_burst=2)]
)
async def test_pingers_cut_off_make_a_few_log_lines_not_one_each(
    server: RoomServer, settings: ServerSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """Each cut is a line of a log throttle's kind ("input flood": an anonymous pinger sends more
    than a logon before it is cut): a client that connects, pings without reading and goes
    again, over and over, cannot write the log."""
    caplog.set_level(logging.INFO, logger="pttd.server")
    for _ in range(5):
        pinger = await deaf_client(server.url)
        go_deaf(server, pinger)
        await ping_until_cut(server, pinger)
        await pinger.close()
    cuts = [r for r in caplog.records if "without logging on" in r.getMessage()]
    assert len(cuts) == settings.log_burst, [r.getMessage() for r in cuts]
