"""The web console: one page for dispatchers and admins, served by the room server's process.

An aiohttp application (HTTP routing, JSON, cookies, server-sent events) on a port of its own
(``pttd server run --web-port``), same host and same TLS context as the rooms' websocket
endpoint. It serves the static page shipped in the package (``pttd/web``: ES modules, nothing
fetched from anywhere else) and a small JSON API:

* log in with a user's name and password (the CLI sets them); the session is a random token in a
  cookie that is ``HttpOnly; Secure; SameSite=Strict``, kept in this process's memory only (a
  restart logs everybody out); failed logins are limited per address and per user name;
* every request that changes something carries the session's CSRF token in ``X-CSRF-Token`` and,
  when the browser sends one, an ``Origin`` equal to the page's own;
* a logged-on page asks for a *ticket*: a refresh token valid for a minute, which it logs on to
  the rooms' websocket with, as a Channel-API client (the page talks and listens over the same
  protocol and rules as a radio; the next refresh token comes in the logon's answer);
* ``/api/events``: server-sent events with who is online and who talks in the user's rooms (and,
  for admins, the devices), sent when it changes;
* admins (``pttd server user add NAME --admin``) manage rooms, users, devices (revoke), one-time
  pairing codes with their QR code, and, when the server runs with the key authority's file
  (``--key-file``), key approvals and rotation. Other users see only their rooms.

Nothing here keeps audio, and nothing secret is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import io
import json
import logging
import secrets
import ssl
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

from aiohttp import web

from pttd.e2ee.authority import Authority
from pttd.e2ee.keys import AuthorityPublicKey, IdentityPublicKey, KeyFormatError
from pttd.errors import AlreadyExists, InvalidArgument, NotFound, PttdError, ServerStartError
from pttd.ratelimit import FailureLog
from pttd.server import keys as authority_commands
from pttd.server.registry import DeviceInfo, Registry, UserInfo
from pttd.server.session import Principal, RoomPresence

if TYPE_CHECKING:
    from concurrent.futures import Executor

log = logging.getLogger(__name__)

WEB_ROOT: Final = Path(__file__).resolve().parent.parent / "web"
COOKIE: Final = "pttd_session"
CSRF_HEADER: Final = "X-CSRF-Token"
TICKET_TTL: Final = 60.0  # seconds a ticket (refresh token) stays good for the first logon
SESSION_IDLE: Final = 8 * 3600.0  # a session unused this long is gone …
SESSION_MAX_AGE: Final = 24 * 3600.0  # … and every session after this long
MAX_SESSIONS: Final = 10_000  # in all; the least recently used goes first
MAX_SESSIONS_PER_USER: Final = 16  # browsers logged in as one user at once
MAX_STREAMS_PER_SESSION: Final = 4  # event streams one session holds open (tabs)
MAX_STREAMS: Final = 1_000  # event streams in all
NAME_FAILURES_FACTOR: Final = 4
EVENTS_PERIOD: Final = 0.2  # seconds between looks for changes the events stream tells
EVENTS_KEEPALIVE: Final = 15.0  # a comment line this often keeps proxies from cutting the stream
MAX_BODY: Final = 64 * 1024
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' {rooms}; media-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)


def pairing_link(code: str, server: str, authority: str | None = None) -> str:
    """The ``pttd://pair?…`` link a device console accepts (the QR code holds it); with the
    room key authority's public key when the server has one, so that the device learns it from
    what the installer carries."""
    query = {"server": server, "code": code} | ({"authority": authority} if authority else {})
    return "pttd://pair?" + urllib.parse.urlencode(query)


class WebError(Exception):
    """An answer other than 2xx, with one line for the page."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = dict(headers or {})


@dataclass(slots=True)
class WebSession:
    """A logged-in browser. The token is the cookie's value; only its hash is kept."""

    user: str
    credential: str  # the user's (UserInfo.credential) at login: a new password ends it
    csrf: str
    created: float
    used: float
    streams: int = 0  # event streams open


