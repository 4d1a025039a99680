"""The device's side of the wire, sans-I/O: what a device says to the room server, and what it
makes of the answers.

:class:`ClientCore` takes what happens on one device's link (a connection opened or closed, a
text or binary frame, time passing, the device asking to talk) with the time passed in, and
returns :data:`Effect` values, in order: :data:`Action` values for the I/O layer to carry out
(send a frame, close the connection) and :data:`Outcome` values for the device to act on (online,
offline, revoked, the floor granted or refused, incoming streams and audio). The asyncio link
(:class:`pttd.radio.link.ServerLink`) only moves frames, runs one timer
(:attr:`ClientCore.next_deadline`) and sleeps for :meth:`ClientCore.retry_delay`. Nothing here
reads a clock, draws a random number of its own, sleeps, touches a socket or starts a thread.

The rules, each in one place:

* logon: the first thing said on a connection, built from the credential (device token, every
  room of the pairing, version, platform, listen-only); nothing else is sent until its answer;
  no answer within ``answer_timeout`` closes the connection (:meth:`ClientCore.opened`,
  :meth:`ClientCore.tick`);
* answers: matched to requests by ``seq`` (one counter for the life of the core, from 1); each
  pending request is answered, timed out at its deadline, or dropped when the connection goes;
  answers nobody waits for are dropped (:meth:`ClientCore._on_response`);
* own streams: at most one, the one the server granted; audio goes out only under it; a stream
  the server ends is ours no more; a grant that comes after its request timed out (or while
  another stream is ours) is stopped at once (:meth:`ClientCore._on_stream_answer`);
* revocation: decided on one of two explicit signals only, and nothing else (an ``on_error``
  ``not authorized`` on its own never revokes): the answer to *our* logon is ``not authorized``
  without a ``reason`` (``rate limited``, ``too many sessions``, ``encrypted room`` … say the
  credential is good), or the server closes the connection with 1008 ``revoked``
  (:meth:`ClientCore._on_logon_answer`, :meth:`ClientCore.closed`);
* encrypted rooms: the logon carries the device's public identity key; a talk in an encrypted
  room announces SFrame in its codec header; the sealed room keys and room states the server
  passes on go to the device, which alone can open them.
* reconnecting: exponential back-off with full jitter (:class:`Backoff`), afresh after a session
  that got online; none after a revocation (the device waits to be paired again).
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Final, Literal, Protocol, TypeAlias

from pttd import __version__
from pttd.errors import ProtocolError
from pttd.wire import messages as p

CLOSE_POLICY: Final = 1008  # the server's close code for revocations, floods, logon time-outs
REVOKED_REASON: Final = "revoked"  # with CLOSE_POLICY: the server revoked this device
CLOSE_NORMAL: Final = 1000
NO_ANSWER: Final = "no answer from the server"
OFFLINE: Final = "offline"  # why a start_stream is refused before it is sent
LISTEN_ONLY: Final = "listen only"
GIVEN_UP_KEPT: Final = 16  # timed-out start_stream seqs remembered, to stop their late grants

RequestKind: TypeAlias = Literal["logon", "start_stream", "unpair"]
Result: TypeAlias = Literal["refused", "failed", "ended"]  # how a session ended


class Account(Protocol):
    """What a logon is built from (a stored :class:`pttd.radio.store.Credential` is one)."""

    @property
    def auth_token(self) -> str: ...

    @property
    def rooms(self) -> tuple[str, ...]: ...

    @property
    def device_name(self) -> str: ...

    @property
    def identity_key(self) -> str | None:
        """The device's public identity key (text), made at pairing: for encrypted rooms."""


@dataclass(frozen=True, slots=True)
class ClientSettings:
    answer_timeout: float = 5.0  # seconds for the answer to a request with a seq
    backoff_initial: float = 0.2
    backoff_max: float = 4.0
    listen_only: bool = False
    version: str = __version__
    platform_type: str = "pttd"


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``data`` on the connection: a text frame, or bytes (an audio packet)."""

    data: str | bytes


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection with a websocket close ``code`` and ``reason``; the I/O layer then
    reports :meth:`ClientCore.closed` as for any other end."""

    code: int
    reason: str


Action: TypeAlias = Send | Close

# --------------------------------------------------------------------------- outcomes


@dataclass(frozen=True, slots=True)
class Online:
    """Logged on; the rooms of the logon are joined (``encrypted``: those that are encrypted)."""

    t: float
    rooms: tuple[str, ...]
    encrypted: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Offline:
    """A session that was online is over."""

    t: float
    reason: str


@dataclass(frozen=True, slots=True)
class Revoked:
    """The credential is refused for good: stop until the device is paired again."""

    t: float
    why: str


