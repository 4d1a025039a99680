"""The attacks of ``pttd bench hostile``, and the attacker process that runs them.

``python -m pttd.bench.attacks`` is the attacker process: :class:`~pttd.bench.hostile.Attacker`
starts it and tells it, on stdin, where the server is and who may log on (:class:`Target`), then
one attack at a time; it answers each with what the attack did and how the server answered
(:class:`AttackResult`), on stdout. The attackers run apart from the honest pair so that their own
CPU is not counted in its latency. Each attack connects from its own loopback addresses
(127.0.N.x, where the machine has them), is bounded in count and time, and closes every
connection it opened before it returns. What each one does: :data:`ATTACKS` and the functions
it names.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import socket
import struct
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Final, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from pttd.bench.server import BenchError
from pttd.errors import ProtocolError
from pttd.wire import messages as p

log = logging.getLogger(__name__)

T = TypeVar("T")

ROOM: Final = "alpha"  # the honest pair's room
SIDE_ROOM: Final = "beta"  # where the deaf attack's talker sends its big packets
PACKET_MS: Final = 20
CODEC: Final = p.CodecHeader(48000, 1, PACKET_MS)
# Payload head: whose packet, phase, sequence number, send time (time.perf_counter_ns).
MARK: Final = struct.Struct(">2sBIQ")
HONEST: Final = b"HP"
FORGED: Final = b"XX"
PADDING: Final = bytes(60 - MARK.size)  # 60-byte payloads: a 24 kbit/s Opus packet of 20 ms

# The attacks' sizes.
PINGERS: Final = 25
PINGS_PER_CLIENT: Final = 4000
PING_CHUNK: Final = 100  # pings written at once
PONG_BYTES: Final = 127  # a 125-byte pong frame from the server, unmasked
DEAF: Final = 40
DEAF_AUDIO_RATE: Final = 240.0  # packets per second, under the server's 250
DEAF_TEXT_EVERY: Final = 16  # a text with every 16th packet: 15 a second, under 20
BIG_PAYLOAD: Final = bytes(p.MAX_BINARY_FRAME - p.AUDIO_HEADER_SIZE)
TEXT: Final = "x" * p.MAX_TEXT
SESSION_TRIES: Final = 16
PENDING_PER_S: Final = 50.0
FORGERS: Final = 4  # logged-on devices; and anonymous ones:
FORGERS_ANONYMOUS: Final = 2
FORGED_BURST: Final = 60  # refused packets sent at once (20 are let go before a kick)
JUNK_CLIENTS: Final = 4  # anonymous; and one logged-on device
JUNK_BURST: Final = 200  # control messages sent at once (a burst of 40 is allowed)
ROUNDS: Final = 10  # at most, of the attacks that come back after a kick
CONNECT_CONCURRENCY: Final = 8  # handshakes (and logons) of one attack at once
JUNK: Final = (
    "not json",
    "[1, 2, 3]",
    "[" * 5000,  # deeper than the JSON parser recurses
    '{"seq": ' + "9" * 5000 + "}",
    '{"command": 7, "seq": 1}',
    '{"command": "launch_missiles", "seq": 2}',
    '{"seq": 3}',
    '{"command": "logon", "seq": 4}',
    p.StartStream(CODEC, PACKET_MS, seq=5).to_json(),  # before logon
    '{"command": "logon", "seq": 6, "username": "carol", "password": "not her password", '
    '"channels": ["alpha"]}',
    p.SendTextMessage(ROOM, "hi", seq=7).to_json(),
)


# Bounds, so that a broken attack ends with an error instead of hanging.
OPEN_TIMEOUT: Final = 20.0  # one connection's opening handshake
ANSWER_TIMEOUT: Final = 20.0  # an answer, or the close after a kick
CLOSE_TIMEOUT: Final = 5.0
ATTACK_GRACE: Final = 60.0  # an attack's time on top of its seconds, on a slow machine


# --------------------------------------------------------------------------- who is who


@dataclass(frozen=True, slots=True)
class Cast:
    """The registry's credentials: the honest pair's and the attackers'."""

    passwords: dict[str, str]  # alice (talker), bob (listener), carol (sessions attack)
    deaf: list[str]  # device tokens
    loud: str
    forgers: list[str]
    junk: str


