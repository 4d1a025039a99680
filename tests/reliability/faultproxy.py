"""A loopback TCP proxy whose faults the tests control, put between a device and the room server.

``FaultProxy(target_port)`` listens on 127.0.0.1 (the OS picks the port) and forwards each
connection to the target. Faults, all switchable at any time, each undone by :meth:`restore`:

* :meth:`stall` — nothing moves either way and nothing is closed (a wedged NAT, a dead Wi-Fi that
  still looks up): the peers find out only from their keepalive pings;
* :meth:`drop` — every open connection is reset (RST), as a router reboot does;
* :meth:`cut` — the network is gone: open connections stall and new ones are accepted but never
  answered (a black hole), so connection attempts time out;
* :meth:`let_new_through` — new connections work again while the stalled ones stay wedged;
* :meth:`drip` — at most ``n`` bytes per tick in each direction (a very slow link);
* :meth:`jitter` — every chunk is delayed by ``latency`` plus up to ``jitter`` seconds, in order
  (TCP keeps order: jitter arrives as bunching);
* :meth:`lose_audio` — websocket binary frames (audio packets) from the server to the client are
  dropped with probability ``p``: the framing stays valid, the listener sees gaps in packet ids.

Forwarding is back-pressured: a direction reads from its source only as fast as it writes to its
sink, so a stalled or dripping proxy makes the sender's buffers fill, as a real slow link does.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from dataclasses import dataclass, field

CHUNK = 64 * 1024
QUEUE = 32  # chunks in flight per direction before the reader waits


class WebSocketFrameFilter:
    """Drops whole websocket binary frames from a byte stream (server to client, unmasked or
    masked), after letting the HTTP upgrade response through. Keeps partial frames across calls."""

    def __init__(self, drop_probability: float, rng: random.Random) -> None:
        self.p = drop_probability
        self.rng = rng
        self._buffer = bytearray()
        self._in_http = True
        self.kept = 0
        self.dropped = 0

    def feed(self, data: bytes) -> bytes:
        self._buffer += data
        out = bytearray()
        if self._in_http:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return b""
            out += self._buffer[: end + 4]
            del self._buffer[: end + 4]
            self._in_http = False
        while True:
            size = self._frame_size()
            if size is None:
                break
            frame = bytes(self._buffer[:size])
            del self._buffer[:size]
            opcode = frame[0] & 0x0F
            if opcode == 0x2 and self.rng.random() < self.p:
                self.dropped += 1
                continue
            if opcode == 0x2:
                self.kept += 1
            out += frame
        return bytes(out)

    def _frame_size(self) -> int | None:
        b = self._buffer
        if len(b) < 2:
            return None
        length = b[1] & 0x7F
        head = 2
        if length == 126:
            if len(b) < 4:
                return None
            length = struct.unpack_from(">H", b, 2)[0]
            head = 4
        elif length == 127:
            if len(b) < 10:
                return None
            length = struct.unpack_from(">Q", b, 2)[0]
            head = 10
        if b[1] & 0x80:
            head += 4  # masking key
        total = head + length
        return total if len(b) >= total else None


@dataclass(eq=False)
class _Pair:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    ended: int = 0  # directions that saw their end of stream
    flowing: asyncio.Event = field(default_factory=asyncio.Event)  # clear: stalled


class FaultProxy:
    """``async with FaultProxy(port) as proxy: proxy.url`` — see the module doc."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1", seed: int = 7) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.rng = random.Random(seed)
        self._stalled = False  # while set, new connections start stalled too
        self._blackhole = False
        self._drip: tuple[int, float] | None = None
        self._latency = 0.0
        self._jitter = 0.0
        self._loss = 0.0
        self._pairs: set[_Pair] = set()
        self._held: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.connections = 0
        self.filters: list[WebSocketFrameFilter] = []

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.drop()
        for writer in list(self._held):
            writer.transport.abort()
        self._held.clear()
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def open_connections(self) -> int:
        return len(self._pairs)

    # -- faults -------------------------------------------------------------------------------

    def stall(self) -> None:
        self._stalled = True
        for pair in self._pairs:
            pair.flowing.clear()

    def cut(self) -> None:
        self.stall()
        self._blackhole = True

    def let_new_through(self) -> None:
        """New connections work again; the stalled ones stay wedged (a new route, while the
        old NAT mapping is dead and nobody told either end)."""
        self._stalled = self._blackhole = False

    def drop(self) -> None:
        for pair in list(self._pairs):
            self._reset(pair)

    def drip(self, n_bytes: int, tick: float) -> None:
        self._drip = (n_bytes, tick)

    def jitter(self, latency: float, jitter: float) -> None:
        self._latency, self._jitter = latency, jitter

    def lose_audio(self, probability: float) -> None:
        """Applies to connections made from now on."""
        self._loss = probability

    def restore(self) -> None:
        """Back to a good network. Black-holed connection attempts are closed (by now their
        clients have given up on them); stalled connections flow again."""
        self._blackhole = False
        self._drip = None
        self._latency = self._jitter = self._loss = 0.0
        for writer in list(self._held):
            writer.transport.abort()
        self._held.clear()
        self._stalled = False
        for pair in self._pairs:
            pair.flowing.set()

    # -- forwarding ---------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self._blackhole:
            self._held.add(writer)  # accepted, never answered
            return
        pair = _Pair(writer)
        if not self._stalled:
            pair.flowing.set()
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.transport.abort()  # the server is down: refused, as far as the client sees
            return
        pair.upstream = up_writer
        self._pairs.add(pair)
        down_filter = None
        if self._loss > 0:
            down_filter = WebSocketFrameFilter(self._loss, self.rng)
            self.filters.append(down_filter)
        up_q: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(QUEUE)
        down_q: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(QUEUE)
        pair.tasks = [
            asyncio.create_task(self._read(reader, up_q, None, pair)),
            asyncio.create_task(self._write(up_q, up_writer, pair)),
            asyncio.create_task(self._read(up_reader, down_q, down_filter, pair)),
            asyncio.create_task(self._write(down_q, writer, pair)),
        ]

    async def _read(
        self,
        source: asyncio.StreamReader,
        queue: asyncio.Queue[tuple[float, bytes] | None],
        frame_filter: WebSocketFrameFilter | None,
        pair: _Pair,
    ) -> None:
        loop = asyncio.get_running_loop()
        last_release = 0.0
        try:
            while True:
                await pair.flowing.wait()
                data = await source.read(CHUNK)
                if not data:
                    break
                if frame_filter is not None:
                    data = frame_filter.feed(data)
                    if not data:
                        continue
                delay = self._latency + (self.rng.uniform(0, self._jitter) if self._jitter else 0)
                release = max(last_release, loop.time() + delay)  # in order, like TCP
                last_release = release
                await queue.put((release, data))
        except OSError:
            pass
        await queue.put(None)  # end of stream (not reached when cancelled)

    async def _write(
        self,
        queue: asyncio.Queue[tuple[float, bytes] | None],
        sink: asyncio.StreamWriter,
        pair: _Pair,
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                item = await queue.get()
                if item is None:
                    if sink.can_write_eof():
                        sink.write_eof()  # pass the half-close on
                    pair.ended += 1
                    if pair.ended == 2:
                        self._finish(pair)
                    break
                release, data = item
                if (wait := release - loop.time()) > 0:
                    await asyncio.sleep(wait)
                view = memoryview(data)
                while view:
                    await pair.flowing.wait()
                    if self._drip is not None:
                        n, tick = self._drip
                        sink.write(view[:n])
                        view = view[n:]
                        await sink.drain()
                        await asyncio.sleep(tick)
                    else:
                        sink.write(view)
                        view = view[len(view) :]
                        await sink.drain()
        except (OSError, RuntimeError):
            self._reset(pair)

    def _finish(self, pair: _Pair) -> None:
        """Both directions ended normally: close both sockets."""
        self._pairs.discard(pair)
        pair.client.close()
        if pair.upstream is not None:
            pair.upstream.close()

    def _reset(self, pair: _Pair) -> None:
        """Abort both sides with RST (SO_LINGER 0) and stop forwarding."""
        self._pairs.discard(pair)
        for writer in (pair.client, pair.upstream):
            if writer is None:
                continue
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        for task in pair.tasks:
            if task is not asyncio.current_task():
                task.cancel()