@dataclass(frozen=True, slots=True)
class SessionEnded:
    """A connection attempt is over (after :class:`Offline` and :class:`Revoked`, if any)."""

    t: float
    result: Result
    error: str  # why, in words ("" when the credential was given up)
    was_online: bool


@dataclass(frozen=True, slots=True)
class Granted:
    """The floor is ours: ``stream_id`` is our stream, audio may go under it."""

    t: float
    request: int
    stream_id: int


@dataclass(frozen=True, slots=True)
class Denied:
    """A start_stream refused (by the server, or at once: offline, listen-only)."""

    t: float
    request: int
    reason: str
    talker: str = ""


@dataclass(frozen=True, slots=True)
class OwnStreamEnded:
    """The server ended our stream (its time-out, an emergency pre-empting us, idle)."""

    t: float
    stream_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class UnpairAnswered:
    """The answer to :meth:`ClientCore.unpair`'s request ``seq`` (or its time-out, or the
    connection going first: ``confirmed`` False, ``why`` says which)."""

    t: float
    seq: int
    confirmed: bool
    why: str = ""


@dataclass(frozen=True, slots=True)
class TimedOut:
    """No answer to request ``seq`` within ``answer_timeout``. For a start_stream the device's
    own timer speaks to the operator; a grant that still comes is stopped."""

    t: float
    seq: int
    kind: RequestKind


@dataclass(frozen=True, slots=True)
class ServerError:
    """An ``on_error`` from the server: worth a log line, nothing more."""

    t: float
    error: str


@dataclass(frozen=True, slots=True)
class BadFrame:
    """A frame from the server that did not parse (skipped)."""

    t: float
    detail: str
    audio: bool


Heard: TypeAlias = (
    p.OnStreamStart
    | p.OnStreamStop
    | p.OnTextMessage
    | p.AudioPacket
    | p.OnRoomKey
    | p.OnChannelStatus
)
"""Incoming streams, their audio, text messages, sealed room keys and room states, passed on as
parsed."""

Outcome: TypeAlias = (
    Online
    | Offline
    | Revoked
    | SessionEnded
    | Granted
    | Denied
    | OwnStreamEnded
    | UnpairAnswered
    | TimedOut
    | ServerError
    | BadFrame
    | Heard
)
Effect: TypeAlias = Action | Outcome


# --------------------------------------------------------------------------- back-off


@dataclass
class Backoff:
    """Exponential back-off with full jitter: each wait is ``r × current`` for a random ``r`` in
    [0, 1) passed in; ``current`` starts at ``initial`` and doubles up to ``cap``."""

    initial: float
    cap: float
    current: float = field(init=False)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.current = max(0.0, min(self.initial, self.cap))

    def next(self, r: float) -> float:
        delay = min(max(r, 0.0), 1.0) * self.current
        self.current = min(self.current * 2, self.cap)
        return delay


# --------------------------------------------------------------------------- the core


class Phase(enum.Enum):
    IDLE = "idle"  # no connection (connecting, or between attempts)
    LOGGING_ON = "logging on"  # connected, the logon sent, its answer awaited
    ONLINE = "online"
    CLOSING = "closing"  # we asked to close: nothing more is said or heard


@dataclass(frozen=True, slots=True)
class Pending:
    kind: RequestKind
    deadline: float
    request: int = 0  # the device's number for a start_stream