@dataclass(frozen=True, slots=True)
class Target:
    """What the attacker process is told: where the server is, and who may log on."""

    url: str
    spread: bool  # 127.0.N.x can be connected from
    stream_id: int  # the honest stream
    cast: Cast

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.url.removeprefix("ws://").rsplit(":", 1)
        return host, int(port)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Target:
        d = json.loads(text)
        return cls(d["url"], d["spread"], d["stream_id"], Cast(**d["cast"]))


def spread_addresses() -> bool:
    """Whether connections can come from 127.0.N.x (Linux: all of 127/8 is loopback)."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.1.1", 0))
        except OSError:
            return False
    return True


# --------------------------------------------------------------------------- the attacks' side


@dataclass(slots=True)
class AttackResult:
    """What an attack did, and how the server answered."""

    connections: int = 0
    rounds: int = 0  # of the attacks that come back after a kick
    frames: int = 0  # frames the attack sent
    # Bytes the server was asked to queue for clients that read nothing: what a server without
    # a bound would hold (less what the kernel's socket buffers take, ~3 MB a connection).
    offered_bytes: int = 0
    logged_on: int = 0
    closed: dict[str, int] = field(default_factory=dict)  # close code (or "aborted") -> count
    answers: dict[str, int] = field(default_factory=dict)  # error or reason -> count
    seconds: float = 0.0

    @staticmethod
    def count(table: dict[str, int], key: str) -> None:
        table[key] = table.get(key, 0) + 1

    @property
    def offered_mb(self) -> float:
        return round(self.offered_bytes / 2**20, 1)


class Peer:
    """One attacking connection. Its reader drops audio, hands out answers, and counts the errors
    the server sends (refusals, kicks)."""

    def __init__(self, ws: ClientConnection, result: AttackResult) -> None:
        self.ws = ws
        self.result = result
        self._seq = itertools.count(1)
        self._answers: dict[int, asyncio.Future[p.Response]] = {}
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                if isinstance(frame, str):
                    self._on_text(frame)
        except ConnectionClosed:
            pass
        finally:
            for future in self._answers.values():
                if not future.done():
                    future.set_exception(ConnectionError("closed before the answer"))

    def _on_text(self, frame: str) -> None:
        try:
            m = p.parse_server_message(frame)
        except ProtocolError:
            AttackResult.count(self.result.answers, "unparsable")
            return
        if isinstance(m, p.Response):
            if m.error is not None:
                AttackResult.count(self.result.answers, m.reason or m.error)
            future = self._answers.pop(m.seq, None)
            if future is not None and not future.done():
                future.set_result(m)
        elif isinstance(m, p.OnError):
            AttackResult.count(self.result.answers, f"on_error {m.error}")

    async def request(self, make: Callable[[int], Any]) -> p.Response:
        seq = next(self._seq)
        future: asyncio.Future[p.Response] = asyncio.get_running_loop().create_future()
        self._answers[seq] = future
        await self.ws.send(make(seq).to_json())
        async with asyncio.timeout(ANSWER_TIMEOUT):
            return await future

    async def logon(self, rooms: tuple[str, ...] = (ROOM,), **creds: Any) -> p.Response:
        answer = await self.request(lambda seq: p.Logon(channels=rooms, seq=seq, **creds))
        if answer.success:
            self.result.logged_on += 1
        return answer

    async def send(self, frames: Iterable[str | bytes]) -> None:
        """Send each frame, as fast as the connection takes them, until it closes."""
        try:
            for frame in frames:
                await self.ws.send(frame)
                self.result.frames += 1
        except ConnectionClosed:
            pass

    async def closed(self) -> None:
        """Wait (bounded) for the server to close this connection."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ANSWER_TIMEOUT):
                await self.ws.wait_closed()

    async def finish(self, *, abort: bool = False) -> None:
        """Close (or ``abort``) the connection and count how it ended: the server's close code,
        1006 when the server cut it without one, "aborted" when we did."""
        ws = self.ws
        if abort and ws.state is not State.CLOSED:
            ws.transport.abort()
            how = "aborted"
        else:
            ws.transport.resume_reading()  # a deaf client reads what waits, then the close
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT * 2):
                    await ws.close()
            except TimeoutError:
                ws.transport.abort()
            how = str(ws.close_code) if ws.state is State.CLOSED else "aborted"
        AttackResult.count(self.result.closed, how)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.reader


