"""The wire protocol (Zello Channel API plus pttd's extensions), sans-I/O.

Text frames carry JSON control messages, binary frames carry audio packets. This module turns
frames into typed, immutable messages and back, and nothing else: no sockets, no clocks.

Parsing raises only :class:`pttd.errors.ProtocolError`, whose ``error`` is the exact Channel-API
error string to answer with. For every valid message ``m``, ``parse(m.to_json()) == m``.

Writing is derived, not written per message: each message class lists its JSON keys in wire
order (:func:`_writes`), and a field's metadata (:func:`_wire`) says where it differs from the
plain rule: its JSON name when not its own (``for_`` is ``for``, see :func:`json_name`), and a
value left out as ``None`` is (``listen_only`` false, ``priority`` normal). ``None`` is always
left out, a tuple is a JSON list and a :class:`CodecHeader` its base64 text.

Size limits (why these numbers):

* ``MAX_BINARY_FRAME`` = 8 KiB. One Opus packet lasts at most 120 ms and Opus peaks at
  510 kbit/s, so a packet never exceeds 7 650 bytes; with the 9-byte header that fits in 8 KiB.
* ``MAX_TEXT_FRAME`` = 64 KiB, counted in UTF-8 bytes (what the websocket carries). Every
  valid message serialises within it, so ``parse(m.to_json()) == m`` holds at the limits too.
  A character costs at most 6 bytes once serialised (4 in UTF-8, 6 for an escaped control
  character), so the worst cases are a logon with three secrets of ``MAX_SECRET`` characters
  and ``MAX_ROOMS`` room names of ``MAX_NAME`` characters (~44 KiB) and a response carrying an
  error of ``MAX_TEXT`` characters, two tokens and ``MAX_ROOMS`` room names (~49 KiB). Even
  64 rooms of 64 four-byte characters alone come to 16 KiB, which is why 16 KiB was too small.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Callable
from dataclasses import Field, dataclass, field, fields
from typing import Any, ClassVar, Final, Literal, TypeAlias, TypeVar

from pttd.errors import ProtocolError

MAX_TEXT_FRAME: Final = 64 * 1024
MAX_BINARY_FRAME: Final = 8 * 1024
MAX_FRAME: Final = max(MAX_TEXT_FRAME, MAX_BINARY_FRAME)
MAX_NAME: Final = 64  # room, user and device names
MAX_SECRET: Final = 1024  # tokens, passwords, codes
MAX_TEXT: Final = 2000  # characters of a text message
MAX_ROOMS: Final = 64  # rooms in one logon
MAX_U32: Final = 0xFFFF_FFFF
MAX_KEY: Final = 2048  # characters of an identity public key (base64url; ML-KEM-768 + X25519)
MAX_ROOM_KEY: Final = 61440  # characters of a sealed room key (base64url): 45 KiB of bytes
SFRAME_SUITES: Final = (1, 2, 3, 4, 5)  # RFC 9605 cipher suites a codec_header may announce

# Exact Channel-API error strings.
UNKNOWN_COMMAND: Final = "unknown command"
INTERNAL_SERVER_ERROR: Final = "internal server error"
INVALID_JSON: Final = "invalid json"
INVALID_REQUEST: Final = "invalid request"
NOT_AUTHORIZED: Final = "not authorized"
NOT_LOGGED_IN: Final = "not logged in"
NOT_ENOUGH_PARAMS: Final = "not enough params"
SERVER_CLOSED_CONNECTION: Final = "server closed connection"
CHANNEL_NOT_READY: Final = "channel is not ready"
LISTEN_ONLY_CONNECTION: Final = "listen only connection"
FAILED_TO_START_STREAM: Final = "failed to start stream"
FAILED_TO_STOP_STREAM: Final = "failed to stop stream"
FAILED_TO_SEND_DATA: Final = "failed to send data"
INVALID_AUDIO_PACKET: Final = "invalid audio packet"

# pttd's extension reasons (``reason`` field of errors and ``on_stream_stop``).
REASON_BUSY: Final = "busy"
REASON_TIMEOUT: Final = "timeout"
REASON_PREEMPTED: Final = "preempted"
REASON_DISCONNECTED: Final = "disconnected"
REASON_IDLE: Final = "idle"  # the talker's audio stopped coming
REASON_INVALID_CODE: Final = "invalid code"
REASON_EXPIRED_CODE: Final = "expired code"
REASON_USED_CODE: Final = "used code"
REASON_RATE_LIMITED: Final = "rate limited"
REASON_TOO_MANY_SESSIONS: Final = "too many sessions"  # one user's connections at once
REASON_NOT_ALLOWED: Final = "not allowed"  # emergency priority not granted
REASON_ENCRYPTED_ROOM: Final = "encrypted room"  # clear audio, text or client in one
REASON_CLEAR_ROOM: Final = "clear room"  # an SFrame stream in a room that is not encrypted

Priority: TypeAlias = Literal["normal", "emergency"]
ChannelStatus: TypeAlias = Literal["online", "offline"]

OPUS_SAMPLE_RATES: Final = (8000, 12000, 16000, 24000, 48000)
OPUS_FRAME_MS: Final = (5, 10, 20, 40, 60)  # whole-millisecond Opus frame sizes

# --------------------------------------------------------------------------- codec header


@dataclass(frozen=True, slots=True)
class CodecHeader:
    """The ``codec_header``: rate (16-bit LE), frames per packet, frame size in ms (4 bytes, as
    in the Channel API); [pttd] followed, for an SFrame-encrypted stream, by the RFC 9605 cipher
    suite (16-bit BE): 6 bytes."""

    sample_rate: int = 48000
    frames_per_packet: int = 1
    frame_size_ms: int = 20
    sframe_suite: int | None = None  # every packet's payload is SFrame under this suite

    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<HBB")
    _SUITE: ClassVar[struct.Struct] = struct.Struct(">H")

    def __post_init__(self) -> None:
        if self.sample_rate not in OPUS_SAMPLE_RATES:
            raise ProtocolError(INVALID_REQUEST, f"codec_header: sample rate {self.sample_rate}")
        if self.frame_size_ms not in OPUS_FRAME_MS:
            raise ProtocolError(INVALID_REQUEST, f"codec_header: frame size {self.frame_size_ms}")
        if not 1 <= self.frames_per_packet <= 120 // self.frame_size_ms:
            raise ProtocolError(
                INVALID_REQUEST, f"codec_header: {self.frames_per_packet} frames per packet"
            )
        if self.sframe_suite is not None and self.sframe_suite not in SFRAME_SUITES:
            raise ProtocolError(INVALID_REQUEST, f"codec_header: SFrame suite {self.sframe_suite}")

    @property
    def packet_duration_ms(self) -> int:
        return self.frames_per_packet * self.frame_size_ms

    def encode(self) -> str:
        raw = self._STRUCT.pack(self.sample_rate, self.frames_per_packet, self.frame_size_ms)
        if self.sframe_suite is not None:
            raw += self._SUITE.pack(self.sframe_suite)
        return base64.b64encode(raw).decode("ascii")

    @classmethod
    def decode(cls, text: str) -> CodecHeader:
        try:
            raw = base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
            raise ProtocolError(INVALID_REQUEST, "codec_header is not base64") from exc
        if len(raw) not in (cls._STRUCT.size, cls._STRUCT.size + cls._SUITE.size):
            raise ProtocolError(INVALID_REQUEST, f"codec_header has {len(raw)} bytes, not 4 or 6")
        rate, frames, size = cls._STRUCT.unpack_from(raw)
        suite = cls._SUITE.unpack_from(raw, cls._STRUCT.size)[0] if len(raw) > 4 else None
        return cls(rate, frames, size, suite)


# --------------------------------------------------------------------------- audio packets

AUDIO_PACKET_TYPE: Final = 0x01
_AUDIO_HEADER: Final = struct.Struct(">BII")
AUDIO_HEADER_SIZE: Final = _AUDIO_HEADER.size  # 9


@dataclass(frozen=True, slots=True)
class AudioPacket:
    """A binary stream packet: type 0x01, stream_id (u32 BE), packet_id (u32 BE), Opus data."""

    stream_id: int
    packet_id: int
    payload: bytes

    def __post_init__(self) -> None:
        if not (0 <= self.stream_id <= MAX_U32 and 0 <= self.packet_id <= MAX_U32):
            raise ProtocolError(INVALID_AUDIO_PACKET, "stream_id or packet_id out of range")
        if not 0 < len(self.payload) <= MAX_BINARY_FRAME - AUDIO_HEADER_SIZE:
            raise ProtocolError(INVALID_AUDIO_PACKET, f"payload of {len(self.payload)} bytes")

    def encode(self) -> bytes:
        return _AUDIO_HEADER.pack(AUDIO_PACKET_TYPE, self.stream_id, self.packet_id) + self.payload


def parse_audio_packet(frame: bytes | bytearray | memoryview) -> AudioPacket:
    """Parse one binary frame; raise ``ProtocolError("invalid audio packet")`` if malformed."""
    if len(frame) > MAX_BINARY_FRAME:
        raise ProtocolError(INVALID_AUDIO_PACKET, f"binary frame of {len(frame)} bytes")
    if len(frame) <= AUDIO_HEADER_SIZE:
        raise ProtocolError(INVALID_AUDIO_PACKET, f"binary frame of {len(frame)} bytes")
    kind, stream_id, packet_id = _AUDIO_HEADER.unpack_from(frame)
    if kind != AUDIO_PACKET_TYPE:
        raise ProtocolError(INVALID_AUDIO_PACKET, f"packet type {kind:#04x}")
    return AudioPacket(stream_id, packet_id, bytes(frame[AUDIO_HEADER_SIZE:]))


def audio_stream_id(frame: bytes | bytearray | memoryview) -> int:
    """The stream_id of a binary frame, validated as :func:`parse_audio_packet` would.

    The relay's hot path: it checks the header without copying the payload.
    """
    n = len(frame)
    if not AUDIO_HEADER_SIZE < n <= MAX_BINARY_FRAME or frame[0] != AUDIO_PACKET_TYPE:
        raise ProtocolError(INVALID_AUDIO_PACKET, f"binary frame of {n} bytes")
    stream_id: int = _AUDIO_HEADER.unpack_from(frame)[1]
    return stream_id


def renumber_audio_packet(frame: bytes | bytearray | memoryview, packet_id: int) -> bytes:
    """The same frame with its packet_id replaced (the server numbers packets itself)."""
    out = bytearray(frame)
    struct.pack_into(">I", out, 5, packet_id & MAX_U32)
    return bytes(out)


# --------------------------------------------------------------------------- field readers


class _Fields:
    """Typed access to a JSON object's fields, raising the right protocol error."""

    __slots__ = ("obj", "seq")

    def __init__(self, obj: dict[str, Any], seq: int | None) -> None:
        self.obj = obj
        self.seq = seq

    def _missing(self, key: str) -> ProtocolError:
        return ProtocolError(NOT_ENOUGH_PARAMS, f"missing {key!r}", self.seq)

    def _bad(self, key: str, why: str) -> ProtocolError:
        return ProtocolError(INVALID_REQUEST, f"{key!r} {why}", self.seq)

    def string(self, key: str, *, limit: int = MAX_NAME, empty: bool = False) -> str:
        value = self.opt_string(key, limit=limit, empty=empty)
        if value is None:
            raise self._missing(key)
        return value

    def opt_string(self, key: str, *, limit: int = MAX_NAME, empty: bool = False) -> str | None:
        value = self.obj.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self._bad(key, "must be a string")
        if len(value) > limit:
            raise self._bad(key, f"is longer than {limit} characters")
        if not value and not empty:
            raise self._bad(key, "must not be empty")
        if not _is_utf8(value):
            raise self._bad(key, "is not valid Unicode")
        return value

    def integer(self, key: str, *, low: int = 0, high: int = MAX_U32) -> int:
        value = self.opt_integer(key, low=low, high=high)
        if value is None:
            raise self._missing(key)
        return value

    def opt_integer(self, key: str, *, low: int = 0, high: int = MAX_U32) -> int | None:
        value = self.obj.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._bad(key, "must be an integer")
        if not low <= value <= high:
            raise self._bad(key, f"must be between {low} and {high}")
        return value

    def opt_bool(self, key: str) -> bool | None:
        value = self.obj.get(key)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise self._bad(key, "must be true or false")
        return value

    def key_text(self, key: str, limit: int) -> str | None:
        """An optional base64url text (a public key, a sealed room key): ASCII only."""
        value = self.opt_string(key, limit=limit)
        if value is not None and value.strip(_BASE64URL):
            raise self._bad(key, "must be base64url text")
        return value

    def choice(self, key: str, allowed: tuple[str, ...], default: str | None = None) -> str:
        value = self.obj.get(key)
        if value is None:  # absent or null: like every other optional field
            value = default
        if value is None:
            raise self._missing(key)
        if value not in allowed:
            raise self._bad(key, f"must be one of {', '.join(allowed)}")
        return str(value)

    def names(self, key: str) -> tuple[str, ...] | None:
        value = self.obj.get(key)
        if value is None:
            return None
        if not isinstance(value, list):
            raise self._bad(key, "must be a list of names")
        if len(value) > MAX_ROOMS:
            raise self._bad(key, f"has more than {MAX_ROOMS} entries")
        out: list[str] = []
        for item in value:
            if not isinstance(item, str) or not 0 < len(item) <= MAX_NAME or not _is_utf8(item):
                raise self._bad(key, f"entries must be names of 1 to {MAX_NAME} characters")
            if item not in out:
                out.append(item)
        return tuple(out)

    def codec_header(self) -> CodecHeader:
        text = self.string("codec_header", limit=16)
        try:
            return CodecHeader.decode(text)
        except ProtocolError as exc:
            raise ProtocolError(exc.error, exc.detail, self.seq) from exc


