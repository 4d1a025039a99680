"""The room server's connection rules, sans-I/O: what each connection may do, and when.

:class:`ServerCore` takes what happens (a connection opened or closed, a text or binary frame, an
answer from the registry, time passing, devices revoked by an admin) with the time passed in, and
returns what to do as :data:`Action` values, in order: send a frame to some connections, close one,
or ask the registry something (its answer comes back through the matching ``*_done`` method).
The asyncio server (:mod:`pttd.server.app`) only moves frames, runs one timer
(:attr:`ServerCore.next_deadline`) and calls the registry. Nothing here reads a clock, sleeps,
touches a socket or starts a thread.

The rules, each in one place:

* logon first: before a logon (or a pairing) a connection may do nothing else; a connection that
  has not logged on within ``logon_timeout`` is closed;
* throttling: control messages and audio packets per connection (token buckets,
  :class:`~pttd.ratelimit.RateLimiter`), failed logons and pairings per address
  (:class:`~pttd.ratelimit.FailureLog`; a blocked address still logs on with a device
  token, which nobody can guess, but gets no password checked);
* rooms: a principal joins only rooms it was given; a device that logs on again replaces its
  older connection; a member that joins mid-talk hears the talk (late entry); a listen-only
  connection neither talks nor writes;
* emergency: only a principal granted it asks for emergency priority (others are refused
  ``not allowed``), and it pre-empts at most ``EMERGENCY_PREEMPTIONS`` normal talks within
  ``EMERGENCY_WINDOW`` seconds; beyond that its emergency is a normal request;
* audio: relayed only under the sender's own stream, renumbered; packets of a stream the server
  just ended (still in flight) are dropped quietly; a talk ends at ``max_talk_time`` and after
  ``stream_idle_timeout`` without audio;
* revocation: a revoked device's connections are closed at once, and it sends nothing after;
* encrypted rooms: only clients that bring an identity key join them; only SFrame streams
  (announced in the codec header) are talked there and no text is sent in clear; each member
  gets the room keys the key authority sealed for it (:class:`p.OnRoomKey`), which the server
  passes on and can neither open nor forge.

Who is in which room and who holds each floor is asked of a :class:`RoomDirectory`:
:class:`LocalRooms` keeps them in this process (floor rules: :mod:`pttd.server.rooms`); an
implementation shared by several server instances plugs in beside it.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeAlias, TypeVar

from pttd.errors import ProtocolError
from pttd.ratelimit import FailureLog, LogThrottle, RateLimiter
from pttd.server.rooms import Granted, Room, Stream
from pttd.wire import messages as p

log = logging.getLogger(__name__)

C = TypeVar("C", bound=Hashable)  # the I/O layer's handle for a connection (a websocket)

CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008  # policy violation: floods, revoked credentials, logon timeout
CLOSE_TRY_AGAIN = 1013  # try again later: too many connections
REFUSED_PACKET_RATE = 5.0  # refused audio packets per second (bursts of 20) before a kick
MAX_PACKET_RATE = 250.0  # audio packets/s one client may send: 5x real time at 20 ms (0: no limit)
# A principal granted emergency priority pre-empts at most this many normal talks …
EMERGENCY_PREEMPTIONS = 3
EMERGENCY_WINDOW = 60.0  # … within this many seconds; beyond, its emergency counts as normal


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a logon or a credential belongs to, and the rooms they may join.

    ``credential`` names the credential itself (for a device, its token's hash), so that a
    revocation follows the credential, not the name: a device revoked and then paired again under
    the same name has a new credential, and the old one's connections still go."""

    kind: Literal["user", "device"]
    name: str
    rooms: frozenset[str]
    credential: str = ""
    emergency: bool = False  # granted emergency priority (may pre-empt a normal talk)
    encrypted: frozenset[str] = frozenset()  # which of its rooms are encrypted
    # (room, sealed room key) for each of its rooms the key authority sealed a key in for it
    room_keys: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    # The refresh token this logon came with, as (its family, its hash): the registry rotates it
    # when it issues the next one. Not part of who the principal is.
    refreshed_with: tuple[str, str] | None = field(default=None, repr=False, compare=False)

    @property
    def key(self) -> tuple[str, str]:
        """Who it is, whatever the credential and rooms: (kind, name)."""
        return (self.kind, self.name)


@dataclass(frozen=True, slots=True)
class RoomPresence:
    """Who is online in a room, as (kind, name), in the order they joined; who talks there."""

    online: tuple[tuple[str, str], ...]
    talking: str | None


@dataclass(frozen=True, slots=True)
class Pairing:
    """The result of redeeming a pairing code; ``auth_token`` is handed to the device once."""

    device_name: str
    auth_token: str
    rooms: tuple[str, ...]

    def __repr__(self) -> str:  # keep the token out of logs and tracebacks
        return (
            f"Pairing(device_name={self.device_name!r}, auth_token='<redacted>', "
            f"rooms={self.rooms!r})"
        )