class Crowd:
    """One attack's connections: where they come from (127.0.INDEX.x), its time, its tally; every
    connection still open is closed at the end."""

    def __init__(self, target: Target, index: int, seconds: float) -> None:
        self.target = target
        self.index = index
        self.result = AttackResult()
        self.peers: list[Peer] = []
        self.gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        loop = asyncio.get_running_loop()
        self.began = loop.time()
        self.until = self.began + seconds

    def address(self, n: int) -> str | None:
        """The address client ``n`` connects from: 127.0.INDEX.n+1 (None: the OS picks)."""
        return f"127.0.{self.index}.{n % 250 + 1}" if self.target.spread else None

    def over(self) -> bool:
        return asyncio.get_running_loop().time() >= self.until

    async def hold(self) -> None:
        """Keep the connections open until the attack's time is up."""
        await asyncio.sleep(max(0.0, self.until - asyncio.get_running_loop().time()))

    async def open(self, n: int = 0, *, deaf: bool = False) -> Peer:
        """Connect from address ``n``; ``deaf``: with a 4 KB receive buffer, so that once the
        client stops reading (``peer.ws.transport.pause_reading()``) what the server sends it
        waits in the server, after the kernel's buffers."""
        host, port = self.target.address
        local = self.address(n)
        options: dict[str, Any] = {
            "compression": None,
            "ping_interval": None,
            "open_timeout": OPEN_TIMEOUT,
            "close_timeout": CLOSE_TIMEOUT,
            "max_size": None,
            "proxy": None,
        }
        if deaf:
            sock = socket.socket()
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                if local is not None:
                    sock.bind((local, 0))
                sock.setblocking(False)
                async with asyncio.timeout(OPEN_TIMEOUT):
                    await asyncio.get_running_loop().sock_connect(sock, (host, port))
            except BaseException:
                sock.close()
                raise
            ws = await connect(self.target.url, sock=sock, **options)
        else:
            local_addr = (local, 0) if local is not None else None
            ws = await connect(self.target.url, local_addr=local_addr, **options)
        self.result.connections += 1
        peer = Peer(ws, self.result)
        self.peers.append(peer)
        return peer

    async def many(self, n: int, make: Callable[[int], Awaitable[T]]) -> list[T]:
        """``make(0)`` … ``make(n - 1)``, a few at a time (:data:`CONNECT_CONCURRENCY`)."""

        async def one(i: int) -> T:
            async with self.gate:
                return await make(i)

        return list(await asyncio.gather(*(one(i) for i in range(n))))

    async def finish(self, peers: Iterable[Peer] | None = None, *, abort: bool = False) -> None:
        """Close ``peers`` (default: every one still open), all at once."""
        done = list(self.peers if peers is None else peers)
        self.peers = [x for x in self.peers if x not in done]
        await asyncio.gather(*(x.finish(abort=abort) for x in done))


class Pacer:
    """Ticks on a grid of ``rate`` a second that does not drift; after a stall of more than
    ``max_lag`` it starts a new grid rather than catching up in a burst."""

    def __init__(self, rate: float, max_lag: float = 0.25) -> None:
        self.period = 1 / rate
        self.max_lag = max_lag
        self.start: float | None = None
        self.ticks = 0

    async def tick(self) -> None:
        now = asyncio.get_running_loop().time()
        if self.start is None:
            self.start = now
        due = self.start + self.ticks * self.period
        if now - due > self.max_lag:
            self.start, self.ticks, due = now, 0, now
        if due > now:
            await asyncio.sleep(due - now)
        self.ticks += 1


