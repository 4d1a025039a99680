"""The reference room server: asyncio websockets around the sans-I/O connection rules.

Every decision about a connection is made by :class:`pttd.server.session.ServerCore`; this module
only moves frames between the sockets and the core, runs the core's one timer, and calls the
registry (in a worker thread: the password KDF is slow on purpose). Audio is relayed, never
stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import socket
import ssl
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, TypeAlias

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

from pttd.errors import InvalidName, NotFound, PairingError, ServerStartError
from pttd.server.registry import Registry
from pttd.server.session import (
    MAX_PACKET_RATE,
    CheckLogon,
    Close,
    CoreSettings,
    IssueRefreshToken,
    LocalRooms,
    Pairing,
    PairRefused,
    Principal,
    RedeemCode,
    RoomPresence,
    Send,
    ServerCore,
    UnpairDevice,
)
from pttd.server.web import WebConsole
from pttd.wire import messages as p

log = logging.getLogger(__name__)

FD_RESERVE = 64  # file descriptors kept free of connections: SQLite, logs, the listening socket

__all__ = ["MAX_PACKET_RATE", "RoomServer", "ServerSettings", "run_server", "server_tls_context"]

Action: TypeAlias = (
    Send[ServerConnection]
    | Close[ServerConnection]
    | CheckLogon[ServerConnection]
    | IssueRefreshToken[ServerConnection]
    | RedeemCode[ServerConnection]
    | UnpairDevice[ServerConnection]
)
RegistryCall: TypeAlias = (
    CheckLogon[ServerConnection]
    | IssueRefreshToken[ServerConnection]
    | RedeemCode[ServerConnection]
    | UnpairDevice[ServerConnection]
)


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
    max_connections: int = 10_000  # in all; held below the process's file-descriptor limit
    max_pending_per_address: int = 16  # connections not logged on yet, from one address
    max_sessions_per_principal: int = 8  # logged-on connections of one user at once
    # Password checks (scrypt: 16 MiB and tens of milliseconds each) at once, in threads of their
    # own: each thread that runs one keeps its 16 MiB afterwards (the C allocator's arena), and
    # checks without a bound would take every core from the relay.
    password_checks: int = 1
    log_burst: int = 10  # log lines of one kind per log_window, then counted
    log_window: float = 10.0
    web_port: int | None = None  # the web console's TCP port (0: the OS picks; None: none)
    key_file: Path | None = None  # the key authority's file, for the web console's approvals
    web_test_tap: bool = False  # tests and benches: the page may record what it plays (?tap=1)

    def core(self) -> CoreSettings:
        """The numbers the connection rules use (the fields both have, by name), with
        ``max_connections`` held :data:`FD_RESERVE` below the file-descriptor limit, so that
        the server sheds connections before accept() runs out of descriptors."""
        values = {f.name: getattr(self, f.name) for f in fields(CoreSettings)}
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY:
            values["max_connections"] = max(1, min(self.max_connections, soft - FD_RESERVE))
        return CoreSettings(**values)


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


def _open(ws: ServerConnection) -> bool:
    """Not closing: a frame written to it would go out (one written to a closed transport only
    makes asyncio log a line)."""
    return ws.transport is not None and not ws.transport.is_closing()


def _backlog(ws: ServerConnection) -> int:
    """Bytes waiting to go to ``ws`` in this process."""
    return ws.transport.get_write_buffer_size()


class _Connection(ServerConnection):
    """A websockets server connection that a peer cannot make hold its replies without bound.

    websockets answers pings (and closes) by itself, below the frames :class:`RoomServer` sees;
    a peer that sends pings and never reads would grow its backlog unseen. After every chunk of
    input, a backlog over ``max_backlog`` cuts the connection, in a line that the core's log
    throttle counts with the other slow readers' (one line per cut would let a client that
    connects, pings and goes again write the log)."""

    max_backlog = 512 * 1024
    core: ServerCore[ServerConnection]  # set on the subclass that RoomServer.start makes
    # What a peer may send: before it logs on, a logon or a pairing (a few hundred bytes; the
    # handshake too), at most this much in all …
    max_input_before_logon = 64 * 1024
    # … and after, this many bytes a second (bursts of four seconds' worth; 0: no limit): the
    # packet limit's worth of the largest frames. Checked before websockets parses the input, so
    # a flood of pings is cut before thousands of them are answered ahead of the honest audio.
    input_rate = int(MAX_PACKET_RATE * p.MAX_BINARY_FRAME)
    _received = 0
    _allowance = 4.0 * input_rate
    _stamp = 0.0

    def data_received(self, data: bytes) -> None:
        if self._too_much(len(data)):
            self.transport.abort()
            return
        super().data_received(data)
        if self.transport.get_write_buffer_size() > self.max_backlog:
            self.core.note(
                logging.WARNING,
                "behind",
                "dropping %s: replies to it not read",
                self.remote_address[0],
            )
            self.transport.abort()

    def _too_much(self, size: int) -> bool:
        self._received += size
        session = self.core.sessions.get(self)
        if session is None or session.principal is None:
            if self._received <= self.max_input_before_logon:
                return False
            why = f"{self._received} bytes without logging on"
        else:
            if self.input_rate <= 0:
                return False
            now = self.loop.time()
            self._allowance = min(
                4.0 * self.input_rate, self._allowance + (now - self._stamp) * self.input_rate
            )
            self._stamp = now
            self._allowance -= size
            if self._allowance >= 0:
                return False
            why = "more input than any client sends"
        self.core.note(
            logging.WARNING, "input flood", "cutting %s: %s", self.remote_address[0], why
        )
        return True


class RoomServer:
    """The room server. ``async with RoomServer(registry, settings) as server: server.url``."""

    def __init__(self, registry: Registry, settings: ServerSettings | None = None) -> None:
        self.registry = registry
        self.settings = settings or ServerSettings()
        self.core: ServerCore[ServerConnection] = ServerCore(
            self.settings.core(), LocalRooms[ServerConnection]()
        )
        self._server: Server | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._kdf = ThreadPoolExecutor(self.settings.password_checks, "pttd-password-check")
        self.web: WebConsole | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Listen. :class:`ServerStartError` (one line, naming the cause) when the certificate
        cannot be loaded or the address cannot be listened on."""
        s = self.settings
        tls = None if s.tls_cert is None else server_tls_context(s.tls_cert, s.tls_key)
        connection = type(
            "Connection",
            (_Connection,),
            {
                "max_backlog": s.max_write_buffer,
                "core": self.core,
                # the packet limit's worth of the largest frames (0: no limit)
                "input_rate": int(s.max_packet_rate * p.MAX_BINARY_FRAME),
                "_allowance": 4.0 * s.max_packet_rate * p.MAX_BINARY_FRAME,
            },
        )
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
                create_connection=connection,
            )
        except socket.gaierror as exc:
            raise ServerStartError(f"cannot listen on {s.host!r}: {exc.strerror}") from exc
        except OSError as exc:
            why = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            raise ServerStartError(f"cannot listen on {s.host}:{s.port}: {why}") from exc
        self._watcher = asyncio.create_task(self._watch_registry())
        log.info("listening on %s", self.url)
        if s.web_port is not None:
            self.web = WebConsole(
                self,
                s.host,
                s.web_port,
                tls,
                key_file=s.key_file,
                test_tap=s.web_test_tap,
                login_failures=s.auth_failures,  # the rooms' limits on failed logons, the same
                login_window=s.auth_window,
            )
            try:
                await self.web.start()
            except ServerStartError:
                await self.close()
                raise

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

    @property
    def web_url(self) -> str | None:
        """The web console's address (None when the server serves none)."""
        return None if self.web is None else self.web.url

    @property
    def kdf(self) -> ThreadPoolExecutor:
        """Where password checks run (``password_checks`` at once)."""
        return self._kdf

    def presence(self) -> dict[str, RoomPresence]:
        return self.core.presence()

    @property
    def packets_relayed(self) -> int:
        return self.core.packets_relayed

    async def close(self) -> None:
        if self.web is not None:
            await self.web.close()
            self.web = None
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        if self._timer is not None:
            self._timer.cancel()
        self._apply(self.core.shutdown())
        if self._server is not None:
            self._server.close()  # closes every connection with 1001 (going away)
            await self._server.wait_closed()
        self._kdf.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> RoomServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ moving frames

    async def _serve_connection(self, ws: ServerConnection) -> None:
        core = self.core
        loop = asyncio.get_running_loop()
        peer = ws.remote_address
        address = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        self._apply(core.connected(ws, address, loop.time()))
        self._rearm()
        try:
            async for frame in ws:
                if isinstance(frame, str):
                    call = self._apply(core.text(ws, frame, loop.time()))
                    while call is not None:  # the connection's next frame waits for the registry
                        call = self._apply(await self._ask_registry(call))
                    self._rearm()
                else:
                    self._apply(core.binary(ws, frame, loop.time()))
        except ConnectionClosed:
            pass
        finally:
            self._apply(core.disconnected(ws))

    def _apply(self, actions: list[Action]) -> RegistryCall | None:
        """Carry out sends and closes in order; a registry call (always last) is returned."""
        for action in actions:
            if isinstance(action, Send):
                broadcast(self._keeping_up(action.to), action.data)
            elif isinstance(action, Close):
                self._spawn(action.conn.close(action.code, action.reason))
            else:
                return action
        return None

    def _keeping_up(self, receivers: Sequence[ServerConnection]) -> list[ServerConnection]:
        """Receivers whose send backlog is within ``max_write_buffer``; the others are dropped.

        Every outgoing frame (audio, text, events, answers; pongs: see :class:`_Connection`) goes
        to a connection only while it reads: one that stops reading holds at most this much of the
        server's memory, then it is cut (the core is told it is gone).

        The list is made after the drops: each drop tells the room, and that can drop others
        (members that stopped reading together cross the bound together), among them some that
        were keeping up a moment before. None that is cut is written to again."""
        limit = self.settings.max_write_buffer
        for ws in [ws for ws in receivers if _open(ws) and _backlog(ws) > limit]:
            if _open(ws):  # not dropped by an earlier drop's news
                self._drop_behind(ws)
        return [ws for ws in receivers if _open(ws)]

    def _drop_behind(self, ws: ServerConnection) -> None:
        transport = ws.transport
        session = self.core.sessions.get(ws)
        self.core.note(
            logging.WARNING,
            "behind",
            "dropping %s: %d bytes behind",
            session or "a connection",
            transport.get_write_buffer_size(),
        )
        self._apply(self.core.disconnected(ws))
        transport.abort()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in the background, holding a reference until it is done."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ the core's timer

    def _rearm(self) -> None:
        """Make sure the timer fires by the core's next deadline."""
        deadline = self.core.next_deadline
        if deadline is None or (self._timer_at is not None and self._timer_at <= deadline):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = asyncio.get_running_loop().call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        self._apply(self.core.tick(asyncio.get_running_loop().time()))
        self._rearm()

    # ------------------------------------------------------------------ the registry

    async def _ask_registry(self, call: RegistryCall) -> list[Action]:
        core, now = self.core, asyncio.get_running_loop().time
        if isinstance(call, CheckLogon):
            m = call.logon
            if call.password_allowed and m.username is not None and m.password is not None:
                # The KDF may run: in its own threads, ``password_checks`` at once (the others
                # wait their turn; tokens and refresh tokens do not wait for them).
                principal = await asyncio.get_running_loop().run_in_executor(
                    self._kdf, self._authenticate, m, True
                )
            else:
                principal = await asyncio.to_thread(self._authenticate, m, False)
            return core.logon_checked(call.conn, m, principal, now())
        if isinstance(call, IssueRefreshToken):
            try:
                token = await asyncio.to_thread(self.registry.issue_refresh_token, call.principal)
            except NotFound:  # removed or revoked since its credentials were checked
                token = None
            return core.refresh_issued(call.conn, call.logon, call.principal, token)
        if isinstance(call, RedeemCode):
            result: Pairing | PairRefused
            try:
                result = await asyncio.to_thread(
                    self.registry.redeem_pair_code, call.pair.code, call.pair.device_name
                )
            except InvalidName as exc:
                result = PairRefused(None, str(exc))
            except PairingError as exc:
                result = PairRefused(exc.reason)
            return core.pair_done(call.conn, call.pair, result, now())
        with contextlib.suppress(NotFound):  # an admin removed it meanwhile: gone all the same
            await asyncio.to_thread(self.registry.unpair_device, call.device)
        return core.unpair_done(call.conn, call.unpair)

    def _authenticate(self, m: p.Logon, password_allowed: bool) -> Principal | None:
        """Runs in a worker thread. Channel-API clients always send an ``auth_token``; one the
        server does not know is ignored when a username and password come with it. The identity
        key a client logs on with is kept for the key authority to approve (or not)."""
        principal = self._credentials(m, password_allowed)
        if principal is not None and m.identity_key is not None:
            with contextlib.suppress(NotFound):  # removed meanwhile: the logon fails later
                if self.registry.set_identity_key(principal.kind, principal.name, m.identity_key):
                    # A changed key: the room keys sealed for the earlier one went with it.
                    fresh = self.registry.current([principal]).get(principal)
                    if fresh is not None:
                        principal = replace(principal, room_keys=fresh.room_keys)
        return principal

    def _credentials(self, m: p.Logon, password_allowed: bool) -> Principal | None:
        reg = self.registry
        if m.refresh_token is not None:
            principal = reg.check_refresh_token(m.refresh_token)
            if principal is not None:
                return principal
        if m.auth_token is not None:
            principal = reg.check_device_token(m.auth_token)
            if principal is not None:
                return principal
        if password_allowed and m.username is not None and m.password is not None:
            return reg.check_password(m.username, m.password)
        return None

    async def _watch_registry(self) -> None:
        """Notice what admin commands (other processes) changed: a revoked credential's
        connections go at once, and a connection leaves rooms it may no longer be in."""
        version = await asyncio.to_thread(self.registry.data_version)
        while True:
            await asyncio.sleep(self.settings.registry_poll)
            now_version = await asyncio.to_thread(self.registry.data_version)
            if now_version == version:
                continue
            version = now_version
            await self.registry_changed()

    async def registry_changed(self) -> None:
        """Apply what the registry says of the logged-on principals now. The watcher calls it
        when another process wrote; a writer in this process (the web console) calls it itself,
        since SQLite's data version moves only for writes made through other connections."""
        live = self.core.live_principals()
        current = await asyncio.to_thread(self.registry.current, live)
        self._apply(self.core.principals_changed(current))


async def run_server(
    registry: Registry,
    settings: ServerSettings,
    ready: Callable[[RoomServer], None] | None = None,
) -> None:
    """Serve until cancelled (SIGINT/SIGTERM in the CLI); ``ready`` is called once listening."""
    async with RoomServer(registry, settings) as server:
        if ready is not None:
            ready(server)
        await asyncio.Future()  # until cancelled