@dataclass(frozen=True, slots=True)
class CoreSettings:
    """The connection rules' numbers (``pttd server run`` sets some of them)."""

    max_talk_time: float = 60.0  # seconds a talker may hold the floor
    stream_idle_timeout: float = 5.0  # a stream with no audio for this long is ended
    logon_timeout: float = 30.0  # a connection must log on (or pair) within this
    max_text_rate: float = 20.0  # control messages per second per client (burst: 2 s worth)
    max_packet_rate: float = MAX_PACKET_RATE
    auth_failures: int = 5  # failed logons or pairings per address …
    auth_window: float = 60.0  # … within this many seconds, before further tries are refused
    max_connections: int = 10_000  # in all (the server sets it below its file-descriptor limit)
    max_pending_per_address: int = 16  # connections not logged on yet, from one address
    max_sessions_per_principal: int = 8  # logged-on connections of one user (a device has one)
    log_burst: int = 10  # log lines of one kind (refusals, floods …) per log_window …
    log_window: float = 10.0  # … then counted and told with the next one


# --------------------------------------------------------------------------- sessions


class Session(Generic[C]):
    """One connection, logged on or not."""

    __slots__ = (
        "address",
        "attempt",
        "closing",
        "conn",
        "ended_streams",
        "listen_only",
        "logon_deadline",
        "packet_limit",
        "principal",
        "refusal_limit",
        "rooms",
        "sframe",
        "text_limit",
    )

    def __init__(self, conn: C, address: str, settings: CoreSettings, now: float) -> None:
        self.conn = conn
        self.address = address
        self.principal: Principal | None = None
        # A password or pairing attempt being checked, counted as failed until it proves right:
        # many attempts sent at once must not all be checked before the first failure counts.
        self.attempt: float | None = None
        self.rooms: dict[str, Room[Session[C]]] = {}
        self.listen_only = False
        self.sframe = False  # logged on with an identity key: it may be in encrypted rooms
        self.logon_deadline: float | None = now + settings.logon_timeout
        self.text_limit = RateLimiter(settings.max_text_rate, settings.max_text_rate * 2, now)
        self.packet_limit = RateLimiter(settings.max_packet_rate, settings.max_packet_rate, now)
        # Audio packets refused (not its stream, not logged on): a few are a client's mistake,
        # a stream of them is an attack that costs every honest talk CPU.
        self.refusal_limit = RateLimiter(REFUSED_PACKET_RATE, REFUSED_PACKET_RATE * 4, now)
        # Streams of ours that ended under us (timeout, pre-emption): their last packets in flight
        # are dropped quietly instead of answered with errors.
        self.ended_streams: deque[int] = deque(maxlen=8)
        # Being closed by the server (a flood, a revocation): the frames it still has in flight
        # are dropped unread, not each answered, logged and closed again.
        self.closing = False

    @property
    def name(self) -> str:
        return self.principal.name if self.principal else f"<{self.address}>"

    def __repr__(self) -> str:
        return f"Session({self.name})"


class RoomDirectory(Protocol[C]):
    """Who is in which room and who holds each floor: "the rest of the world" for one server.

    :class:`LocalRooms` is the in-process one. One shared by several server instances would
    implement the same calls and tell each instance about members and talks it does not hold.
    """

    def room(self, name: str) -> Room[Session[C]]:
        """The room called ``name``, made when first joined."""

    def get(self, name: str) -> Room[Session[C]] | None: ...

    def rooms(self) -> Iterable[Room[Session[C]]]: ...

    def next_stream_id(self) -> int: ...

    def next_message_id(self) -> int: ...


class LocalRooms(Generic[C]):
    """The rooms of this process."""

    def __init__(self) -> None:
        self._rooms: dict[str, Room[Session[C]]] = {}
        self._stream_ids = itertools.count(1)
        self._message_ids = itertools.count(1)

    def room(self, name: str) -> Room[Session[C]]:
        room = self._rooms.get(name)
        if room is None:
            room = self._rooms[name] = Room(name)
        return room

    def get(self, name: str) -> Room[Session[C]] | None:
        return self._rooms.get(name)

    def rooms(self) -> Iterable[Room[Session[C]]]:
        return self._rooms.values()

    def next_stream_id(self) -> int:
        return next(self._stream_ids)

    def next_message_id(self) -> int:
        return next(self._message_ids)


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class Send(Generic[C]):
    """Queue ``data`` (a text frame, or bytes: an audio frame) to each of ``to``, without waiting
    (a receiver too far behind is dropped instead: the I/O layer bounds every backlog)."""

    to: tuple[C, ...]
    data: str | bytes


@dataclass(frozen=True, slots=True)
class Close(Generic[C]):
    """Close ``conn`` with a websocket close ``code`` and ``reason``."""

    conn: C
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class CheckLogon(Generic[C]):
    """Ask the registry whose credentials ``logon`` carries (``password_allowed``: False from a
    blocked address); answer with :meth:`ServerCore.logon_checked`."""

    conn: C
    logon: p.Logon
    password_allowed: bool