async def pings(crowd: Crowd) -> None:
    """25 anonymous clients, each from its own address, write pings and never read."""
    chunk = b"".join(
        Frame(Opcode.PING, i.to_bytes(4, "big") + bytes(121)).serialize(mask=True)
        for i in range(PING_CHUNK)
    )
    peers = await crowd.many(PINGERS, lambda n: crowd.open(n, deaf=True))
    for peer in peers:
        peer.ws.transport.pause_reading()

    async def flood(peer: Peer) -> None:
        transport = peer.ws.transport
        sent = 0
        while sent < PINGS_PER_CLIENT and not crowd.over() and not transport.is_closing():
            if transport.get_write_buffer_size() > 64 * 1024:  # the server is not keeping up
                await asyncio.sleep(0.01)
                continue
            transport.write(chunk)
            sent += PING_CHUNK
            crowd.result.frames += PING_CHUNK
            crowd.result.offered_bytes += PING_CHUNK * PONG_BYTES
            await asyncio.sleep(0)

    await asyncio.gather(*(flood(peer) for peer in peers))
    await crowd.hold()
    await crowd.finish(abort=True)  # reading megabytes of pongs back would only cost time


async def deaf(crowd: Crowd) -> None:
    """40 members stop reading; another member sends 2 KB texts and 8 KiB packets to them."""
    cast = crowd.target.cast

    async def member(n: int) -> Peer:
        peer = await crowd.open(deaf=True)
        answer = await peer.logon((ROOM, SIDE_ROOM), auth_token=cast.deaf[n])
        if not answer.success:
            raise BenchError(f"deaf member {n} could not log on: {answer.error}")
        return peer

    members = await crowd.many(DEAF, member)
    loud = await crowd.open()
    if not (await loud.logon((ROOM, SIDE_ROOM), auth_token=cast.loud)).success:
        raise BenchError("the deaf attack's talker could not log on")
    for peer in members:
        peer.ws.transport.pause_reading()
    answer = await loud.request(
        lambda seq: p.StartStream(CODEC, PACKET_MS, seq=seq, channel=SIDE_ROOM)
    )
    if answer.stream_id is None:
        raise BenchError(f"the deaf attack's talker got no stream: {answer.error}")
    text = p.SendTextMessage(ROOM, TEXT).to_json()
    pacer = Pacer(DEAF_AUDIO_RATE)
    result = crowd.result
    for i in range(round(DEAF_AUDIO_RATE * (crowd.until - crowd.began))):
        await pacer.tick()
        frame = p.AudioPacket(answer.stream_id, 0, BIG_PAYLOAD).encode()
        await loud.send([frame] if i % DEAF_TEXT_EVERY else [frame, text])
        result.offered_bytes += DEAF * (len(frame) + (0 if i % DEAF_TEXT_EVERY else len(text)))
    await loud.request(lambda seq: p.StopStream(answer.stream_id or 0, seq=seq))
    await crowd.hold()
    await crowd.finish()


async def sessions(crowd: Crowd) -> None:
    """One user logs on again and again from one address, holding every session it gets."""
    password = crowd.target.cast.passwords["carol"]
    for _ in range(SESSION_TRIES):
        peer = await crowd.open()
        if not (await peer.logon(username="carol", password=password)).success:
            await crowd.finish([peer])
    await crowd.hold()
    await crowd.finish()


async def pending(crowd: Crowd) -> None:
    """Connections from one address that never log on, 50 a second's worth."""
    await crowd.many(round(PENDING_PER_S * (crowd.until - crowd.began)), lambda _: crowd.open())
    await crowd.hold()
    await crowd.finish()


def forged_frames(stream_id: int) -> list[bytes]:
    """Audio frames that are not the sender's to send: the honest stream's id, a stream nobody
    has, a header too short, a frame of another type."""
    frames = []
    for i in range(FORGED_BURST):
        payload = MARK.pack(FORGED, 0, i, 0) + PADDING
        if i % 4 == 0:
            frames.append(struct.pack(">BII", p.AUDIO_PACKET_TYPE, stream_id + 1000, i) + payload)
        elif i % 4 == 1:
            frames.append(bytes([p.AUDIO_PACKET_TYPE, 0, 0]))
        elif i % 4 == 2:
            frames.append(struct.pack(">BII", 0x7F, stream_id, i) + payload)
        else:
            frames.append(struct.pack(">BII", p.AUDIO_PACKET_TYPE, stream_id, i) + payload)
    return frames