_BASE64URL: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_="


def _is_utf8(text: str) -> bool:
    """False for strings holding lone surrogates (valid JSON escapes, unsendable as UTF-8)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --------------------------------------------------------------------------- writing JSON

_JSON_NAME: Final = "json"  # field metadata: the field's JSON key, when not its name
_LEFT_OUT: Final = "left_out"  # field metadata: a value written by leaving the key out
_NEVER: Final = object()  # "left_out" of a field with none: only None is left out


def _wire(*, json: str | None = None, left_out: Any = _NEVER) -> dict[str, Any]:
    """The ``field(metadata=...)`` of a message field whose JSON differs from the plain rule:
    ``json``, its key (when not the field's name); ``left_out``, a value written by leaving the
    key out, as ``None`` is."""
    metadata: dict[str, Any] = {}
    if json is not None:
        metadata[_JSON_NAME] = json
    if left_out is not _NEVER:
        metadata[_LEFT_OUT] = left_out
    return metadata


def json_name(f: Field[Any]) -> str:
    """A message field's key on the wire (``from_`` is ``from``)."""
    name: str = f.metadata.get(_JSON_NAME, f.name)
    return name


def _json_value(value: object) -> object:
    """What ``json.dumps`` cannot write itself: a codec header, as its base64 text."""
    if isinstance(value, CodecHeader):
        return value.encode()
    raise TypeError(f"{type(value).__name__} is not a protocol value")


class _Message:
    """What the JSON messages share: :meth:`to_json`, as the class's :func:`_writes` says."""

    __slots__ = ()
    _KEYS: ClassVar[tuple[tuple[str, str, object], ...]] = ()  # (key, attribute, left-out value)

    def to_json(self) -> str:
        """The message as a compact JSON text frame."""
        obj: dict[str, Any] = {}
        for key, attribute, left_out in self._KEYS:
            value = getattr(self, attribute)
            if value is not None and (left_out is _NEVER or value != left_out):
                obj[key] = value
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=_json_value)


