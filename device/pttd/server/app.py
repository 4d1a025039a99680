"""The reference room server: asyncio websockets, registry in SQLite, floor control, relay.

One :class:`Session` per websocket. Text frames are parsed by :mod:`pttd.protocol`, floor decisions
are made by :mod:`pttd.server.rooms`, credentials are checked by :mod:`pttd.server.registry`
(in a worker thread: the password KDF is slow on purpose). Audio is relayed, never stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import ssl
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from pttd import protocol as p
from pttd.errors import InvalidName, PairingError, ProtocolError, ServerStartError
from pttd.server.registry import Principal, Registry
from pttd.server.rooms import Granted, Room, Stream

log = logging.getLogger(__name__)

CLOSE_POLICY = 1008  # websocket close code: policy violation (floods, revoked credential)
MAX_PACKET_RATE = 250.0  # audio packets/s one client may send: 5x real time at 20 ms (0: no limit)


@dataclass(slots=True)
class ServerSettings:
    """What ``pttd server run`` can be told; the defaults suit a real deployment."""

    host: str = "127.0.0.1"
    port: int = 0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_talk_time: float = 60.0  # seconds a talker may hold the floor
    stream_idle_timeout: float = 5.0  # a stream with no audio for this long is ended
    ping_interval: float = 30.0
    ping_timeout: float = 30.0
    close_timeout: float = 5.0  # a peer that does not finish the closing handshake is cut
    logon_timeout: float = 30.0  # a connection must log on (or pair) within this
    max_text_rate: float = 20.0  # control messages per second per client (burst: 2 s worth)
    max_packet_rate: float = MAX_PACKET_RATE
    max_write_buffer: int = 512 * 1024  # a listener further behind than this is dropped
    auth_failures: int = 5  # failed logons or pairings per address …
    auth_window: float = 60.0  # … within this many seconds, before further tries are refused
    registry_poll: float = 0.5  # seconds between looks for admin changes (revocations)


def server_tls_context(cert: Path, key: Path | None) -> ssl.SSLContext:
    """The TLS context for ``wss://``; :class:`ServerStartError` naming the files when the
    certificate or key cannot be read or do not belong together."""
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        tls.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        why = f" ({exc.reason.lower().replace('_', ' ')})" if exc.reason else ""
        raise ServerStartError(
            f"cannot use certificate {cert} with key {key}: they are not a PEM certificate "
            f"chain and its private key{why}"
        ) from exc
    except OSError as exc:
        raise ServerStartError(
            f"cannot read certificate {cert} or key {key}: {exc.strerror or exc}"
        ) from exc
    return tls


class RateLimiter:
    """A token bucket: ``rate`` per second, bursts of ``burst``; rate 0 means unlimited."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def allow(self, now: float) -> bool:
        if self.rate <= 0:
            return True
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class FailureLog:
    """Failed logons/pairings per client address within a sliding window."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._swept = float("-inf")

    def blocked(self, address: str, now: float) -> bool:
        times = self._failures.get(address)
        if not times:
            return False
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[address]
            return False
        return len(times) >= self.limit

    def record(self, address: str, now: float) -> None:
        if now - self._swept >= self.window:
            # Once a window, forget addresses gone quiet: one try from each of many addresses
            # (an IPv6 prefix has plenty) must not grow this without end.
            self._swept = now
            cutoff = now - self.window
            for quiet in [a for a, times in self._failures.items() if times[-1] <= cutoff]:
                del self._failures[quiet]
        self._failures.setdefault(address, deque()).append(now)


class Session:
    """One client connection, logged on or not."""

    __slots__ = (
        "address",
        "closing",
        "ended_streams",
        "listen_only",
        "packet_limit",
        "principal",
        "rooms",
        "text_limit",
        "ws",
    )

    def __init__(self, ws: ServerConnection, settings: ServerSettings, now: float) -> None:
        self.ws = ws
        peer = ws.remote_address
        self.address: str = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        self.principal: Principal | None = None
        self.rooms: dict[str, Room[Session]] = {}
        self.listen_only = False
        self.text_limit = RateLimiter(settings.max_text_rate, settings.max_text_rate * 2, now)
        self.packet_limit = RateLimiter(settings.max_packet_rate, settings.max_packet_rate, now)
        # Streams of ours that ended under us (timeout, pre-emption): their last packets in flight
        # are dropped quietly instead of answered with errors.
        self.ended_streams: deque[int] = deque(maxlen=8)
        # Being closed by the server (a flood, a revocation): the frames it still
        # has in flight are dropped unread, not each answered, logged and closed again.
        self.closing = False

    @property
    def name(self) -> str:
        return self.principal.name if self.principal else f"<{self.address}>"

    def send(self, message: str) -> None:
        """Queue a text frame without waiting: one slow client never stalls the others."""
        broadcast((self.ws,), message)


class RoomServer:
    """The room server. ``async with RoomServer(registry, settings) as server: server.url``."""

    def __init__(self, registry: Registry, settings: ServerSettings | None = None) -> None:
        self.registry = registry
        self.settings = settings or ServerSettings()
        self.rooms: dict[str, Room[Session]] = {}
        self.sessions: set[Session] = set()
        self.streams: dict[int, Stream[Session]] = {}
        self._stream_ids = itertools.count(1)
        self._message_ids = itertools.count(1)
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._auth_failures = FailureLog(self.settings.auth_failures, self.settings.auth_window)
        self._server: Server | None = None
        self._watcher: asyncio.Task[None] | None = None
        self.packets_relayed = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._handlers: dict[type[Any], Callable[[Session, Any], Any]] = {
            p.Logon: self._on_logon,
            p.StartStream: self._on_start_stream,
            p.StopStream: self._on_stop_stream,
            p.SendTextMessage: self._on_send_text_message,
            p.Pair: self._on_pair,
            p.Unpair: self._on_unpair,
        }

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Listen. :class:`ServerStartError` (one line, naming the cause) when the certificate
        cannot be loaded or the address cannot be listened on."""
        s = self.settings
        tls = None if s.tls_cert is None else server_tls_context(s.tls_cert, s.tls_key)
        try:
            self._server = await serve(
                self._serve_connection,
                s.host,
                s.port,
                ssl=tls,
                max_size=p.MAX_FRAME,
                ping_interval=s.ping_interval,
                ping_timeout=s.ping_timeout,
                close_timeout=s.close_timeout,
                compression=None,
                server_header=None,
            )
        except socket.gaierror as exc:
            raise ServerStartError(f"cannot listen on {s.host!r}: {exc.strerror}") from exc
        except OSError as exc:
            why = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            raise ServerStartError(f"cannot listen on {s.host}:{s.port}: {why}") from exc
        self._watcher = asyncio.create_task(self._watch_registry())
        log.info("listening on %s", self.url)

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        port: int = next(iter(self._server.sockets)).getsockname()[1]
        return port

    @property
    def url(self) -> str:
        scheme = "wss" if self.settings.tls_cert else "ws"
        host = self.settings.host
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{self.port}"

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        for stream in list(self.streams.values()):
            self._end_stream(stream, reason=None)
        if self._server is not None:
            self._server.close()  # closes every connection with 1001 (going away)
            await self._server.wait_closed()

    async def __aenter__(self) -> RoomServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ connections

    async def _serve_connection(self, ws: ServerConnection) -> None:
        loop = asyncio.get_running_loop()
        session = Session(ws, self.settings, loop.time())
        self.sessions.add(session)
        deadline = loop.call_later(self.settings.logon_timeout, self._logon_deadline, session)
        try:
            async for frame in ws:
                if session.closing:
                    continue
                if isinstance(frame, str):
                    await self._on_text(session, frame)
                else:
                    self._on_binary(session, frame)
        except ConnectionClosed:
            pass
        finally:
            deadline.cancel()
            self._drop(session)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in the background, holding a reference until it is done."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _logon_deadline(self, session: Session) -> None:
        if session.principal is None:
            log.info(
                "closing %s: no logon within %.0f s", session.name, self.settings.logon_timeout
            )
            self._spawn(session.ws.close(CLOSE_POLICY, "logon timeout"))

    def _drop(self, session: Session) -> None:
        if session not in self.sessions:
            return
        self.sessions.discard(session)
        for room in session.rooms.values():
            ended = room.leave(session)
            if ended is not None:
                self._end_stream(ended, p.REASON_DISCONNECTED, notify_talker=False)
            self._announce_status(room)
        session.rooms.clear()
        if session.principal is not None:
            log.info("%s disconnected", session.name)

    def _kick(self, session: Session, error: str, why: str) -> None:
        if session.closing:
            return
        session.closing = True
        session.send(p.OnError(error).to_json())
        self._spawn(session.ws.close(CLOSE_POLICY, why))

    # ------------------------------------------------------------------ text frames

    async def _on_text(self, session: Session, frame: str) -> None:
        loop = asyncio.get_running_loop()
        if not session.text_limit.allow(loop.time()):
            log.warning("closing %s: control message flood", session.name)
            self._kick(session, p.INVALID_REQUEST, "flood")
            return
        try:
            message = p.parse_client_message(frame)
            if session.principal is None and not isinstance(message, p.Logon | p.Pair):
                raise ProtocolError(p.NOT_LOGGED_IN, message.COMMAND, message.seq)
            result = self._handlers[type(message)](session, message)
            if asyncio.iscoroutine(result):
                await result
        except ProtocolError as exc:
            log.info("refused from %s: %s", session.name, exc)
            session.send(p.error_response(exc))
        except Exception:
            log.exception("internal error serving %s", session.name)
            session.send(p.OnError(p.INTERNAL_SERVER_ERROR).to_json())

    def _answer(self, session: Session, response: p.Response | None) -> None:
        if response is not None:
            session.send(response.to_json())

    # logon ---------------------------------------------------------------

    async def _on_logon(self, session: Session, m: p.Logon) -> None:
        if session.principal is not None:
            raise ProtocolError(p.INVALID_REQUEST, "already logged on", m.seq)
        loop = asyncio.get_running_loop()
        # A blocked address gets no password checked. A token (256 random bits, nothing to
        # guess) still logs on from it: someone guessing passwords from a site's shared address
        # (a NAT, a carrier's CGNAT) must not lock the site's radios out.
        blocked = self._auth_failures.blocked(session.address, loop.time())
        principal = (
            None
            if blocked and m.password is not None
            else await asyncio.to_thread(self._authenticate, m)
        )
        if principal is None and blocked:
            log.warning("logon from %s refused: too many failed attempts", session.address)
            if m.seq is not None:  # a reason, so a device does not take it for a revocation
                session.send(
                    p.Response(
                        m.seq, error=p.NOT_AUTHORIZED, reason=p.REASON_RATE_LIMITED
                    ).to_json()
                )
            return
        if principal is None:
            self._auth_failures.record(session.address, loop.time())
            raise ProtocolError(p.NOT_AUTHORIZED, "bad credentials", m.seq)
        if session.principal is not None or session.ws.state is not State.OPEN:
            return  # a second logon raced this one, or the client left meanwhile
        not_allowed = [r for r in m.channels if r not in principal.rooms]
        if not_allowed:
            raise ProtocolError(p.NOT_AUTHORIZED, f"rooms {not_allowed}", m.seq)
        if principal.kind == "device":
            # A device that reconnects replaces its old, possibly half-dead, connection.
            for other in [s for s in self.sessions if s.principal == principal]:
                log.info("%s logged on again; closing its older connection", principal.name)
                self._drop(other)
                self._spawn(other.ws.close(1000, "replaced by a new logon"))
        refresh = await asyncio.to_thread(self.registry.issue_refresh_token, principal)
        session.principal = principal
        session.listen_only = m.listen_only
        log.info(
            "%s %s logged on from %s to %s%s",
            principal.kind,
            principal.name,
            session.address,
            ", ".join(m.channels),
            " (listen only)" if m.listen_only else "",
        )
        if m.seq is not None:
            session.send(p.Response(seq=m.seq, refresh_token=refresh).to_json())
        for name in m.channels:
            room = self.rooms.get(name)
            if room is None:
                room = self.rooms[name] = Room(name)
            room.join(session)
            session.rooms[name] = room
            self._announce_status(room)
            stream = room.stream
            if stream is not None:  # late entry: hear the talk already going on
                session.send(self._stream_start(stream).to_json())

    def _authenticate(self, m: p.Logon) -> Principal | None:
        """Runs in a worker thread. Channel-API clients always send an ``auth_token``; one the
        server does not know is ignored when a username and password come with it."""
        reg = self.registry
        if m.refresh_token is not None:
            principal = reg.check_refresh_token(m.refresh_token)
            if principal is not None:
                return principal
        if m.auth_token is not None:
            principal = reg.check_device_token(m.auth_token)
            if principal is not None:
                return principal
        if m.username is not None and m.password is not None:
            return reg.check_password(m.username, m.password)
        return None

    def _announce_status(self, room: Room[Session]) -> None:
        status = p.OnChannelStatus(room.name, "online", room.users_online).to_json()
        broadcast([s.ws for s in room.members], status)

    # floor ---------------------------------------------------------------

    def _stream_start(self, stream: Stream[Session]) -> p.OnStreamStart:
        return p.OnStreamStart(
            stream_id=stream.stream_id,
            channel=stream.room.name,
            from_=stream.talker_name,
            codec_header=stream.codec_header,
            packet_duration=stream.packet_duration,
            priority=stream.priority,
        )

    def _room_for(self, session: Session, channel: str | None, seq: int | None) -> Room[Session]:
        if channel is None:
            if len(session.rooms) != 1:
                raise ProtocolError(p.NOT_ENOUGH_PARAMS, "channel", seq)
            return next(iter(session.rooms.values()))
        room = session.rooms.get(channel)
        if room is None:
            raise ProtocolError(p.NOT_AUTHORIZED, f"not in room {channel!r}", seq)
        return room

    def _on_start_stream(self, session: Session, m: p.StartStream) -> None:
        if session.listen_only:
            raise ProtocolError(p.LISTEN_ONLY_CONNECTION, "start_stream", m.seq)
        room = self._room_for(session, m.channel, m.seq)
        loop = asyncio.get_running_loop()
        outcome = room.request_floor(
            session,
            session.name,
            next(self._stream_ids),
            m.codec_header,
            m.packet_duration,
            m.priority,
            loop.time(),
        )
        if not isinstance(outcome, Granted):
            log.info("floor of %s refused to %s: %s", room.name, session.name, outcome.reason)
            if m.seq is not None:
                session.send(
                    p.Response(
                        seq=m.seq,
                        error=p.FAILED_TO_START_STREAM,
                        reason=outcome.reason,
                        talker=outcome.talker,
                    ).to_json()
                )
            return
        if outcome.preempted is not None:
            self._end_stream(outcome.preempted, p.REASON_PREEMPTED)
        stream = outcome.stream
        self.streams[stream.stream_id] = stream
        self._timers[stream.stream_id] = loop.call_later(
            self.settings.max_talk_time, self._end_stream, stream, p.REASON_TIMEOUT
        )
        log.info("%s has the floor of %s (stream %d)", session.name, room.name, stream.stream_id)
        if m.seq is not None:
            session.send(p.Response(seq=m.seq, stream_id=stream.stream_id).to_json())
        broadcast([s.ws for s in stream.recipients], self._stream_start(stream).to_json())

    def _end_stream(
        self, stream: Stream[Session], reason: str | None, *, notify_talker: bool = True
    ) -> None:
        """End a stream for everyone. Without a reason it is the talker's own stop."""
        stream.room.release_floor(stream)
        if self.streams.pop(stream.stream_id, None) is None:
            return
        timer = self._timers.pop(stream.stream_id, None)
        if timer is not None:
            timer.cancel()
        stop = p.OnStreamStop(stream.stream_id, stream.room.name, reason).to_json()
        to = [s.ws for s in stream.room.members if s is not stream.talker]
        if reason is not None and notify_talker:
            to.append(stream.talker.ws)
            stream.talker.ended_streams.append(stream.stream_id)
        broadcast(to, stop)
        log.info(
            "stream %d of %s in %s ended (%s) after %d packets",
            stream.stream_id,
            stream.talker_name,
            stream.room.name,
            reason or "stopped",
            stream.next_packet_id,
        )

    def _on_stop_stream(self, session: Session, m: p.StopStream) -> None:
        stream = self.streams.get(m.stream_id)
        if stream is not None and stream.talker is session:
            self._end_stream(stream, None)
        elif m.stream_id not in session.ended_streams:  # else: the server ended it already
            raise ProtocolError(p.FAILED_TO_STOP_STREAM, f"stream {m.stream_id}", m.seq)
        if m.seq is not None:
            session.send(p.Response(seq=m.seq).to_json())

    # text, pairing -------------------------------------------------------

    def _on_send_text_message(self, session: Session, m: p.SendTextMessage) -> None:
        if session.listen_only:
            raise ProtocolError(p.LISTEN_ONLY_CONNECTION, "send_text_message", m.seq)
        room = self._room_for(session, m.channel, m.seq)
        event = p.OnTextMessage(room.name, session.name, m.text, next(self._message_ids))
        to: Iterable[Session] = (
            s
            for s in room.members
            if s is not session and (m.for_ is None or (s.principal and s.principal.name == m.for_))
        )
        broadcast([s.ws for s in to], event.to_json())
        if m.seq is not None:
            session.send(p.Response(seq=m.seq).to_json())

    async def _on_pair(self, session: Session, m: p.Pair) -> None:
        loop = asyncio.get_running_loop()
        if self._auth_failures.blocked(session.address, loop.time()):
            log.warning("pairing from %s refused: too many failed attempts", session.address)
            self._answer_pair_error(session, m, p.REASON_RATE_LIMITED)
            return
        try:
            pairing = await asyncio.to_thread(self.registry.redeem_pair_code, m.code, m.device_name)
        except InvalidName as exc:
            raise ProtocolError(p.INVALID_REQUEST, str(exc), m.seq) from exc
        except PairingError as exc:
            self._auth_failures.record(session.address, loop.time())
            log.info("pairing from %s refused: %s", session.address, exc.reason)
            self._answer_pair_error(session, m, exc.reason)
            return
        log.info("device %s paired from %s", pairing.device_name, session.address)
        if m.seq is not None:
            session.send(
                p.Response(
                    seq=m.seq,
                    auth_token=pairing.auth_token,
                    channels=pairing.rooms,
                    device_name=pairing.device_name,
                ).to_json()
            )

    def _answer_pair_error(self, session: Session, m: p.Pair, reason: str) -> None:
        if m.seq is not None:
            session.send(p.Response(seq=m.seq, error=p.NOT_AUTHORIZED, reason=reason).to_json())

    async def _on_unpair(self, session: Session, m: p.Unpair) -> None:
        principal = session.principal
        if principal is None or principal.kind != "device":
            raise ProtocolError(p.INVALID_REQUEST, "only a paired device can unpair", m.seq)
        await asyncio.to_thread(self.registry.unpair_device, principal.name)
        log.info("device %s unpaired itself", principal.name)
        if m.seq is not None:
            session.send(p.Response(seq=m.seq).to_json())
        self._drop(session)
        await session.ws.close(1000, "unpaired")

    # ------------------------------------------------------------------ audio (the hot path)

    def _on_binary(self, session: Session, frame: bytes) -> None:
        now = asyncio.get_running_loop().time()
        if not session.packet_limit.allow(now):
            log.warning("closing %s: audio packet flood", session.name)
            self._kick(session, p.FAILED_TO_SEND_DATA, "flood")
            return
        try:
            if session.principal is None:
                raise ProtocolError(p.NOT_LOGGED_IN, "audio before logon")
            stream = self.streams.get(p.audio_stream_id(frame))
            if stream is None or stream.talker is not session:
                stream_id = p.audio_stream_id(frame)
                if stream_id in session.ended_streams:
                    return  # in flight when the server ended it
                raise ProtocolError(p.INVALID_AUDIO_PACKET, f"stream {stream_id} is not yours")
        except ProtocolError as exc:
            log.info("refused packet from %s: %s", session.name, exc)
            session.send(p.error_response(exc))
            return
        packet_id = stream.take_packet_id()
        stream.last_packet = now
        broadcast(
            [s.ws for s in stream.recipients]
            if packet_id % 25
            else self._fast_enough(stream.recipients),
            p.renumber_audio_packet(frame, packet_id),
        )
        self.packets_relayed += 1

    def _fast_enough(self, listeners: list[Session]) -> list[ServerConnection]:
        """Listeners whose write buffer keeps up; the others are dropped as dead peers.

        Checked every 25th packet (half a second at 20 ms): a listener that far behind is gone.
        """
        out = []
        limit = self.settings.max_write_buffer
        for s in listeners:
            transport = s.ws.transport
            if transport is not None and transport.get_write_buffer_size() > limit:
                log.warning(
                    "dropping %s: %d bytes behind", s.name, transport.get_write_buffer_size()
                )
                self._drop(s)
                transport.abort()
            else:
                out.append(s.ws)
        return out

    # ------------------------------------------------------------------ admin changes

    def _end_idle_streams(self, now: float) -> None:
        """A talker whose packets stopped (a dead link the pings have not caught yet, a client
        that forgot stop_stream) must not hold the floor until the talk time runs out."""
        limit = self.settings.stream_idle_timeout
        for stream in [s for s in self.streams.values() if now - s.last_packet > limit]:
            log.warning(
                "stream %d of %s: no audio for %.0f s", stream.stream_id, stream.talker_name, limit
            )
            self._end_stream(stream, p.REASON_IDLE)

    async def _watch_registry(self) -> None:
        """Housekeeping: end idle streams, and notice what admin commands (other processes)
        changed — revoked devices go at once."""
        version = await asyncio.to_thread(self.registry.data_version)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.settings.registry_poll)
            self._end_idle_streams(loop.time())
            now_version = await asyncio.to_thread(self.registry.data_version)
            if now_version == version:
                continue
            version = now_version
            revoked = await asyncio.to_thread(self.registry.revoked_devices)
            for s in list(self.sessions):
                if s.principal and s.principal.kind == "device" and s.principal.name in revoked:
                    log.warning("device %s revoked: disconnecting it", s.principal.name)
                    self._drop(s)
                    self._kick(s, p.NOT_AUTHORIZED, "revoked")


async def run_server(
    registry: Registry, settings: ServerSettings, ready: Callable[[str], None] | None = None
) -> None:
    """Serve until cancelled (SIGINT/SIGTERM in the CLI)."""
    async with RoomServer(registry, settings) as server:
        if ready is not None:
            ready(server.url)
        await asyncio.Future()  # until cancelled