@dataclass(slots=True)
class Who:
    """The user of a request as the registry has them now."""

    session: WebSession
    info: UserInfo
    encrypted: frozenset[str]

    @property
    def rooms(self) -> tuple[str, ...]:
        return self.info.rooms


@dataclass(slots=True)
class _World:
    """What the events stream tells, as of the last look."""

    version: int = -1
    devices: list[DeviceInfo] = field(default_factory=list)
    encrypted: frozenset[str] = frozenset()
    presence: dict[str, RoomPresence] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class RoomsView(Protocol):
    """What the web console needs of the running room server (``RoomServer`` has it): its
    registry, the executor password checks run in, who is where, and its websocket address."""

    @property
    def registry(self) -> Registry: ...

    @property
    def kdf(self) -> Executor: ...

    @property
    def url(self) -> str: ...

    def presence(self) -> dict[str, RoomPresence]: ...

    async def registry_changed(self) -> None: ...


class WebConsole:
    """The web console of one room server; ``await start()`` … ``await close()``."""

    def __init__(
        self,
        rooms: RoomsView,
        host: str,
        port: int,
        tls: ssl.SSLContext | None,
        *,
        key_file: Path | None = None,
        test_tap: bool = False,
        web_root: Path = WEB_ROOT,
        login_failures: int,
        login_window: float,
    ) -> None:
        self.rooms = rooms
        self.registry = rooms.registry
        self.host = host
        self.port_wanted = port
        self.tls = tls
        self.key_file = key_file
        self.web_root = web_root
        self.test_tap = test_tap
        self.sessions: dict[str, WebSession] = {}
        self.failures_by_address = FailureLog(login_failures, login_window)
        # Per name, across addresses: a guesser with many addresses is held too. Larger than the
        # address's, so that someone else's typos do not lock a user out at once (a sustained
        # attack on a name still does, while it lasts: the price of stopping it).
        self.failures_by_name = FailureLog(login_failures * NAME_FAILURES_FACTOR, login_window)
        self._authority_lock = asyncio.Lock()  # one change of the key file at a time
        self.streams = 0
        self.login_window = login_window
        self.world = _World()
        self._runner: web.AppRunner | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._closing = False
        self.app = self._make_app()

    # ------------------------------------------------------------------ lifecycle

    def _make_app(self) -> web.Application:
        app = web.Application(
            client_max_size=MAX_BODY, middlewares=[self._headers, self._errors, self._csrf]
        )
        r = app.router
        r.add_get("/", self.index)
        if self.web_root.is_dir():
            r.add_static("/static/", self.web_root, follow_symlinks=False)
        r.add_get("/api/config", self.config)
        r.add_post("/api/login", self.login)
        r.add_get("/api/session", self.session_info)
        r.add_post("/api/logout", self.logout)
        r.add_post("/api/ticket", self.ticket)
        r.add_get("/api/events", self.events)
        r.add_get("/api/admin/rooms", self.admin_rooms)
        r.add_post("/api/admin/rooms", self.admin_add_room)
        r.add_delete("/api/admin/rooms/{name}", self.admin_remove_room)
        r.add_post("/api/admin/rooms/{name}/encrypt", self.admin_encrypt_room)
        r.add_get("/api/admin/users", self.admin_users)
        r.add_post("/api/admin/users", self.admin_add_user)
        r.add_delete("/api/admin/users/{name}", self.admin_remove_user)
        r.add_post("/api/admin/users/{name}/password", self.admin_set_password)
        r.add_post("/api/admin/{kind:users|devices}/{name}/emergency", self.admin_emergency)
        r.add_get("/api/admin/devices", self.admin_devices)
        r.add_post("/api/admin/devices/{name}/revoke", self.admin_revoke_device)
        r.add_post("/api/admin/pair-codes", self.admin_pair_code)
        r.add_get("/api/admin/keys", self.admin_keys)
        r.add_post("/api/admin/keys/approve", self.admin_approve)
        r.add_post("/api/admin/keys/rotate", self.admin_rotate)
        return app

    async def start(self) -> None:
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port_wanted, ssl_context=self.tls)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            why = exc.strerror.lower() if exc.strerror else str(exc)
            raise ServerStartError(
                f"cannot listen on {self.host}:{self.port_wanted} (web console): {why}"
            ) from exc
        self._runner = runner
        self._watcher = asyncio.create_task(self._watch())
        log.info("web console on %s", self.url)

    async def close(self) -> None:
        self._closing = True
        self.world.changed.set()  # the events streams end
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        if self._runner is not None:
            await self._runner.cleanup()
        self.sessions.clear()

    @property
    def port(self) -> int:
        assert self._runner is not None, "web console not started"
        address = self._runner.addresses[0]
        return int(address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/"

    # ------------------------------------------------------------------ middlewares

    @web.middleware
    async def _headers(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        response = await handler(request)
        h = response.headers
        # The page may reach its own origin and the rooms' websocket, nothing else.
        h.setdefault(
            "Content-Security-Policy", CONTENT_SECURITY_POLICY.format(rooms=self._ws_url(request))
        )
        h.setdefault("X-Content-Type-Options", "nosniff")
        h.setdefault("Referrer-Policy", "no-referrer")
        h.setdefault("X-Frame-Options", "DENY")
        h.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        h.setdefault("Permissions-Policy", "microphone=(self), camera=(), geolocation=()")
        h.setdefault("Cache-Control", "no-store")  # nothing of the page is kept by the browser
        if self.tls is not None:
            h.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response

    @web.middleware
    async def _errors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except WebError as exc:
            return _error(exc.status, str(exc), exc.headers)
        except NotFound as exc:
            return _error(404, str(exc))
        except AlreadyExists as exc:
            return _error(409, str(exc))
        except (InvalidArgument, ValueError) as exc:
            return _error(400, str(exc))
        except PttdError as exc:
            return _error(409, str(exc))
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            reason = exc.reason.lower() if exc.reason else "error"
            return _error(exc.status, reason)

    @web.middleware
    async def _csrf(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Requests that change something come from this origin's page, with the token."""
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            origin = request.headers.get("Origin")
            if origin is not None and origin != self._origin(request):
                raise WebError(403, "cross-origin request refused")
            if request.path != "/api/login":
                session = self._session(request)
                sent = request.headers.get(CSRF_HEADER, "")
                if session is None:
                    raise WebError(401, "not logged in")
                if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
                    raise WebError(403, "bad CSRF token")
        return await handler(request)

    def _origin(self, request: web.Request) -> str:
        return f"{'https' if self.tls else 'http'}://{request.host}"

    # ------------------------------------------------------------------ sessions

    @staticmethod
    def _key(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def _session(self, request: web.Request) -> WebSession | None:
        token = request.cookies.get(COOKIE)
        if not token:
            return None
        key = self._key(token)
        session = self.sessions.get(key)
        if session is None:
            return None
        now = time.monotonic()
        if now - session.used > SESSION_IDLE or now - session.created > SESSION_MAX_AGE:
            del self.sessions[key]
            return None
        session.used = now
        return session

    async def _who(self, request: web.Request, *, admin: bool = False) -> Who:
        """The logged-in user of ``request`` as the registry has them now (a removed user's
        session ends here); WebError 401, or 403 for a non-admin where ``admin``."""
        session = self._session(request)
        if session is None:
            raise WebError(401, "not logged in")
        found = await asyncio.to_thread(self._user_now, session.user)
        if found is None or found[0].credential != session.credential:
            # removed, a new password, or the name given to another user since the login
            self._forget(session)
            raise WebError(401, "not logged in")
        info, encrypted = found
        if admin and not info.admin:
            raise WebError(403, "admins only")
        return Who(session, info, encrypted)

    def _user_now(self, name: str) -> tuple[UserInfo, frozenset[str]] | None:
        info = self.registry.get_user(name)
        if info is None:
            return None
        return info, frozenset(self.registry.encrypted_rooms() & set(info.rooms))

    async def _changed(self) -> None:
        """After a write through this process's registry: the rooms apply it at once (a revoked
        device goes, a new room key is handed out) and the events streams look again."""
        await self.rooms.registry_changed()
        self.world.version = -1

    def _forget(self, session: WebSession) -> None:
        for key, held in list(self.sessions.items()):
            if held is session:
                del self.sessions[key]

    def _new_session(self, info: UserInfo) -> tuple[str, WebSession]:
        """A new session for ``info``; the least recently used goes first beyond
        :data:`MAX_SESSIONS_PER_USER` of this user's or :data:`MAX_SESSIONS` in all."""
        mine = [k for k, s in self.sessions.items() if s.user == info.name]
        if len(mine) >= MAX_SESSIONS_PER_USER:
            del self.sessions[min(mine, key=lambda k: self.sessions[k].used)]
        if len(self.sessions) >= MAX_SESSIONS:
            del self.sessions[min(self.sessions, key=lambda k: self.sessions[k].used)]
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        session = WebSession(info.name, info.credential, secrets.token_urlsafe(24), now, now)
        self.sessions[self._key(token)] = session
        return token, session

    @staticmethod
    def _session_body(who: Who) -> dict[str, Any]:
        return {
            "user": who.info.name,
            "admin": who.info.admin,
            "emergency": who.info.emergency,
            "rooms": list(who.rooms),
            "encrypted": sorted(who.encrypted),
            "csrf": who.session.csrf,
        }

    # ------------------------------------------------------------------ the page

    async def index(self, request: web.Request) -> web.StreamResponse:
        page = self.web_root / "index.html"
        if not page.is_file():
            raise WebError(404, "the web console's page is not installed")
        return web.FileResponse(page)

    def _ws_url(self, request: web.Request) -> str:
        """The rooms' websocket as this browser reaches the server: the host it used for the
        page, the rooms' port."""
        scheme = "wss" if self.tls else "ws"
        host = request.url.host or self.host
        if ":" in host:
            host = f"[{host}]"
        port = urllib.parse.urlsplit(self.rooms.url).port
        return f"{scheme}://{host}:{port}"

    async def config(self, request: web.Request) -> web.StreamResponse:
        authority = await asyncio.to_thread(self.registry.authority_key)
        fingerprint = None
        if authority is not None:
            with contextlib.suppress(KeyFormatError):
                fingerprint = str(AuthorityPublicKey.from_text(authority).fingerprint)
        return web.json_response(
            {
                "ws_url": self._ws_url(request),
                "authority_key": authority,
                "authority_fingerprint": fingerprint,
                # The page's test recorder (?tap=1) works only on a server started for tests.
                "test_tap": self.test_tap,
            }
        )

    # ------------------------------------------------------------------ logging in and out

    async def login(self, request: web.Request) -> web.StreamResponse:
        body = await _json(request)
        name = _text(body, "username")
        password = _text(body, "password")
        address = request.remote or "?"
        now = time.monotonic()
        folded = name.casefold()
        if self.failures_by_address.blocked(address, now) or self.failures_by_name.blocked(
            folded, now
        ):
            wait = round(self.login_window)
            raise WebError(
                429,
                f"too many failed logins: try again in {wait} s",
                {"Retry-After": str(wait)},
            )
        # Counted as failed until proved right: many tries at once are not all checked first.
        stamp_a = self.failures_by_address.record(address, now)
        stamp_n = self.failures_by_name.record(folded, now)
        loop = asyncio.get_running_loop()
        principal: Principal | None = await loop.run_in_executor(
            self.rooms.kdf, self.registry.check_password, name, password
        )
        if principal is None:
            # Not the name typed: a password typed into the name field must not reach the log.
            log.warning("web console: failed login from %s", address)
            raise WebError(401, "wrong user name or password")
        self.failures_by_address.forgive(address, stamp_a)
        self.failures_by_name.forgive(folded, stamp_n)
        found = await asyncio.to_thread(self._user_now, principal.name)
        if found is None:
            raise WebError(401, "wrong user name or password")
        token, session = self._new_session(found[0])
        who = Who(session, *found)
        log.info("web console: %s logged in from %s", principal.name, address)
        response = web.json_response(self._session_body(who))
        response.set_cookie(COOKIE, token, httponly=True, secure=True, samesite="Strict", path="/")
        return response

    async def session_info(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self._session_body(await self._who(request)))

    async def logout(self, request: web.Request) -> web.StreamResponse:
        session = self._session(request)
        if session is not None:
            self._forget(session)
        response = web.Response(status=204)
        response.del_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="Strict")
        return response

    async def ticket(self, request: web.Request) -> web.StreamResponse:
        who = await self._who(request)
        if not who.rooms:
            raise WebError(409, "you are in no room")
        principal = Principal("user", who.info.name, frozenset(who.rooms))
        token = await asyncio.to_thread(self.registry.issue_refresh_token, principal, TICKET_TTL)
        return web.json_response({"refresh_token": token, "ws_url": self._ws_url(request)})

    # ------------------------------------------------------------------ live events

    async def _watch(self) -> None:
        """Look for changes every EVENTS_PERIOD: the rooms' presence (in this process) and the
        registry (when its data version moved); wake the events streams when anything did."""
        world = self.world
        while True:
            version = await asyncio.to_thread(self.registry.data_version)
            changed = False
            if version != world.version:
                world.version = version
                devices, encrypted = await asyncio.to_thread(self._registry_view)
                if devices != world.devices or encrypted != world.encrypted:
                    world.devices, world.encrypted = devices, encrypted
                    changed = True
            presence = self.rooms.presence()
            if presence != world.presence:
                world.presence = presence
                changed = True
            if changed:
                world.changed.set()
                world.changed = asyncio.Event()
            await asyncio.sleep(EVENTS_PERIOD)

    def _registry_view(self) -> tuple[list[DeviceInfo], frozenset[str]]:
        return self.registry.list_devices(), frozenset(self.registry.encrypted_rooms())

    def _snapshot(self, who: Who) -> dict[str, Any]:
        world = self.world
        rooms = (
            sorted(set(world.presence) | set(who.rooms)) if who.info.admin else sorted(who.rooms)
        )
        out: dict[str, Any] = {
            "rooms": [room_row(r, world.presence, world.encrypted) for r in rooms]
        }
        if who.info.admin:
            online = online_of(world.presence)
            out["devices"] = [device_row(d, online) for d in world.devices]
        return out

    async def events(self, request: web.Request) -> web.StreamResponse:
        who = await self._who(request)
        if who.session.streams >= MAX_STREAMS_PER_SESSION or self.streams >= MAX_STREAMS:
            raise WebError(429, "too many event streams open")
        who.session.streams += 1
        self.streams += 1
        try:
            return await self._events(request, who)
        finally:
            who.session.streams -= 1
            self.streams -= 1

    async def _events(self, request: web.Request, who: Who) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        with contextlib.suppress(ConnectionResetError):  # the page went
            await self._stream_events(request, response, who)
        return response

    async def _stream_events(
        self, request: web.Request, response: web.StreamResponse, who: Who
    ) -> None:
        sent: dict[str, Any] | None = None
        quiet_since = time.monotonic()
        while True:
            changed = self.world.changed
            if self._closing or self._session(request) is not who.session:  # logged out
                break
            if self.world.version >= 0:
                snapshot = self._snapshot(who)
                if snapshot != sent:
                    await response.write(f"data: {json.dumps(snapshot)}\n\n".encode())
                    sent, quiet_since = snapshot, time.monotonic()
                elif time.monotonic() - quiet_since > EVENTS_KEEPALIVE:
                    await response.write(b": keep-alive\n\n")
                    quiet_since = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), EVENTS_KEEPALIVE)
            found = await asyncio.to_thread(self._user_now, who.info.name)
            if found is None or found[0].credential != who.session.credential:
                self._forget(who.session)
                break
            who = Who(who.session, *found)

    # ------------------------------------------------------------------ admin: rooms, users

    async def admin_rooms(self, request: web.Request) -> web.StreamResponse:
        await self._who(request, admin=True)
        names, encrypted = await asyncio.to_thread(
            lambda: (self.registry.list_rooms(), self.registry.encrypted_rooms())
        )
        presence = self.rooms.presence()
        return web.json_response([room_row(name, presence, encrypted) for name in names])

    async def admin_add_room(self, request: web.Request) -> web.StreamResponse:
        who = await self._who(request, admin=True)
        body = await _json(request)
        name = _text(body, "name")
        encrypted = _flag(body, "encrypted")
        await asyncio.to_thread(self.registry.add_room, name, encrypted=encrypted)
        await self._changed()
        log.info("web console: %s added room %s", who.info.name, name)
        return web.json_response({"name": name, "encrypted": encrypted}, status=201)

    async def admin_remove_room(self, request: web.Request) -> web.StreamResponse:
        who = await self._who(request, admin=True)
        name = request.match_info["name"]
        await asyncio.to_thread(self.registry.remove_room, name)
        await self._changed()
        log.info("web console: %s removed room %s", who.info.name, name)
        return web.Response(status=204)

    async def admin_encrypt_room(self, request: web.Request) -> web.StreamResponse:
        who = await self._who(request, admin=True)
        name = request.match_info["name"]
        await asyncio.to_thread(self.registry.set_encrypted, name, True)
        await self._changed()
        log.info("web console: %s made room %s end-to-end encrypted", who.info.name, name)
        return web.Response(status=204)

    async def admin_users(self, request: web.Request) -> web.StreamResponse:
        await self._who(request, admin=True)
        users = await asyncio.to_thread(self.registry.list_users)
        online = {n for k, n in online_of(self.rooms.presence()) if k == "user"}
        return web.json_response(
            [
                {
                    "name": u.name,
                    "rooms": list(u.rooms),
                    "emergency": u.emergency,
                    "admin": u.admin,
                    "online": u.name in online,
                }
                for u in users
            ]
        )

    async def admin_remove_user(self, request: web.Request) -> web.StreamResponse:
        who = await self._who(request, admin=True)
        name = request.match_info["name"]
        if name == who.info.name:
            raise WebError(409, "you cannot remove yourself (another admin can)")
        await asyncio.to_thread(self.registry.remove_user, name)
        await self._changed()  # its connections go; its web sessions end at their next request
        log.info("web console: %s removed user %s", who.info.name, name)
        return web.Response(status=204)

    async def admin_set_password(self, request: web.Request) -> web.StreamResponse:
        who = await self._who(request, admin=True)
        name = request.match_info["name"]
        password = _text(await _json(request), "password")
        await asyncio.get_running_loop().run_in_executor(
            self.rooms.kdf, self.registry.set_password, name, password
        )
        log.info("web console: %s set a new password for %s", who.info.name, name)
        return web.Response(status=204)

    async def admin_emergency(self, request: web.Request) -> web.StreamResponse:
        who = await self._who(request, admin=True)
        kind: Literal["user", "device"] = (
            "user" if request.match_info["kind"] == "users" else "device"
        )
        name = request.match_info["name"]
        granted = _flag(await _json(request), "granted")
        await asyncio.to_thread(self.registry.set_emergency, kind, name, granted)
        await self._changed()
        log.info(
            "web console: %s %s emergency priority %s %s %s",
            who.info.name,
            "granted" if granted else "took back",
            "to" if granted else "from",
            kind,
            name,
        )
        return web.Response(status=204)

    async def admin_add_user(self, request: web.Request) -> web.StreamResponse:
        who = await self._who(request, admin=True)
        body = await _json(request)
        name = _text(body, "name")
        password = _text(body, "password")
        rooms = _names(body, "rooms")
        admin = _flag(body, "admin")
        emergency = _flag(body, "emergency")
        if not rooms and not admin:
            raise WebError(400, "a user needs at least one room (an admin may have none)")
        await asyncio.get_running_loop().run_in_executor(
            self.rooms.kdf,
            lambda: self.registry.add_user(name, password, rooms, emergency=emergency, admin=admin),
        )
        log.info("web console: %s added user %s", who.info.name, name)
        return web.json_response({"name": name}, status=201)

    # ------------------------------------------------------------------ admin: devices, codes

    async def admin_devices(self, request: web.Request) -> web.StreamResponse:
        await self._who(request, admin=True)
        devices = await asyncio.to_thread(self.registry.list_devices)
        online = online_of(self.rooms.presence())
        return web.json_response([device_row(d, online) for d in devices])

    async def admin_revoke_device(self, request: web.Request) -> web.StreamResponse:
        who = await self._who(request, admin=True)
        name = request.match_info["name"]
        async with self._authority_lock:  # a load, a change and a save of the key file
            said = await asyncio.to_thread(self._revoke, name)
        await self._changed()
        log.info("web console: %s revoked device %s", who.info.name, name)
        return web.json_response({"said": said})

    def _revoke(self, name: str) -> list[str]:
        self.registry.revoke_device(name)
        said = [f"device {name} revoked"]
        if self.key_file is not None:  # new epochs without it, at once
            said += authority_commands.sync(Authority.load(self.key_file), self.registry)
        return said

    async def admin_pair_code(self, request: web.Request) -> web.StreamResponse:
        who = await self._who(request, admin=True)
        body = await _json(request)
        rooms = _names(body, "rooms")
        if not rooms:
            raise WebError(400, "choose at least one room")
        ttl = body.get("ttl", 600)
        if not isinstance(ttl, int | float) or isinstance(ttl, bool) or not 30 <= ttl <= 86400:
            raise WebError(400, "ttl: seconds between 30 and 86400")
        emergency = _flag(body, "emergency")

        def make() -> tuple[Any, str | None]:
            authority = self.registry.authority_key()
            encrypted = sorted(set(rooms) & self.registry.encrypted_rooms())
            if encrypted and authority is None:
                raise WebError(
                    409,
                    f"{', '.join(encrypted)}: encrypted, but this server knows no key "
                    "authority ('pttd keys init' first)",
                )
            return self.registry.create_pair_code(rooms, ttl=float(ttl), emergency=emergency), (
                authority
            )

        code, authority = await asyncio.to_thread(make)
        link = pairing_link(code.code, self._ws_url(request), authority)
        import segno  # noqa: PLC0415 - only this route needs it

        out = io.BytesIO()  # a standalone SVG (its namespace too): the page shows it as an image
        segno.make(link, error="m").save(
            out, kind="svg", xmldecl=False, svgns=True, scale=4, dark="#000", light="#fff"
        )
        svg = out.getvalue().decode("ascii")
        log.info("web console: %s made a pairing code for %s", who.info.name, ", ".join(rooms))
        return web.json_response(
            {
                "code": code.code,
                "rooms": list(code.rooms),
                "link": link,
                "expires_at": code.expires_at,
                "qr_svg": svg,
            },
            status=201,
        )

    # ------------------------------------------------------------------ admin: keys

    def _authority(self) -> Authority:
        if self.key_file is None:
            raise WebError(
                409,
                "this server runs without the key authority's file (--key-file): approve "
                "with 'pttd keys approve' where the key file is",
            )
        return Authority.load(self.key_file)

    async def admin_keys(self, request: web.Request) -> web.StreamResponse:
        await self._who(request, admin=True)
        return web.json_response(await asyncio.to_thread(self._keys_view))

    def _keys_view(self) -> dict[str, Any]:
        reg = self.registry
        authority_key = reg.authority_key()
        fingerprint = None
        if authority_key is not None:
            with contextlib.suppress(KeyFormatError):
                fingerprint = str(AuthorityPublicKey.from_text(authority_key).fingerprint)
        authority = Authority.load(self.key_file) if self.key_file is not None else None
        encrypted = reg.encrypted_rooms()
        members = []
        for m in reg.members():
            rooms = sorted(set(m.rooms) & encrypted)
            if not rooms:
                continue
            member_fp = None
            if m.identity_key is not None:
                with contextlib.suppress(KeyFormatError):
                    member_fp = str(IdentityPublicKey.from_text(m.identity_key).fingerprint)
            approved = None
            if authority is not None:
                approved = member_fp is not None and all(
                    r in authority.rooms()
                    and any(
                        a.name == m.name and a.fingerprint == member_fp
                        for a in authority.members(r)
                    )
                    for r in rooms
                )
            members.append(
                {
                    "kind": m.kind,
                    "name": m.name,
                    "rooms": rooms,
                    "fingerprint": member_fp,
                    "approved": approved,
                }
            )
        epochs = {r: authority.epoch(r) for r in authority.rooms()} if authority is not None else {}
        return {
            "enabled": authority is not None,
            "authority_fingerprint": fingerprint,
            "members": members,
            "epochs": epochs,
        }

    async def admin_approve(self, request: web.Request) -> web.StreamResponse:
        who = await self._who(request, admin=True)
        body = await _json(request)
        name = _text(body, "name")
        typed = _text(body, "fingerprint")

        def approve() -> list[str]:
            return authority_commands.approve(self._authority(), self.registry, name, typed)

        async with self._authority_lock:  # a load, a change and a save of the key file
            said = await asyncio.to_thread(approve)
        await self._changed()
        log.info("web console: %s approved %s", who.info.name, name)
        return web.json_response({"said": said})

    async def admin_rotate(self, request: web.Request) -> web.StreamResponse:
        who = await self._who(request, admin=True)
        body = await _json(request)
        room = _text(body, "room")

        def rotate() -> list[str]:
            authority = self._authority()
            if room not in authority.rooms():
                raise WebError(404, f"the key authority has no room {room!r}")
            authority.rotate(room)
            said = authority_commands.sync(authority, self.registry)
            return [f"{room}: epoch {authority.epoch(room)}", *said]

        async with self._authority_lock:  # a load, a change and a save of the key file
            said = await asyncio.to_thread(rotate)
        await self._changed()
        log.info("web console: %s rotated the key of %s", who.info.name, room)
        return web.json_response({"said": said})


# --------------------------------------------------------------------------- helpers


def online_of(presence: Mapping[str, RoomPresence]) -> set[tuple[str, str]]:
    """Who is online in any room, as (kind, name)."""
    return {member for room in presence.values() for member in room.online}


def room_row(
    name: str, presence: Mapping[str, RoomPresence], encrypted: Collection[str]
) -> dict[str, Any]:
    """A room as the page shows it: who is online in it, who talks."""
    here = presence.get(name, RoomPresence((), None))
    return {
        "name": name,
        "encrypted": name in encrypted,
        "online": [{"kind": k, "name": n} for k, n in here.online],
        "talking": here.talking,
    }


def device_row(d: DeviceInfo, online: Collection[tuple[str, str]]) -> dict[str, Any]:
    """A paired device as the admin view shows it."""
    return {
        "name": d.name,
        "rooms": list(d.rooms),
        "online": ("device", d.name) in online and not d.revoked,
        "last_seen": d.last_seen,
        "paired_at": d.paired_at,
        "revoked": d.revoked,
        "emergency": d.emergency,
    }


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise WebError(400, "the request body is not JSON") from None
    if not isinstance(body, dict):
        raise WebError(400, "the request body is not a JSON object")
    return body


def _text(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise WebError(400, f"{key}: a non-empty string is needed")
    if len(value) > 4096:
        raise WebError(400, f"{key}: too long")
    return value


def _flag(body: Mapping[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise WebError(400, f"{key}: true or false")
    return value


def _names(body: Mapping[str, Any], key: str) -> list[str]:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise WebError(400, f"{key}: a list of names")
    return list(dict.fromkeys(value))