_M = TypeVar("_M", bound=_Message)


def _writes(*keys: str) -> Callable[[type[_M]], type[_M]]:
    """Class decorator: the message's ``to_json`` writes ``keys``, in this order. Each is a
    field's :func:`json_name` (every field must be there), ``command`` (the class's ``COMMAND``)
    or the name of a flag property (``Response.success``), written only when true."""

    def build(cls: type[_M]) -> type[_M]:
        unwritten = {json_name(f): f for f in fields(cls)}  # type: ignore[arg-type]
        plan: list[tuple[str, str, object]] = []
        for key in keys:
            f = unwritten.pop(key, None)
            if f is not None:
                plan.append((key, f.name, f.metadata.get(_LEFT_OUT, _NEVER)))
            elif key == "command" and hasattr(cls, "COMMAND"):
                plan.append((key, "COMMAND", _NEVER))
            elif isinstance(getattr(cls, key, None), property):
                plan.append((key, key, False))
            else:
                raise TypeError(f"{cls.__name__} has no {key!r} to write")
        if unwritten:
            raise TypeError(f"{cls.__name__} does not write {', '.join(unwritten)}")
        cls._KEYS = tuple(plan)
        return cls

    return build


# --------------------------------------------------------------------------- client commands


@_writes(
    "command",
    "seq",
    "auth_token",
    "refresh_token",
    "username",
    "password",
    "channels",
    "listen_only",
    "version",
    "platform_type",
    "platform_name",
    "identity_key",
)
@dataclass(frozen=True, slots=True)
class Logon(_Message):
    """``logon``: credentials, the rooms to join, and optional client facts."""

    COMMAND: ClassVar[str] = "logon"
    channels: tuple[str, ...]
    seq: int | None = None
    auth_token: str | None = None
    refresh_token: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    listen_only: bool = field(default=False, metadata=_wire(left_out=False))
    version: str | None = None
    platform_type: str | None = None
    platform_name: str | None = None
    # [pttd] the client's public identity key: it may join encrypted rooms (SFrame)
    identity_key: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:  # never show secrets, even in a traceback
        return f"Logon(seq={self.seq}, channels={self.channels}, username={self.username!r})"

    @classmethod
    def from_fields(cls, f: _Fields) -> Logon:
        channels = f.names("channels")
        if channels is None:
            single = f.opt_string("channel")
            channels = (single,) if single is not None else None
        if not channels:
            raise ProtocolError(NOT_ENOUGH_PARAMS, "no channel or channels", f.seq)
        auth_token = f.opt_string("auth_token", limit=MAX_SECRET, empty=True) or None
        refresh_token = f.opt_string("refresh_token", limit=MAX_SECRET, empty=True) or None
        username = f.opt_string("username")
        password = f.opt_string("password", limit=MAX_SECRET, empty=True)
        if username is not None and password is None:
            raise ProtocolError(NOT_ENOUGH_PARAMS, "username without password", f.seq)
        if auth_token is None and refresh_token is None and username is None:
            raise ProtocolError(NOT_ENOUGH_PARAMS, "no credentials", f.seq)
        return cls(
            channels=channels,
            seq=f.seq,
            auth_token=auth_token,
            refresh_token=refresh_token,
            username=username,
            password=password,
            listen_only=bool(f.opt_bool("listen_only")),
            version=f.opt_string("version"),
            platform_type=f.opt_string("platform_type"),
            platform_name=f.opt_string("platform_name"),
            identity_key=f.key_text("identity_key", MAX_KEY),
        )


