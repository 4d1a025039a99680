"""The wire protocol (Zello Channel API plus pttd's extensions), sans-I/O.

Text frames carry JSON control messages, binary frames carry audio packets. This module turns
frames into typed, immutable messages and back, and nothing else: no sockets, no clocks.

Parsing raises only :class:`pttd.errors.ProtocolError`, whose ``error`` is the exact Channel-API
error string to answer with. For every valid message ``m``, ``parse(m.to_json()) == m``.

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
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Literal, TypeAlias

from pttd.errors import ProtocolError

MAX_TEXT_FRAME: Final = 64 * 1024
MAX_BINARY_FRAME: Final = 8 * 1024
MAX_FRAME: Final = max(MAX_TEXT_FRAME, MAX_BINARY_FRAME)
MAX_NAME: Final = 64  # room, user and device names
MAX_SECRET: Final = 1024  # tokens, passwords, codes
MAX_TEXT: Final = 2000  # characters of a text message
MAX_ROOMS: Final = 64  # rooms in one logon
MAX_U32: Final = 0xFFFF_FFFF

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

Priority: TypeAlias = Literal["normal", "emergency"]
ChannelStatus: TypeAlias = Literal["online", "offline"]

OPUS_SAMPLE_RATES: Final = (8000, 12000, 16000, 24000, 48000)
OPUS_FRAME_MS: Final = (5, 10, 20, 40, 60)  # whole-millisecond Opus frame sizes

# --------------------------------------------------------------------------- codec header


@dataclass(frozen=True, slots=True)
class CodecHeader:
    """The 4-byte ``codec_header``: rate (16-bit LE), frames per packet, frame size in ms."""

    sample_rate: int = 48000
    frames_per_packet: int = 1
    frame_size_ms: int = 20

    _STRUCT: ClassVar[struct.Struct] = struct.Struct("<HBB")

    def __post_init__(self) -> None:
        if self.sample_rate not in OPUS_SAMPLE_RATES:
            raise ProtocolError(INVALID_REQUEST, f"codec_header: sample rate {self.sample_rate}")
        if self.frame_size_ms not in OPUS_FRAME_MS:
            raise ProtocolError(INVALID_REQUEST, f"codec_header: frame size {self.frame_size_ms}")
        if not 1 <= self.frames_per_packet <= 120 // self.frame_size_ms:
            raise ProtocolError(
                INVALID_REQUEST, f"codec_header: {self.frames_per_packet} frames per packet"
            )

    @property
    def packet_duration_ms(self) -> int:
        return self.frames_per_packet * self.frame_size_ms

    def encode(self) -> str:
        raw = self._STRUCT.pack(self.sample_rate, self.frames_per_packet, self.frame_size_ms)
        return base64.b64encode(raw).decode("ascii")

    @classmethod
    def decode(cls, text: str) -> CodecHeader:
        try:
            raw = base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
            raise ProtocolError(INVALID_REQUEST, "codec_header is not base64") from exc
        if len(raw) != cls._STRUCT.size:
            raise ProtocolError(INVALID_REQUEST, f"codec_header has {len(raw)} bytes, not 4")
        rate, frames, size = cls._STRUCT.unpack(raw)
        return cls(rate, frames, size)


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


def _is_utf8(text: str) -> bool:
    """False for strings holding lone surrogates (valid JSON escapes, unsendable as UTF-8)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _compact(obj: dict[str, Any]) -> str:
    return json.dumps(
        {k: v for k, v in obj.items() if v is not None}, separators=(",", ":"), ensure_ascii=False
    )


# --------------------------------------------------------------------------- client commands


@dataclass(frozen=True, slots=True)
class Logon:
    """``logon``: credentials, the rooms to join, and optional client facts."""

    COMMAND: ClassVar[str] = "logon"
    channels: tuple[str, ...]
    seq: int | None = None
    auth_token: str | None = None
    refresh_token: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    listen_only: bool = False
    version: str | None = None
    platform_type: str | None = None
    platform_name: str | None = None

    def __repr__(self) -> str:  # never show secrets, even in a traceback
        return f"Logon(seq={self.seq}, channels={self.channels}, username={self.username!r})"

    def to_json(self) -> str:
        return _compact(
            {
                "command": self.COMMAND,
                "seq": self.seq,
                "auth_token": self.auth_token,
                "refresh_token": self.refresh_token,
                "username": self.username,
                "password": self.password,
                "channels": list(self.channels),
                "listen_only": self.listen_only or None,
                "version": self.version,
                "platform_type": self.platform_type,
                "platform_name": self.platform_name,
            }
        )

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
        )