class ClientCore:
    """One device's link rules; see the module's docstring. ``rng`` returns numbers in [0, 1)
    (:func:`random.random`): the back-off's jitter."""

    def __init__(
        self,
        codec_header: p.CodecHeader,
        settings: ClientSettings | None = None,
        *,
        rng: Callable[[], float],
    ) -> None:
        self.codec_header = codec_header
        self._rng = rng
        self.settings = settings or ClientSettings()
        self.phase = Phase.IDLE
        self.rooms: tuple[str, ...] = ()
        self.pending: dict[int, Pending] = {}
        self.own_stream: int | None = None
        self.given_up: deque[int] = deque(maxlen=GIVEN_UP_KEPT)  # timed-out start_streams
        self.last_error = ""
        self.result: Result | None = None  # of the last session
        self.sessions_online = 0
        self._seq = 0
        self._was_online = False
        self._revoked = ""  # why, once decided for this session
        self._failure = ""  # why the core closed this session (no logon answer …)
        self._abandoned = False

    # ------------------------------------------------------------------ state

    @property
    def settings(self) -> ClientSettings:
        return self._settings

    @settings.setter
    def settings(self, settings: ClientSettings) -> None:
        """New numbers (the back-off starts afresh with them)."""
        self._settings = settings
        self.backoff = Backoff(settings.backoff_initial, settings.backoff_max)

    @property
    def online(self) -> bool:
        return self.phase is Phase.ONLINE

    def _next_seq(self) -> int:
        self._seq = self._seq % p.MAX_U32 + 1
        return self._seq

    # ------------------------------------------------------------------ the connection

    def opened(self, account: Account, now: float) -> list[Effect]:
        """A connection is open: log on with ``account``."""
        self._forget_session()
        self.result = None
        self.phase = Phase.LOGGING_ON
        self.rooms = account.rooms
        seq = self._next_seq()
        self.pending[seq] = Pending("logon", now + self.settings.answer_timeout)
        s = self.settings
        logon = p.Logon(
            channels=account.rooms,
            seq=seq,
            auth_token=account.auth_token,
            listen_only=s.listen_only,
            version=s.version,
            platform_type=s.platform_type,
            platform_name=account.device_name,
            identity_key=account.identity_key,
        )
        return [Send(logon.to_json())]

    def _forget_session(self) -> None:
        """Nothing of a session outlives it (but its :attr:`result`, for the back-off)."""
        self.pending.clear()
        self.given_up.clear()
        self.own_stream = None
        self._was_online = False
        self._revoked = ""
        self._failure = ""
        self._abandoned = False

    def give_up(self) -> list[Effect]:
        """The credential was given up (unpaired): close this connection, say nothing more."""
        if self.phase in (Phase.IDLE, Phase.CLOSING):
            return []
        self._abandoned = True
        return self._close(CLOSE_NORMAL, "")

    def _close(self, code: int, reason: str) -> list[Effect]:
        self.phase = Phase.CLOSING
        self.own_stream = None  # nothing more goes out under it
        return [Close(code, reason)]

    def closed(
        self, now: float, code: int | None = None, reason: str = "", error: str = ""
    ) -> list[Effect]:
        """The connection attempt is over: closed by either side (``code``, ``reason``: the
        close frame received, if any), or never opened (``error`` says why, in words)."""
        out: list[Effect] = []
        was_online = self._was_online
        for seq, pending in sorted(self.pending.items()):
            if pending.kind == "unpair":
                out.append(UnpairAnswered(now, seq, False, "the connection closed"))
        if not self._revoked and code == CLOSE_POLICY and reason == REVOKED_REASON:
            self._revoked = "the server revoked this device's credential"
        result: Result
        if self._abandoned:  # the credential is gone already: nothing more to decide
            result, self.last_error = "ended", ""
        elif self._revoked:
            result, self.last_error = "refused", self._revoked
        elif was_online:
            result = "ended"
            self.last_error = error or self._failure or f"connection closed ({code})"
        else:
            result = "failed"
            self.last_error = (
                self._failure or error or (f"connection closed ({code})" if code else "")
            )
        if was_online:
            out.append(Offline(now, self.last_error))
        if result == "refused":
            out.append(Revoked(now, self.last_error))
        self._forget_session()
        self.phase = Phase.IDLE
        self.result = result
        out.append(SessionEnded(now, result, self.last_error, was_online))
        return out

    def retry_delay(self) -> float | None:
        """How long to wait before the next attempt; None: not until the device is paired again
        (the credential was refused)."""
        if self.result == "refused":
            self.backoff.reset()  # a new pairing starts afresh
            return None
        return self.backoff.next(self._rng())

    # ------------------------------------------------------------------ frames in

    def text(self, frame: str, now: float) -> list[Effect]:
        if self.phase not in (Phase.LOGGING_ON, Phase.ONLINE):
            return []  # closing: nothing more is heard
        try:
            message = p.parse_server_message(frame)
        except ProtocolError as exc:
            out: list[Effect] = [BadFrame(now, str(exc), audio=False)]
            if self.phase is Phase.LOGGING_ON:  # no sense talking to it
                self._failure = f"server sent a bad message: {exc}"
                out += self._close(CLOSE_NORMAL, "")
            return out
        if isinstance(message, p.Response):
            return self._on_response(message, now)
        if self.phase is not Phase.ONLINE:
            return []  # nothing but the logon's answer counts before it
        if isinstance(message, p.OnStreamStop) and message.stream_id == self.own_stream:
            self.own_stream = None
            return [OwnStreamEnded(now, message.stream_id, message.reason or "")]
        if isinstance(message, p.OnError):
            # Never a revocation on its own: that is the logon's answer or the 1008 close.
            return [ServerError(now, message.error)]
        return [message]

    def binary(self, frame: bytes, now: float) -> list[Effect]:
        if self.phase is not Phase.ONLINE:
            return []
        try:
            return [p.parse_audio_packet(frame)]
        except ProtocolError as exc:
            return [BadFrame(now, str(exc), audio=True)]

    def _on_response(self, answer: p.Response, now: float) -> list[Effect]:
        pending = self.pending.pop(answer.seq, None)
        if pending is None:
            if answer.seq in self.given_up:
                self.given_up.remove(answer.seq)
                if answer.success and answer.stream_id is not None:
                    return [Send(p.StopStream(answer.stream_id).to_json())]  # nobody wants it
            return []  # unknown, or the answer to something nobody waits for
        if pending.kind == "logon":
            return self._on_logon_answer(answer, now)
        if pending.kind == "start_stream":
            return self._on_stream_answer(answer, pending, now)
        return [UnpairAnswered(now, answer.seq, answer.success, answer.error or "")]

    def _on_logon_answer(self, answer: p.Response, now: float) -> list[Effect]:
        if answer.success:
            self.phase = Phase.ONLINE
            self._was_online = True
            self.sessions_online += 1
            self.backoff.reset()  # this session got online: the next wait starts afresh
            self.last_error = ""
            return [Online(now, self.rooms, answer.encrypted or ())]
        error = f"logon refused: {answer.error}" + (f" ({answer.reason})" if answer.reason else "")
        if answer.error == p.NOT_AUTHORIZED and answer.reason is None:
            self._revoked = error  # the credential itself is refused: for good
        else:
            self._failure = error  # rate limited, or anything else: try again later
        return self._close(CLOSE_NORMAL, "")

    def _on_stream_answer(self, answer: p.Response, pending: Pending, now: float) -> list[Effect]:
        stream_id = answer.stream_id
        if not answer.success or stream_id is None:
            reason = answer.reason or answer.error or ""
            return [Denied(now, pending.request, reason, answer.talker or "")]
        if self.own_stream is not None:  # at most one stream of ours: this one goes at once
            stop = p.StopStream(stream_id).to_json()
            return [Send(stop), Denied(now, pending.request, p.REASON_BUSY)]
        self.own_stream = stream_id
        return [Granted(now, pending.request, stream_id)]

    # ------------------------------------------------------------------ time

    @property
    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has something to do (None: nothing is waiting)."""
        return min((x.deadline for x in self.pending.values()), default=None)

    def tick(self, now: float) -> list[Effect]:
        """Requests not answered by their deadline are given up: a logon closes the connection,
        a start_stream's late grant will be stopped, an unpair is not confirmed."""
        out: list[Effect] = []
        for seq, pending in sorted(self.pending.items()):
            if now < pending.deadline:
                continue
            del self.pending[seq]
            out.append(TimedOut(now, seq, pending.kind))
            if pending.kind == "logon":
                self._failure = NO_ANSWER
                out += self._close(CLOSE_NORMAL, "")
            elif pending.kind == "start_stream":
                self.given_up.append(seq)
            else:
                out.append(UnpairAnswered(now, seq, False, NO_ANSWER))
        return out

    # ------------------------------------------------------------------ the device speaks

    def start_stream(
        self,
        request: int,
        room: str,
        priority: p.Priority,
        now: float,
        sframe_suite: int | None = None,
    ) -> list[Effect]:
        """Ask for the floor of ``room``; the answer comes back as :class:`Granted` or
        :class:`Denied` for ``request`` (at once when offline or listen-only). ``sframe_suite``:
        the packets will be SFrame under this cipher suite (an encrypted room)."""
        if not self.online:
            return [Denied(now, request, OFFLINE)]
        if self.settings.listen_only:
            return [Denied(now, request, LISTEN_ONLY)]
        seq = self._next_seq()
        self.pending[seq] = Pending("start_stream", now + self.settings.answer_timeout, request)
        header = replace(self.codec_header, sframe_suite=sframe_suite)
        message = p.StartStream(
            header,
            header.packet_duration_ms,
            seq=seq,
            channel=room,
            priority=priority,
        )
        return [Send(message.to_json())]

    def stop_stream(self, stream_id: int, room: str | None) -> list[Effect]:
        """Release the floor: only our own stream is stopped (one the server ended, or one of a
        connection gone, is not ours any more)."""
        if not self.online or stream_id != self.own_stream:
            return []
        self.own_stream = None
        return [Send(p.StopStream(stream_id, channel=room).to_json())]

    def send_audio(self, stream_id: int, payload: bytes) -> list[Effect]:
        """One audio packet, sent only under our granted stream."""
        if stream_id != self.own_stream or not self.online:
            return []
        return [Send(p.AudioPacket(stream_id, 0, payload).encode())]

    def send_text(self, room: str, text: str) -> list[Effect]:
        if not self.online or self.settings.listen_only:
            return []
        return [Send(p.SendTextMessage(room, text).to_json())]

    def unpair(self, now: float) -> tuple[int | None, list[Effect]]:
        """Give the credential up over the live connection: the request's seq (None: offline,
        nothing sent) and what to do; :class:`UnpairAnswered` for that seq follows."""
        if not self.online:
            return None, []
        seq = self._next_seq()
        self.pending[seq] = Pending("unpair", now + self.settings.answer_timeout)
        return seq, [Send(p.Unpair(seq=seq).to_json())]