@_writes(
    "command", "seq", "type", "codec", "codec_header", "packet_duration", "channel", "priority"
)
@dataclass(frozen=True, slots=True)
class StartStream(_Message):
    """``start_stream``: ask for the floor in ``channel`` (or the only joined room)."""

    COMMAND: ClassVar[str] = "start_stream"
    codec_header: CodecHeader
    packet_duration: int
    seq: int | None = None
    channel: str | None = None
    priority: Priority = field(default="normal", metadata=_wire(left_out="normal"))
    type: Literal["audio"] = "audio"
    codec: Literal["opus"] = "opus"

    @classmethod
    def from_fields(cls, f: _Fields) -> StartStream:
        f.choice("type", ("audio",))
        f.choice("codec", ("opus",))
        return cls(
            codec_header=f.codec_header(),
            packet_duration=f.integer("packet_duration", low=1, high=1000),
            seq=f.seq,
            channel=f.opt_string("channel"),
            priority="emergency"
            if f.choice("priority", ("normal", "emergency"), "normal") == "emergency"
            else "normal",
        )


@_writes("command", "seq", "stream_id", "channel")
@dataclass(frozen=True, slots=True)
class StopStream(_Message):
    """``stop_stream``: release the floor."""

    COMMAND: ClassVar[str] = "stop_stream"
    stream_id: int
    seq: int | None = None
    channel: str | None = None

    @classmethod
    def from_fields(cls, f: _Fields) -> StopStream:
        return cls(f.integer("stream_id"), f.seq, f.opt_string("channel"))