@dataclass(frozen=True, slots=True)
class StartStream:
    """``start_stream``: ask for the floor in ``channel`` (or the only joined room)."""

    COMMAND: ClassVar[str] = "start_stream"
    codec_header: CodecHeader
    packet_duration: int
    seq: int | None = None
    channel: str | None = None
    priority: Priority = "normal"
    type: Literal["audio"] = "audio"
    codec: Literal["opus"] = "opus"

    def to_json(self) -> str:
        return _compact(
            {
                "command": self.COMMAND,
                "seq": self.seq,
                "type": self.type,
                "codec": self.codec,
                "codec_header": self.codec_header.encode(),
                "packet_duration": self.packet_duration,
                "channel": self.channel,
                "priority": None if self.priority == "normal" else self.priority,
            }
        )

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


@dataclass(frozen=True, slots=True)
class StopStream:
    """``stop_stream``: release the floor."""

    COMMAND: ClassVar[str] = "stop_stream"
    stream_id: int
    seq: int | None = None
    channel: str | None = None

    def to_json(self) -> str:
        return _compact(
            {
                "command": self.COMMAND,
                "seq": self.seq,
                "stream_id": self.stream_id,
                "channel": self.channel,
            }
        )

    @classmethod
    def from_fields(cls, f: _Fields) -> StopStream:
        return cls(f.integer("stream_id"), f.seq, f.opt_string("channel"))


@dataclass(frozen=True, slots=True)
class SendTextMessage:
    """``send_text_message``: a text to a room (``for_``: to one user of it)."""

    COMMAND: ClassVar[str] = "send_text_message"
    channel: str
    text: str
    seq: int | None = None
    for_: str | None = None

    def to_json(self) -> str:
        return _compact(
            {
                "command": self.COMMAND,
                "seq": self.seq,
                "channel": self.channel,
                "text": self.text,
                "for": self.for_,
            }
        )

    @classmethod
    def from_fields(cls, f: _Fields) -> SendTextMessage:
        return cls(
            channel=f.string("channel"),
            text=f.string("text", limit=MAX_TEXT),
            seq=f.seq,
            for_=f.opt_string("for"),
        )


@dataclass(frozen=True, slots=True)
class Pair:
    """``pair`` (pttd extension): trade a one-time pairing code for a device credential."""

    COMMAND: ClassVar[str] = "pair"
    code: str = field(repr=False)
    device_name: str
    seq: int | None = None

    def to_json(self) -> str:
        return _compact(
            {
                "command": self.COMMAND,
                "seq": self.seq,
                "code": self.code,
                "device_name": self.device_name,
            }
        )

    @classmethod
    def from_fields(cls, f: _Fields) -> Pair:
        return cls(f.string("code", limit=MAX_SECRET), f.string("device_name"), f.seq)


@dataclass(frozen=True, slots=True)
class Unpair:
    """``unpair`` (pttd extension): a logged-on device gives its credential up."""

    COMMAND: ClassVar[str] = "unpair"
    seq: int | None = None

    def to_json(self) -> str:
        return _compact({"command": self.COMMAND, "seq": self.seq})

    @classmethod
    def from_fields(cls, f: _Fields) -> Unpair:
        return cls(f.seq)


ClientCommand: TypeAlias = Logon | StartStream | StopStream | SendTextMessage | Pair | Unpair

_CLIENT_COMMANDS: Final[dict[str, Any]] = {
    c.COMMAND: c for c in (Logon, StartStream, StopStream, SendTextMessage, Pair, Unpair)
}

# --------------------------------------------------------------------------- server messages


@dataclass(frozen=True, slots=True)
class OnChannelStatus:
    COMMAND: ClassVar[str] = "on_channel_status"
    channel: str
    status: ChannelStatus = "online"
    users_online: int = 0

    def to_json(self) -> str:
        return _compact(
            {
                "command": self.COMMAND,
                "channel": self.channel,
                "status": self.status,
                "users_online": self.users_online,
            }
        )

    @classmethod
    def from_fields(cls, f: _Fields) -> OnChannelStatus:
        status = f.choice("status", ("online", "offline"))
        return cls(
            channel=f.string("channel"),
            status="online" if status == "online" else "offline",
            users_online=f.opt_integer("users_online") or 0,
        )