@dataclass(frozen=True, slots=True)
class IssueRefreshToken(Generic[C]):
    """Ask the registry for a refresh token for ``principal``; answer with
    :meth:`ServerCore.refresh_issued`."""

    conn: C
    logon: p.Logon
    principal: Principal


@dataclass(frozen=True, slots=True)
class RedeemCode(Generic[C]):
    """Ask the registry to redeem a pairing code; answer with :meth:`ServerCore.pair_done`."""

    conn: C
    pair: p.Pair


@dataclass(frozen=True, slots=True)
class UnpairDevice(Generic[C]):
    """Ask the registry to forget a device; answer with :meth:`ServerCore.unpair_done`."""

    conn: C
    unpair: p.Unpair
    device: str


Action: TypeAlias = (
    Send[C] | Close[C] | CheckLogon[C] | IssueRefreshToken[C] | RedeemCode[C] | UnpairDevice[C]
)


@dataclass(frozen=True, slots=True)
class PairRefused:
    """A pairing the registry refused: ``reason`` is the protocol's (``invalid code`` …), or
    None for a device name that cannot be used (``detail`` says why)."""

    reason: str | None
    detail: str = ""


# --------------------------------------------------------------------------- the core


@dataclass(eq=False)
class ServerCore(Generic[C]):
    """Every connection's rules; see the module's docstring."""

    settings: CoreSettings = field(default_factory=CoreSettings)
    directory: RoomDirectory[C] = field(default_factory=LocalRooms)
    sessions: dict[C, Session[C]] = field(default_factory=dict)
    streams: dict[int, Stream[Session[C]]] = field(default_factory=dict)
    packets_relayed: int = 0

    def __post_init__(self) -> None:
        s = self.settings
        self.auth_failures = FailureLog(s.auth_failures, s.auth_window)
        self.log_throttle = LogThrottle(s.log_burst, s.log_window)
        self._now = 0.0  # the latest time passed in, for lines logged where none is
        # Pre-emptions per principal ("kind:name"), whichever connection made them.
        self.preemptions = FailureLog(EMERGENCY_PREEMPTIONS, EMERGENCY_WINDOW)

    def note(self, level: int, cause: str, message: str, *args: object) -> None:
        """Log a line of the kind ``cause``, at most ``log_burst`` of a kind per ``log_window``:
        what clients can make the server log is bounded (the rest is counted, then told)."""
        held = self.log_throttle.allow(cause, self._now)
        if held is None:
            return
        if held:
            message += f" (and {held} more like this before)"
        log.log(level, message, *args)

    # ------------------------------------------------------------------ connections

    def connected(self, conn: C, address: str, now: float) -> list[Action[C]]:
        """A new connection. Connections not logged on yet are the first to go when there are
        too many: past ``max_pending_per_address`` from one address, or ``max_connections`` in
        all, the oldest of them is closed to make room (or, with none to close, the new one)."""
        self._now = now
        s = self.settings
        out: list[Action[C]] = []
        pending = [x for x in self.sessions.values() if x.principal is None and not x.closing]
        from_there = [x for x in pending if x.address == address]
        shed: Session[C] | None = None
        if len(from_there) >= s.max_pending_per_address:
            shed = from_there[0]
        elif len(self.sessions) >= s.max_connections:
            if not pending:
                self.note(
                    logging.WARNING, "full", "refusing a connection: %d open", len(self.sessions)
                )
                out.append(Close(conn, CLOSE_TRY_AGAIN, "too many connections"))
                return out
            shed = pending[0]
        if shed is not None:
            self.note(
                logging.WARNING,
                "shed",
                "closing %s, not logged on: too many connections",
                shed.name,
            )
            shed.closing = True
            out.append(Close(shed.conn, CLOSE_TRY_AGAIN, "too many connections"))
            out += self.disconnected(shed.conn)
        self.sessions[conn] = Session(conn, address, self.settings, now)
        return out

    def disconnected(self, conn: C) -> list[Action[C]]:
        """The connection is gone (closed by either side, or dropped as too slow)."""
        session = self.sessions.pop(conn, None)
        out: list[Action[C]] = []
        if session is not None:
            self._leave_rooms(session, out)
            if session.principal is not None:
                self.note(logging.INFO, "session", "%s disconnected", session.name)
        return out

    def _leave_rooms(self, session: Session[C], out: list[Action[C]]) -> None:
        for room in session.rooms.values():
            ended = room.leave(session)
            if ended is not None:
                self._end_stream(ended, p.REASON_DISCONNECTED, out, notify_talker=False)
            self._announce_status(room, out)
        session.rooms.clear()

    def _kick(self, session: Session[C], error: str, why: str, out: list[Action[C]]) -> None:
        """Tell a client what it did wrong and close it; frames it still sends are ignored."""
        if session.closing:
            return
        session.closing = True
        out.append(Send((session.conn,), p.OnError(error).to_json()))
        out.append(Close(session.conn, CLOSE_POLICY, why))

    @staticmethod
    def _answer(session: Session[C], seq: int | None, out: list[Action[C]], **fields: Any) -> None:
        """Answer a request: a ``Response`` with its ``seq`` (none for a request without one)."""
        if seq is not None:
            out.append(Send((session.conn,), p.Response(seq=seq, **fields).to_json()))

    # ------------------------------------------------------------------ text frames

    def text(self, conn: C, frame: str, now: float) -> list[Action[C]]:
        self._now = now
        out: list[Action[C]] = []
        session = self.sessions.get(conn)
        if session is None or session.closing:
            return out
        if not session.text_limit.allow(now):
            self.note(logging.WARNING, "flood", "closing %s: control message flood", session.name)
            self._kick(session, p.INVALID_REQUEST, "flood", out)
            return out
        try:
            message = p.parse_client_message(frame)
            if session.principal is None and not isinstance(message, p.Logon | p.Pair):
                raise ProtocolError(p.NOT_LOGGED_IN, message.COMMAND, message.seq)
            if isinstance(message, p.Logon):
                self._on_logon(session, message, now, out)
            elif isinstance(message, p.StartStream):
                self._on_start_stream(session, message, now, out)
            elif isinstance(message, p.StopStream):
                self._on_stop_stream(session, message, out)
            elif isinstance(message, p.SendTextMessage):
                self._on_send_text_message(session, message, out)
            elif isinstance(message, p.Pair):
                self._on_pair(session, message, now, out)
            else:
                self._on_unpair(session, message, out)
        except ProtocolError as exc:
            self.note(logging.INFO, "refused", "refused from %s: %s", session.name, exc)
            out.append(Send((conn,), p.error_response(exc)))
        return out

    # logon ---------------------------------------------------------------

    def _on_logon(self, session: Session[C], m: p.Logon, now: float, out: list[Action[C]]) -> None:
        if session.principal is not None:
            raise ProtocolError(p.INVALID_REQUEST, "already logged on", m.seq)
        # A blocked address gets no password checked. A token (256 random bits, nothing to
        # guess) still logs on from it: someone guessing passwords from a site's shared address
        # (a NAT, a carrier's CGNAT) must not lock the site's radios out.
        blocked = self.auth_failures.blocked(session.address, now)
        if m.password is not None and not blocked:
            session.attempt = self.auth_failures.record(session.address, now)
        out.append(CheckLogon(session.conn, m, password_allowed=not blocked))

    def logon_checked(
        self, conn: C, m: p.Logon, principal: Principal | None, now: float
    ) -> list[Action[C]]:
        """The registry's answer to :class:`CheckLogon`: whose credentials they were, if any."""
        self._now = now
        out: list[Action[C]] = []
        session = self.sessions.get(conn)
        if session is None or session.closing or session.principal is not None:
            return out  # the client left meanwhile, or a second logon raced this one
        attempt, session.attempt = session.attempt, None
        if principal is not None and attempt is not None:
            self.auth_failures.forgive(session.address, attempt)
        try:
            if (
                principal is None
                and attempt is None
                and self.auth_failures.blocked(session.address, now)
            ):
                self.note(
                    logging.WARNING,
                    "blocked",
                    "logon from %s refused: too many failed attempts",
                    session.address,
                )
                # With a reason, so that a device does not take it for a revocation.
                self._answer(
                    session, m.seq, out, error=p.NOT_AUTHORIZED, reason=p.REASON_RATE_LIMITED
                )
                return out
            if principal is None:
                if attempt is None:  # a token nobody knows: counted now
                    self.auth_failures.record(session.address, now)
                raise ProtocolError(p.NOT_AUTHORIZED, "bad credentials", m.seq)
            not_allowed = [r for r in m.channels if r not in principal.rooms]
            if not_allowed:
                raise ProtocolError(p.NOT_AUTHORIZED, f"rooms {not_allowed}", m.seq)
            sealed = [r for r in m.channels if r in principal.encrypted]
            if sealed and m.identity_key is None:
                # A client that knows nothing of SFrame would hear noise: it is told why.
                self.note(
                    logging.INFO,
                    "refused",
                    "logon of %s refused: %s encrypted, and it has no identity key",
                    principal.name,
                    ", ".join(sealed),
                )
                self._answer(
                    session, m.seq, out, error=p.NOT_AUTHORIZED, reason=p.REASON_ENCRYPTED_ROOM
                )
                return out
            if self._too_many_sessions(principal):
                self._answer(
                    session, m.seq, out, error=p.NOT_AUTHORIZED, reason=p.REASON_TOO_MANY_SESSIONS
                )
                return out
        except ProtocolError as exc:
            self.note(logging.INFO, "refused", "refused from %s: %s", session.name, exc)
            out.append(Send((conn,), p.error_response(exc)))
            return out
        out.append(IssueRefreshToken(conn, m, principal))
        return out

    def refresh_issued(
        self, conn: C, m: p.Logon, principal: Principal, refresh_token: str | None
    ) -> list[Action[C]]:
        """The registry's answer to :class:`IssueRefreshToken`: the logon completes; or, None,
        it fails (the refresh token it came with was used by another logon meanwhile)."""
        out: list[Action[C]] = []
        session = self.sessions.get(conn)
        if session is None or session.closing or session.principal is not None:
            return out
        if refresh_token is None:
            exc = ProtocolError(p.NOT_AUTHORIZED, "refresh token already used", m.seq)
            self.note(logging.INFO, "refused", "refused from %s: %s", session.name, exc)
            out.append(Send((conn,), p.error_response(exc)))
            return out
        # No second count of sessions here: the refresh token the client came with is used up,
        # and refusing now would lose its successor (logon_checked counted them already).
        if principal.kind == "device":
            # A device that reconnects replaces its old, possibly half-dead, connection.
            others = [
                s
                for s in self.sessions.values()
                if s.principal and s.principal.key == principal.key
            ]
            for other in others:
                log.info("%s logged on again; closing its older connection", principal.name)
                out += self.disconnected(other.conn)
                out.append(Close(other.conn, CLOSE_NORMAL, "replaced by a new logon"))
        session.principal = principal
        session.listen_only = m.listen_only
        session.sframe = m.identity_key is not None
        session.logon_deadline = None
        self.note(
            logging.INFO,
            "session",
            "%s %s logged on from %s to %s%s",
            principal.kind,
            principal.name,
            session.address,
            ", ".join(m.channels),
            " (listen only)" if m.listen_only else "",
        )
        encrypted = tuple(r for r in m.channels if r in principal.encrypted)
        self._answer(session, m.seq, out, refresh_token=refresh_token, encrypted=encrypted or None)
        keys = dict(principal.room_keys)
        for name in m.channels:
            room = self.directory.room(name)
            # The registry was read for this logon: it may bring the news of a room that turned
            # encrypted (or clear) before the server's next look at it.
            self._turn(room, name in principal.encrypted, out)
            room.join(session)
            session.rooms[name] = room
            if name in keys:
                out.append(Send((session.conn,), p.OnRoomKey(name, keys[name]).to_json()))
            self._announce_status(room, out)
            if room.stream is not None:  # late entry: hear the talk already going on
                out.append(Send((session.conn,), self._stream_start(room.stream).to_json()))
        return out

    def _too_many_sessions(self, principal: Principal) -> bool:
        """A user already logged on ``max_sessions_per_principal`` times (one credential must
        not open a thousand sessions); a device replaces its old connection instead."""
        if principal.kind == "device":
            return False
        key = principal.key
        same = sum(1 for s in self.sessions.values() if s.principal and s.principal.key == key)
        if same < self.settings.max_sessions_per_principal:
            return False
        self.note(
            logging.WARNING, "sessions", "%s refused: %d sessions already", principal.name, same
        )
        return True

    def _announce_status(self, room: Room[Session[C]], out: list[Action[C]]) -> None:
        status = p.OnChannelStatus(
            room.name, "online", room.users_online, encrypted=room.encrypted
        ).to_json()
        out.append(Send(tuple(s.conn for s in room.members), status))

    # floor ---------------------------------------------------------------

    @staticmethod
    def _stream_start(stream: Stream[Session[C]]) -> p.OnStreamStart:
        return p.OnStreamStart(
            stream_id=stream.stream_id,
            channel=stream.room.name,
            from_=stream.talker_name,
            codec_header=stream.codec_header,
            packet_duration=stream.packet_duration,
            priority=stream.priority,
        )

    @staticmethod
    def _room_for(session: Session[C], channel: str | None, seq: int | None) -> Room[Session[C]]:
        if channel is None:
            if len(session.rooms) != 1:
                raise ProtocolError(p.NOT_ENOUGH_PARAMS, "channel", seq)
            return next(iter(session.rooms.values()))
        room = session.rooms.get(channel)
        if room is None:
            raise ProtocolError(p.NOT_AUTHORIZED, f"not in room {channel!r}", seq)
        return room

    def _on_start_stream(
        self, session: Session[C], m: p.StartStream, now: float, out: list[Action[C]]
    ) -> None:
        if session.listen_only:
            raise ProtocolError(p.LISTEN_ONLY_CONNECTION, "start_stream", m.seq)
        room = self._room_for(session, m.channel, m.seq)
        sframe = m.codec_header.sframe_suite is not None
        if sframe != room.encrypted:
            # Clear audio in an encrypted room, or SFrame where nobody holds a key: refused, so
            # that nobody hears what they cannot (or must not) decode.
            self.note(
                logging.INFO,
                "floor",
                "floor of %s refused to %s: %s stream in an %s room",
                room.name,
                session.name,
                "an SFrame" if sframe else "a clear",
                "encrypted" if room.encrypted else "unencrypted",
            )
            self._answer(
                session,
                m.seq,
                out,
                error=p.FAILED_TO_START_STREAM,
                reason=p.REASON_CLEAR_ROOM if sframe else p.REASON_ENCRYPTED_ROOM,
            )
            return
        priority = m.priority
        principal = session.principal
        assert principal is not None  # text() lets nothing else through before a logon
        who = f"{principal.kind}:{principal.name}"
        if priority == "emergency":
            if not principal.emergency:
                log.info("emergency in %s refused to %s: not allowed", room.name, session.name)
                self._answer(
                    session,
                    m.seq,
                    out,
                    error=p.FAILED_TO_START_STREAM,
                    reason=p.REASON_NOT_ALLOWED,
                )
                return
            if self.preemptions.blocked(who, now):
                log.warning(
                    "%s pre-empted %d times within %.0f s: its emergency counts as normal",
                    session.name,
                    EMERGENCY_PREEMPTIONS,
                    EMERGENCY_WINDOW,
                )
                priority = "normal"
        outcome = room.request_floor(
            session,
            session.name,
            self.directory.next_stream_id(),
            m.codec_header,
            m.packet_duration,
            priority,
            now,
        )
        if not isinstance(outcome, Granted):
            self.note(
                logging.INFO,
                "floor",
                "floor of %s refused to %s: %s",
                room.name,
                session.name,
                outcome.reason,
            )
            self._answer(
                session,
                m.seq,
                out,
                error=p.FAILED_TO_START_STREAM,
                reason=outcome.reason,
                talker=outcome.talker,
            )
            return
        if outcome.preempted is not None:
            self.preemptions.record(who, now)
            self._end_stream(outcome.preempted, p.REASON_PREEMPTED, out)
        stream = outcome.stream
        self.streams[stream.stream_id] = stream
        log.info("%s has the floor of %s (stream %d)", session.name, room.name, stream.stream_id)
        self._answer(session, m.seq, out, stream_id=stream.stream_id)
        out.append(
            Send(tuple(s.conn for s in stream.recipients), self._stream_start(stream).to_json())
        )

    def _end_stream(
        self,
        stream: Stream[Session[C]],
        reason: str | None,
        out: list[Action[C]],
        *,
        notify_talker: bool = True,
    ) -> None:
        """End a stream for everyone. Without a reason it is the talker's own stop."""
        stream.room.release_floor(stream)
        if self.streams.pop(stream.stream_id, None) is None:
            return
        stop = p.OnStreamStop(stream.stream_id, stream.room.name, reason).to_json()
        to = [s.conn for s in stream.room.members if s is not stream.talker]
        if reason is not None and notify_talker:
            to.append(stream.talker.conn)
            stream.talker.ended_streams.append(stream.stream_id)
        out.append(Send(tuple(to), stop))
        log.info(
            "stream %d of %s in %s ended (%s) after %d packets",
            stream.stream_id,
            stream.talker_name,
            stream.room.name,
            reason or "stopped",
            stream.next_packet_id,
        )

    def _on_stop_stream(self, session: Session[C], m: p.StopStream, out: list[Action[C]]) -> None:
        stream = self.streams.get(m.stream_id)
        if stream is not None and stream.talker is session:
            self._end_stream(stream, None, out)
        elif m.stream_id not in session.ended_streams:  # else: the server ended it already
            raise ProtocolError(p.FAILED_TO_STOP_STREAM, f"stream {m.stream_id}", m.seq)
        self._answer(session, m.seq, out)

    # text, pairing -------------------------------------------------------

    def _on_send_text_message(
        self, session: Session[C], m: p.SendTextMessage, out: list[Action[C]]
    ) -> None:
        if session.listen_only:
            raise ProtocolError(p.LISTEN_ONLY_CONNECTION, "send_text_message", m.seq)
        room = self._room_for(session, m.channel, m.seq)
        if room.encrypted:  # a text would cross the server in clear: not in an encrypted room
            self._answer(
                session, m.seq, out, error=p.NOT_AUTHORIZED, reason=p.REASON_ENCRYPTED_ROOM
            )
            return
        event = p.OnTextMessage(room.name, session.name, m.text, self.directory.next_message_id())
        to = tuple(
            s.conn
            for s in room.members
            if s is not session and (m.for_ is None or (s.principal and s.principal.name == m.for_))
        )
        out.append(Send(to, event.to_json()))
        self._answer(session, m.seq, out)

    def _on_pair(self, session: Session[C], m: p.Pair, now: float, out: list[Action[C]]) -> None:
        if self.auth_failures.blocked(session.address, now):
            self.note(
                logging.WARNING,
                "blocked",
                "pairing from %s refused: too many failed attempts",
                session.address,
            )
            self._answer(session, m.seq, out, error=p.NOT_AUTHORIZED, reason=p.REASON_RATE_LIMITED)
            return
        session.attempt = self.auth_failures.record(session.address, now)
        out.append(RedeemCode(session.conn, m))

    def pair_done(
        self, conn: C, m: p.Pair, result: Pairing | PairRefused, now: float
    ) -> list[Action[C]]:
        """The registry's answer to :class:`RedeemCode`."""
        self._now = now
        out: list[Action[C]] = []
        session = self.sessions.get(conn)
        if session is None or session.closing:
            return out
        attempt, session.attempt = session.attempt, None
        if attempt is not None and not (isinstance(result, PairRefused) and result.reason):
            self.auth_failures.forgive(session.address, attempt)  # paired, or a bad name only
        if isinstance(result, PairRefused):
            if result.reason is None:  # a device name that cannot be used
                exc = ProtocolError(p.INVALID_REQUEST, result.detail, m.seq)
                self.note(logging.INFO, "refused", "refused from %s: %s", session.name, exc)
                out.append(Send((conn,), p.error_response(exc)))
                return out
            self.note(
                logging.INFO,
                "refused",
                "pairing from %s refused: %s",
                session.address,
                result.reason,
            )
            self._answer(session, m.seq, out, error=p.NOT_AUTHORIZED, reason=result.reason)
            return out
        log.info("device %s paired from %s", result.device_name, session.address)
        self._answer(
            session,
            m.seq,
            out,
            auth_token=result.auth_token,
            channels=result.rooms,
            device_name=result.device_name,
        )
        return out

    def _on_unpair(self, session: Session[C], m: p.Unpair, out: list[Action[C]]) -> None:
        principal = session.principal
        if principal is None or principal.kind != "device":
            raise ProtocolError(p.INVALID_REQUEST, "only a paired device can unpair", m.seq)
        out.append(UnpairDevice(session.conn, m, principal.name))

    def unpair_done(self, conn: C, m: p.Unpair) -> list[Action[C]]:
        """The registry forgot the device: it is answered, leaves its rooms and is closed."""
        out: list[Action[C]] = []
        session = self.sessions.get(conn)
        if session is None:
            return out
        log.info("device %s unpaired itself", session.name)
        self._answer(session, m.seq, out)
        out += self.disconnected(conn)
        out.append(Close(conn, CLOSE_NORMAL, "unpaired"))
        return out

    # ------------------------------------------------------------------ audio (the hot path)

    def binary(self, conn: C, frame: bytes, now: float) -> list[Action[C]]:
        self._now = now
        session = self.sessions.get(conn)
        if session is None or session.closing:
            return []
        out: list[Action[C]] = []
        if not session.packet_limit.allow(now):
            self.note(logging.WARNING, "flood", "closing %s: audio packet flood", session.name)
            self._kick(session, p.FAILED_TO_SEND_DATA, "flood", out)
            return out
        try:
            if session.principal is None:
                raise ProtocolError(p.NOT_LOGGED_IN, "audio before logon")
            stream_id = p.audio_stream_id(frame)
            stream = self.streams.get(stream_id)
            if stream is None or stream.talker is not session:
                if stream_id in session.ended_streams:
                    return out  # in flight when the server ended it
                raise ProtocolError(p.INVALID_AUDIO_PACKET, f"stream {stream_id} is not yours")
        except ProtocolError as exc:
            if not session.refusal_limit.allow(now):  # a stream of junk, not a late packet
                self.note(logging.WARNING, "flood", "closing %s: invalid audio flood", session.name)
                self._kick(session, p.INVALID_AUDIO_PACKET, "flood", out)
                return out
            self.note(
                logging.INFO, "refused packet", "refused packet from %s: %s", session.name, exc
            )
            out.append(Send((conn,), p.error_response(exc)))
            return out
        packet_id = stream.take_packet_id()
        stream.last_packet = now
        self.packets_relayed += 1
        out.append(
            Send(
                tuple(s.conn for s in stream.recipients),
                p.renumber_audio_packet(frame, packet_id),
            )
        )
        return out

    # ------------------------------------------------------------------ time and admin changes

    @property
    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has something to do (None: nothing is waiting)."""
        s = self.settings
        times = [t for t in (x.logon_deadline for x in self.sessions.values()) if t is not None]
        for stream in self.streams.values():
            times.append(stream.started_at + s.max_talk_time)
            times.append(stream.last_packet + s.stream_idle_timeout)
        return min(times, default=None)

    def tick(self, now: float) -> list[Action[C]]:
        """Whatever is due: connections that did not log on in time are closed; a talk ends at
        the maximum talk time, or when its audio stopped coming (a dead link the pings have not
        caught yet, a client that forgot stop_stream)."""
        self._now = now
        out: list[Action[C]] = []
        s = self.settings
        for session in list(self.sessions.values()):
            deadline = session.logon_deadline
            if deadline is not None and now >= deadline and not session.closing:
                session.logon_deadline = None
                self.note(
                    logging.INFO,
                    "logon timeout",
                    "closing %s: no logon within %.0f s",
                    session.name,
                    s.logon_timeout,
                )
                session.closing = True
                out.append(Close(session.conn, CLOSE_POLICY, "logon timeout"))
        for stream in list(self.streams.values()):
            if now >= stream.started_at + s.max_talk_time:
                self._end_stream(stream, p.REASON_TIMEOUT, out)
            elif now >= stream.last_packet + s.stream_idle_timeout:
                log.warning(
                    "stream %d of %s: no audio for %.0f s",
                    stream.stream_id,
                    stream.talker_name,
                    s.stream_idle_timeout,
                )
                self._end_stream(stream, p.REASON_IDLE, out)
        return out

    def presence(self) -> dict[str, RoomPresence]:
        """Who is in each room with members, and who talks there: what the web console shows.
        A principal with several connections in a room is listed once."""
        out: dict[str, RoomPresence] = {}
        for room in self.directory.rooms():
            online = {s.principal.key: None for s in room.members if s.principal is not None}
            talker = room.stream.talker_name if room.stream is not None else None
            if online or talker is not None:
                out[room.name] = RoomPresence(tuple(online), talker)
        return out

    def live_principals(self) -> set[Principal]:
        """Whose connections are logged on: what to look up when the registry changes."""
        return {s.principal for s in self.sessions.values() if s.principal is not None}

    def principals_changed(self, current: Mapping[Principal, Principal | None]) -> list[Action[C]]:
        """What the registry says of logged-on principals now (see :meth:`live_principals`).

        None: the credential is no longer good (a device revoked, unpaired or paired again with
        a new token; a user removed): its connections are told and closed at once, and nothing
        they send is relayed or answered after. Fewer rooms (a room removed, a grant taken
        back): the connection leaves those rooms, told by ``on_channel_status`` ``offline``;
        a talk it held there ends for the others. A room turned encrypted or clear: see
        :meth:`_turn`. A room key newly sealed for it: sent (``on_room_key``) to each of its
        connections in that room."""
        out: list[Action[C]] = []
        for session in list(self.sessions.values()):
            old = session.principal
            if old is None or old not in current:
                continue
            new = current[old]
            if new is None:
                log.warning("%s %s revoked: disconnecting it", old.kind, old.name)
                out += self.disconnected(session.conn)
                self._kick(session, p.NOT_AUTHORIZED, "revoked", out)
                continue
            session.principal = new
            # Rooms it may still be in that turned encrypted (or clear) first, whoever's
            # connection brings the news: the talk of the wrong kind ends for everyone, its
            # talker included, before the clear clients leave.
            for name, room in list(session.rooms.items()):
                if name in new.rooms and self._turn(room, name in new.encrypted, out):
                    self._announce_status(room, out)
            gone = [r for r in session.rooms if r not in new.rooms]
            for name in gone:  # (a clear client left a room turned encrypted in _turn above)
                log.info("%s may no longer be in %s: it leaves", old.name, name)
                self._leave(session, session.rooms[name], out)
            before = dict(old.room_keys)
            for name, key in new.room_keys:  # sealed for it by the key authority: a rotation,
                if name in session.rooms and before.get(name) != key:  # an approval
                    out.append(Send((session.conn,), p.OnRoomKey(name, key).to_json()))
        return out

    def _leave(
        self,
        session: Session[C],
        room: Room[Session[C]],
        out: list[Action[C]],
        *,
        announce: bool = True,
    ) -> None:
        """Take a connection out of one room (it stays connected): a talk it held there ends
        for the others, it is told ``offline`` and (``announce``) the others the room's new
        count."""
        del session.rooms[room.name]
        ended = room.leave(session)
        if ended is not None:
            session.ended_streams.append(ended.stream_id)
            self._end_stream(ended, p.REASON_DISCONNECTED, out, notify_talker=False)
        out.append(Send((session.conn,), p.OnChannelStatus(room.name, "offline").to_json()))
        if announce:
            self._announce_status(room, out)

    def _turn(self, room: Room[Session[C]], encrypted: bool, out: list[Action[C]]) -> bool:
        """The registry says ``room`` is encrypted (or clear): False if the server knew. Else a
        talk of the wrong kind for it now ends, for everyone, talker included (reason
        ``encrypted room``), and clients without an identity key leave a room that turned
        encrypted (``offline``): none of them hears a talk it cannot decode. The caller tells
        the members that stay the room's new status."""
        if room.encrypted == encrypted:
            return False
        room.encrypted = encrypted
        if room.members:
            log.info("room %s is now %s", room.name, "encrypted" if encrypted else "clear")
        stream = room.stream
        if stream is not None and (stream.codec_header.sframe_suite is not None) != encrypted:
            self._end_stream(stream, p.REASON_ENCRYPTED_ROOM, out)
        if encrypted:
            for member in [s for s in room.members if not s.sframe]:
                log.info("%s has no identity key: it leaves %s", member.name, room.name)
                self._leave(member, room, out, announce=False)
        return True

    def shutdown(self) -> list[Action[C]]:
        """The server stops: every talk ends (the connections are then closed by the caller)."""
        out: list[Action[C]] = []
        for stream in list(self.streams.values()):
            self._end_stream(stream, None, out)
        return out

    def members(self, room: str) -> Iterator[Session[C]]:
        found = self.directory.get(room)
        return iter(found.members) if found is not None else iter(())