@_writes("command", "seq", "channel", "text", "for")
@dataclass(frozen=True, slots=True)
class SendTextMessage(_Message):
    """``send_text_message``: a text to a room (``for_``: to one user of it)."""

    COMMAND: ClassVar[str] = "send_text_message"
    channel: str
    text: str
    seq: int | None = None
    for_: str | None = field(default=None, metadata=_wire(json="for"))

    @classmethod
    def from_fields(cls, f: _Fields) -> SendTextMessage:
        return cls(
            channel=f.string("channel"),
            text=f.string("text", limit=MAX_TEXT),
            seq=f.seq,
            for_=f.opt_string("for"),
        )


@_writes("command", "seq", "code", "device_name")
@dataclass(frozen=True, slots=True)
class Pair(_Message):
    """``pair`` (pttd extension): trade a one-time pairing code for a device credential."""

    COMMAND: ClassVar[str] = "pair"
    code: str = field(repr=False)
    device_name: str
    seq: int | None = None

    @classmethod
    def from_fields(cls, f: _Fields) -> Pair:
        return cls(f.string("code", limit=MAX_SECRET), f.string("device_name"), f.seq)


@_writes("command", "seq")
@dataclass(frozen=True, slots=True)
class Unpair(_Message):
    """``unpair`` (pttd extension): a logged-on device gives its credential up."""

    COMMAND: ClassVar[str] = "unpair"
    seq: int | None = None

    @classmethod
    def from_fields(cls, f: _Fields) -> Unpair:
        return cls(f.seq)