async def forged(crowd: Crowd) -> None:
    """Devices (logged on in alpha) and anonymous clients send audio that is not theirs, are
    kicked, come back, and do it again."""
    cast = crowd.target.cast
    frames = forged_frames(crowd.target.stream_id)

    async def device(n: int) -> Peer:
        peer = await crowd.open()
        if not (await peer.logon(auth_token=cast.forgers[n])).success:
            raise BenchError(f"forger {n} could not log on")
        return peer

    async def forge(peer: Peer) -> None:
        await peer.send(frames)
        await peer.closed()

    while crowd.result.rounds < ROUNDS and not (crowd.result.rounds and crowd.over()):
        peers = await crowd.many(FORGERS, device)
        peers += await crowd.many(FORGERS_ANONYMOUS, lambda _: crowd.open())
        await asyncio.gather(*(forge(peer) for peer in peers))
        await crowd.finish(peers)
        crowd.result.rounds += 1
    await crowd.hold()


async def junk(crowd: Crowd) -> None:
    """Anonymous clients and a logged-on device send junk text frames faster than allowed; and
    a frame too big, and one that is not UTF-8. Kicked, they come back."""
    cast = crowd.target.cast
    sprays = [JUNK[i % len(JUNK)] for i in range(JUNK_BURST)]
    not_utf8 = Frame(Opcode.TEXT, b'{"command": "\xff\xfe"}').serialize(mask=True)

    async def spray(peer: Peer) -> None:
        await peer.send(sprays)
        await peer.closed()

    async def too_big(peer: Peer) -> None:
        await peer.send(["x" * (p.MAX_FRAME + 1)])
        await peer.closed()

    async def bad_text(peer: Peer) -> None:
        peer.ws.transport.write(not_utf8)
        crowd.result.frames += 1
        await peer.closed()

    while crowd.result.rounds < ROUNDS and not (crowd.result.rounds and crowd.over()):
        peers = await crowd.many(JUNK_CLIENTS + 2, lambda _: crowd.open())
        member = await crowd.open()
        if not (await member.logon(auth_token=cast.junk)).success:
            raise BenchError("the junk attack's device could not log on")
        await asyncio.gather(
            *(spray(peer) for peer in [*peers[:JUNK_CLIENTS], member]),
            too_big(peers[-2]),
            bad_text(peers[-1]),
        )
        await crowd.finish([*peers, member])
        crowd.result.rounds += 1
    await crowd.hold()


Attack = Callable[[Crowd], Awaitable[None]]

# name -> (the attack, what it does). Order is the run's order (junk last: its wrong passwords
# block its address for password logons, and without 127.0.N.x every attack shares one).
ATTACKS: Final[dict[str, tuple[Attack, str]]] = {
    "pings": (pings, f"{PINGERS} anonymous clients ping and never read"),
    "deaf": (deaf, f"{DEAF} members never read; 2 KB texts and 8 KiB audio to them"),
    "sessions": (sessions, f"one user logs on {SESSION_TRIES} times"),
    "pending": (pending, "connections from one address never log on"),
    "forged": (forged, "audio under the honest stream's id, or before logon"),
    "junk": (junk, "bad JSON, unknown commands, wrong passwords, oversized, not UTF-8"),
}


async def run_attack(target: Target, name: str, seconds: float) -> AttackResult:
    """Run one attack for ``seconds`` (longer if its bounded work needs it, on a slow machine);
    every connection it opened is closed when it returns."""
    attack = ATTACKS[name][0]
    crowd = Crowd(target, list(ATTACKS).index(name) + 1, seconds)
    try:
        async with asyncio.timeout(seconds + ATTACK_GRACE):
            await attack(crowd)
    finally:
        await crowd.finish(abort=True)
    crowd.result.seconds = round(asyncio.get_running_loop().time() - crowd.began, 2)
    return crowd.result


async def serve_attacks() -> None:
    """The attacker process: a :class:`Target` on the first line of stdin, then one attack per
    line (``{"attack": NAME, "seconds": S}``), each answered by one line of JSON on stdout:
    ``{"result": …}`` or ``{"error": …}``."""

    def readline() -> Awaitable[str]:
        return asyncio.to_thread(sys.stdin.readline)

    target = Target.from_json(await readline())
    print("ready", flush=True)
    while line := await readline():
        command = json.loads(line)
        out: dict[str, Any]
        try:
            result = await run_attack(target, command["attack"], command["seconds"])
            out = {"result": asdict(result)}
        except Exception as exc:
            log.exception("attack %s failed", command["attack"])
            out = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":  # the attacker process (see pttd.bench.hostile.Attacker)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_attacks())