@dataclass(frozen=True, slots=True)
class OnStreamStart:
    COMMAND: ClassVar[str] = "on_stream_start"
    stream_id: int
    channel: str
    from_: str
    codec_header: CodecHeader
    packet_duration: int
    priority: Priority = "normal"
    type: Literal["audio"] = "audio"
    codec: Literal["opus"] = "opus"

    def to_json(self) -> str:
        return _compact(
            {
                "command": self.COMMAND,
                "type": self.type,
                "codec": self.codec,
                "codec_header": self.codec_header.encode(),
                "packet_duration": self.packet_duration,
                "stream_id": self.stream_id,
                "channel": self.channel,
                "from": self.from_,
                "priority": None if self.priority == "normal" else self.priority,
            }
        )

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


@dataclass(frozen=True, slots=True)
class OnStreamStop:
    COMMAND: ClassVar[str] = "on_stream_stop"
    stream_id: int
    channel: str | None = None
    reason: str | None = None

    def to_json(self) -> str:
        return _compact(
            {
                "command": self.COMMAND,
                "stream_id": self.stream_id,
                "channel": self.channel,
                "reason": self.reason,
            }
        )

    @classmethod
    def from_fields(cls, f: _Fields) -> OnStreamStop:
        return cls(f.integer("stream_id"), f.opt_string("channel"), f.opt_string("reason"))


@dataclass(frozen=True, slots=True)
class OnError:
    COMMAND: ClassVar[str] = "on_error"
    error: str

    def to_json(self) -> str:
        return _compact({"command": self.COMMAND, "error": self.error})

    @classmethod
    def from_fields(cls, f: _Fields) -> OnError:
        return cls(f.string("error", limit=MAX_TEXT))


@dataclass(frozen=True, slots=True)
class OnTextMessage:
    COMMAND: ClassVar[str] = "on_text_message"
    channel: str
    from_: str
    text: str
    message_id: int

    def to_json(self) -> str:
        return _compact(
            {
                "command": self.COMMAND,
                "channel": self.channel,
                "from": self.from_,
                "text": self.text,
                "message_id": self.message_id,
            }
        )

    @classmethod
    def from_fields(cls, f: _Fields) -> OnTextMessage:
        return cls(
            channel=f.string("channel"),
            from_=f.string("from"),
            text=f.string("text", limit=MAX_TEXT),
            message_id=f.integer("message_id"),
        )


@dataclass(frozen=True, slots=True)
class Response:
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

    @property
    def success(self) -> bool:
        return self.error is None

    def to_json(self) -> str:
        return _compact(
            {
                "seq": self.seq,
                "success": True if self.error is None else None,
                "error": self.error,
                "refresh_token": self.refresh_token,
                "stream_id": self.stream_id,
                "auth_token": self.auth_token,
                "channels": None if self.channels is None else list(self.channels),
                "reason": self.reason,
                "talker": self.talker,
                "device_name": self.device_name,
            }
        )

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
        )


ServerEvent: TypeAlias = OnChannelStatus | OnStreamStart | OnStreamStop | OnError | OnTextMessage
ServerMessage: TypeAlias = ServerEvent | Response
Message: TypeAlias = ClientCommand | ServerMessage

_SERVER_EVENTS: Final[dict[str, Any]] = {
    c.COMMAND: c for c in (OnChannelStatus, OnStreamStart, OnStreamStop, OnError, OnTextMessage)
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
        raise ProtocolError(UNKNOWN_COMMAND, repr(name[:MAX_NAME]), seq)
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
        raise ProtocolError(UNKNOWN_COMMAND, repr(name[:MAX_NAME]), seq)
    message: ServerMessage = kind.from_fields(_Fields(obj, seq))
    return message


def error_response(exc: ProtocolError) -> str:
    """The text frame that answers a request that failed with ``exc``."""
    if exc.seq is None:
        return OnError(exc.error).to_json()
    return Response(seq=exc.seq, error=exc.error).to_json()