ClientCommand: TypeAlias = Logon | StartStream | StopStream | SendTextMessage | Pair | Unpair

_CLIENT_COMMANDS: Final[dict[str, Any]] = {
    c.COMMAND: c for c in (Logon, StartStream, StopStream, SendTextMessage, Pair, Unpair)
}

# --------------------------------------------------------------------------- server messages


@_writes("command", "channel", "status", "users_online", "encrypted")
@dataclass(frozen=True, slots=True)
class OnChannelStatus(_Message):
    COMMAND: ClassVar[str] = "on_channel_status"
    channel: str
    status: ChannelStatus = "online"
    users_online: int = 0
    encrypted: bool = field(default=False, metadata=_wire(left_out=False))  # [pttd]

    @classmethod
    def from_fields(cls, f: _Fields) -> OnChannelStatus:
        status = f.choice("status", ("online", "offline"))
        return cls(
            channel=f.string("channel"),
            status="online" if status == "online" else "offline",
            users_online=f.opt_integer("users_online") or 0,
            encrypted=bool(f.opt_bool("encrypted")),
        )


@_writes("command", "channel", "key")
@dataclass(frozen=True, slots=True)
class OnRoomKey(_Message):
    """[pttd] A room key sealed by the room's key authority for this client (the server only
    passes it on: it can neither open nor forge one)."""

    COMMAND: ClassVar[str] = "on_room_key"
    channel: str
    key: str = field(repr=False)

    @classmethod
    def from_fields(cls, f: _Fields) -> OnRoomKey:
        key = f.key_text("key", MAX_ROOM_KEY)
        if key is None:
            raise ProtocolError(NOT_ENOUGH_PARAMS, "missing 'key'", f.seq)
        return cls(f.string("channel"), key)


@_writes(
    "command",
    "type",
    "codec",
    "codec_header",
    "packet_duration",
    "stream_id",
    "channel",
    "from",
    "priority",
)
@dataclass(frozen=True, slots=True)
class OnStreamStart(_Message):
    COMMAND: ClassVar[str] = "on_stream_start"
    stream_id: int
    channel: str
    from_: str = field(metadata=_wire(json="from"))
    codec_header: CodecHeader
    packet_duration: int
    priority: Priority = field(default="normal", metadata=_wire(left_out="normal"))
    type: Literal["audio"] = "audio"
    codec: Literal["opus"] = "opus"

    @classmethod
    def from_fields(cls, f: _Fields) -> OnStreamStart:
        f.choice("type", ("audio",))
        f.choice("codec", ("opus",))
        return cls(
            stream_id=f.integer("stream_id"),
            channel=f.string("channel"),
            from_=f.string("from"),
            codec_header=f.codec_header(),
            packet_duration=f.integer("packet_duration", low=1, high=1000),
            priority="emergency"
            if f.choice("priority", ("normal", "emergency"), "normal") == "emergency"
            else "normal",
        )


@_writes("command", "stream_id", "channel", "reason")
@dataclass(frozen=True, slots=True)
class OnStreamStop(_Message):
    COMMAND: ClassVar[str] = "on_stream_stop"
    stream_id: int
    channel: str | None = None
    reason: str | None = None

    @classmethod
    def from_fields(cls, f: _Fields) -> OnStreamStop:
        return cls(f.integer("stream_id"), f.opt_string("channel"), f.opt_string("reason"))


@_writes("command", "error")
@dataclass(frozen=True, slots=True)
class OnError(_Message):
    COMMAND: ClassVar[str] = "on_error"
    error: str

    @classmethod
    def from_fields(cls, f: _Fields) -> OnError:
        return cls(f.string("error", limit=MAX_TEXT))


@_writes("command", "channel", "from", "text", "message_id")
@dataclass(frozen=True, slots=True)
class OnTextMessage(_Message):
    COMMAND: ClassVar[str] = "on_text_message"
    channel: str
    from_: str = field(metadata=_wire(json="from"))
    text: str
    message_id: int

    @classmethod
    def from_fields(cls, f: _Fields) -> OnTextMessage:
        return cls(
            channel=f.string("channel"),
            from_=f.string("from"),
            text=f.string("text", limit=MAX_TEXT),
            message_id=f.integer("message_id"),
        )


@_writes(
    "seq",
    "success",
    "error",
    "refresh_token",
    "stream_id",
    "auth_token",
    "channels",
    "reason",
    "talker",
    "device_name",
    "encrypted",
)
@dataclass(frozen=True, slots=True)
class Response(_Message):
    """The answer to a request with a ``seq``: ``success`` with result fields, or an ``error``.

    Result fields: ``refresh_token`` (logon), ``stream_id`` (start_stream), ``auth_token`` and
    ``channels`` (pair). Error details (pttd extensions): ``reason`` and ``talker``.
    """

    seq: int
    error: str | None = None
    refresh_token: str | None = field(default=None, repr=False)
    stream_id: int | None = None
    auth_token: str | None = field(default=None, repr=False)
    channels: tuple[str, ...] | None = None
    reason: str | None = None
    talker: str | None = None
    device_name: str | None = None
    encrypted: tuple[str, ...] | None = None  # [pttd] logon: the joined rooms that are encrypted

    @property
    def success(self) -> bool:
        return self.error is None

    @classmethod
    def from_fields(cls, f: _Fields) -> Response:
        if f.seq is None:
            raise ProtocolError(NOT_ENOUGH_PARAMS, "response without seq")
        error = f.opt_string("error", limit=MAX_TEXT)
        success = f.opt_bool("success")
        if error is None and success is not True:
            raise ProtocolError(INVALID_REQUEST, "response with neither success nor error", f.seq)
        return cls(
            seq=f.seq,
            error=error,
            refresh_token=f.opt_string("refresh_token", limit=MAX_SECRET),
            stream_id=f.opt_integer("stream_id"),
            auth_token=f.opt_string("auth_token", limit=MAX_SECRET),
            channels=f.names("channels"),
            reason=f.opt_string("reason"),
            talker=f.opt_string("talker"),
            device_name=f.opt_string("device_name"),
            encrypted=f.names("encrypted"),
        )


ServerEvent: TypeAlias = (
    OnChannelStatus | OnStreamStart | OnStreamStop | OnError | OnTextMessage | OnRoomKey
)
ServerMessage: TypeAlias = ServerEvent | Response
Message: TypeAlias = ClientCommand | ServerMessage

_SERVER_EVENTS: Final[dict[str, Any]] = {
    c.COMMAND: c
    for c in (OnChannelStatus, OnStreamStart, OnStreamStop, OnError, OnTextMessage, OnRoomKey)
}

# --------------------------------------------------------------------------- parsing


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _load(frame: str | bytes) -> tuple[dict[str, Any], int | None]:
    # A str never has more characters than UTF-8 bytes: check the cheap bound first.
    if len(frame) > MAX_TEXT_FRAME:
        raise ProtocolError(INVALID_REQUEST, f"text frame of more than {MAX_TEXT_FRAME} bytes")
    if isinstance(frame, str):
        text = frame
        size = len(frame.encode("utf-8", "surrogatepass"))
    else:
        size = len(frame)
        try:  # text frames are UTF-8; json.loads(bytes) would also take UTF-16/32 and a BOM
            text = bytes(frame).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(INVALID_JSON, "not UTF-8") from exc
    if size > MAX_TEXT_FRAME:
        raise ProtocolError(INVALID_REQUEST, f"text frame of {size} bytes")
    try:
        obj = json.loads(text, parse_constant=_reject_constant)  # no NaN, Infinity
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, huge integers, NaN
        raise ProtocolError(INVALID_JSON, "not JSON") from exc
    if not isinstance(obj, dict):
        raise ProtocolError(INVALID_JSON, "not a JSON object")
    seq = obj.get("seq")
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int)):
        raise ProtocolError(INVALID_REQUEST, "'seq' must be an integer")
    if seq is not None and not 0 <= seq <= MAX_U32:
        raise ProtocolError(INVALID_REQUEST, "'seq' out of range")
    return obj, seq


def _command_name(obj: dict[str, Any], seq: int | None) -> str:
    command = obj.get("command")
    if command is None:
        raise ProtocolError(INVALID_REQUEST, "no command", seq)
    if not isinstance(command, str):
        raise ProtocolError(INVALID_REQUEST, "'command' must be a string", seq)
    return command


def parse_client_message(frame: str | bytes) -> ClientCommand:
    """Parse a text frame sent by a client (what the server receives)."""
    obj, seq = _load(frame)
    name = _command_name(obj, seq)
    kind = _CLIENT_COMMANDS.get(name)
    if kind is None:
        raise ProtocolError(UNKNOWN_COMMAND, f"a command name of {len(name)} characters", seq)
    message: ClientCommand = kind.from_fields(_Fields(obj, seq))
    return message


def parse_server_message(frame: str | bytes) -> ServerMessage:
    """Parse a text frame sent by the server (what a device receives)."""
    obj, seq = _load(frame)
    if "command" not in obj:
        return Response.from_fields(_Fields(obj, seq))
    name = _command_name(obj, seq)
    kind = _SERVER_EVENTS.get(name)
    if kind is None:
        raise ProtocolError(UNKNOWN_COMMAND, f"a command name of {len(name)} characters", seq)
    message: ServerMessage = kind.from_fields(_Fields(obj, seq))
    return message


def error_response(exc: ProtocolError) -> str:
    """The text frame that answers a request that failed with ``exc``."""
    if exc.seq is None:
        return OnError(exc.error).to_json()
    return Response(seq=exc.seq, error=exc.error).to_json()
