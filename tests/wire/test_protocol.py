"""Tests of pttd.wire.messages: the Zello Channel API dialect plus pttd's extensions (PROTOCOL.md).

Example-based tests pin the exact wire shapes and error strings; property tests (hypothesis)
check that every valid message round-trips and that no input makes a parser raise anything but
ProtocolError.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pttd.errors import ProtocolError
from pttd.wire.messages import (
    AUDIO_HEADER_SIZE,
    AUDIO_PACKET_TYPE,
    CHANNEL_NOT_READY,
    FAILED_TO_SEND_DATA,
    FAILED_TO_START_STREAM,
    FAILED_TO_STOP_STREAM,
    INTERNAL_SERVER_ERROR,
    INVALID_AUDIO_PACKET,
    INVALID_JSON,
    INVALID_REQUEST,
    LISTEN_ONLY_CONNECTION,
    MAX_BINARY_FRAME,
    MAX_FRAME,
    MAX_NAME,
    MAX_ROOMS,
    MAX_SECRET,
    MAX_TEXT,
    MAX_TEXT_FRAME,
    MAX_U32,
    NOT_AUTHORIZED,
    NOT_ENOUGH_PARAMS,
    NOT_LOGGED_IN,
    OPUS_FRAME_MS,
    OPUS_SAMPLE_RATES,
    REASON_BUSY,
    REASON_PREEMPTED,
    REASON_TIMEOUT,
    SERVER_CLOSED_CONNECTION,
    UNKNOWN_COMMAND,
    AudioPacket,
    CodecHeader,
    Logon,
    OnChannelStatus,
    OnError,
    OnStreamStart,
    OnStreamStop,
    OnTextMessage,
    Pair,
    Response,
    SendTextMessage,
    StartStream,
    StopStream,
    Unpair,
    audio_stream_id,
    error_response,
    parse_audio_packet,
    parse_client_message,
    parse_server_message,
    renumber_audio_packet,
)

# ================================================================================ strategies

# The exact error strings of PROTOCOL.md, in its order.
ERROR_STRINGS = frozenset(
    {
        UNKNOWN_COMMAND,
        INTERNAL_SERVER_ERROR,
        INVALID_JSON,
        INVALID_REQUEST,
        NOT_AUTHORIZED,
        NOT_LOGGED_IN,
        NOT_ENOUGH_PARAMS,
        SERVER_CLOSED_CONNECTION,
        CHANNEL_NOT_READY,
        LISTEN_ONLY_CONNECTION,
        FAILED_TO_START_STREAM,
        FAILED_TO_STOP_STREAM,
        FAILED_TO_SEND_DATA,
        INVALID_AUDIO_PACKET,
    }
)
# A parser of a text frame may only ever answer with one of these.
PARSE_ERRORS = frozenset({INVALID_JSON, INVALID_REQUEST, UNKNOWN_COMMAND, NOT_ENOUGH_PARAMS})

CLIENT_COMMANDS = ("logon", "start_stream", "stop_stream", "send_text_message", "pair", "unpair")
SERVER_EVENTS = (
    "on_channel_status",
    "on_stream_start",
    "on_stream_stop",
    "on_error",
    "on_text_message",
)
FIELD_NAMES = (
    "seq",
    "command",
    "auth_token",
    "refresh_token",
    "username",
    "password",
    "channel",
    "channels",
    "listen_only",
    "version",
    "platform_type",
    "platform_name",
    "type",
    "codec",
    "codec_header",
    "packet_duration",
    "priority",
    "stream_id",
    "text",
    "for",
    "code",
    "device_name",
    "status",
    "users_online",
    "from",
    "error",
    "message_id",
    "success",
    "reason",
    "talker",
)

_chars = st.characters(exclude_categories=("Cs",))  # any code point but lone surrogates


def _text(min_size: int, max_size: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=_chars, min_size=min_size, max_size=max_size)


names = _text(1, MAX_NAME)
secrets = _text(1, MAX_SECRET)
texts = _text(1, MAX_TEXT)
u32 = st.integers(min_value=0, max_value=MAX_U32)
seqs = st.none() | u32
priorities = st.sampled_from(("normal", "emergency"))
durations = st.integers(min_value=1, max_value=1000)
rooms = st.lists(names, min_size=1, max_size=MAX_ROOMS, unique=True).map(tuple)


def _opt(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


@st.composite
def codec_headers(draw: st.DrawFn) -> CodecHeader:
    size = draw(st.sampled_from(OPUS_FRAME_MS))
    return CodecHeader(
        sample_rate=draw(st.sampled_from(OPUS_SAMPLE_RATES)),
        frames_per_packet=draw(st.integers(min_value=1, max_value=120 // size)),
        frame_size_ms=size,
    )


@st.composite
def logons(draw: st.DrawFn) -> Logon:
    auth_token = draw(_opt(secrets))
    refresh_token = draw(_opt(secrets))
    username = draw(_opt(names))
    if auth_token is None and refresh_token is None and username is None:
        username = draw(names)
    # A password must come with a username; an empty one is allowed, and a stray one is kept.
    password = draw(_text(0, MAX_SECRET)) if username is not None else draw(_opt(secrets))
    return Logon(
        channels=draw(rooms),
        seq=draw(seqs),
        auth_token=auth_token,
        refresh_token=refresh_token,
        username=username,
        password=password,
        listen_only=draw(st.booleans()),
        version=draw(_opt(names)),
        platform_type=draw(_opt(names)),
        platform_name=draw(_opt(names)),
    )


start_streams = st.builds(
    StartStream,
    codec_header=codec_headers(),
    packet_duration=durations,
    seq=seqs,
    channel=_opt(names),
    priority=priorities,
)
stop_streams = st.builds(StopStream, stream_id=u32, seq=seqs, channel=_opt(names))
send_text_messages = st.builds(
    SendTextMessage, channel=names, text=texts, seq=seqs, for_=_opt(names)
)
pairs = st.builds(Pair, code=secrets, device_name=names, seq=seqs)
unpairs = st.builds(Unpair, seq=seqs)
client_commands = st.one_of(
    logons(), start_streams, stop_streams, send_text_messages, pairs, unpairs
)

on_channel_statuses = st.builds(
    OnChannelStatus,
    channel=names,
    status=st.sampled_from(("online", "offline")),
    users_online=u32,
)
on_stream_starts = st.builds(
    OnStreamStart,
    stream_id=u32,
    channel=names,
    from_=names,
    codec_header=codec_headers(),
    packet_duration=durations,
    priority=priorities,
)
on_stream_stops = st.builds(OnStreamStop, stream_id=u32, channel=_opt(names), reason=_opt(names))
on_errors = st.builds(OnError, error=texts)
on_text_messages = st.builds(OnTextMessage, channel=names, from_=names, text=texts, message_id=u32)
responses = st.builds(
    Response,
    seq=u32,
    error=_opt(texts),
    refresh_token=_opt(secrets),
    stream_id=_opt(u32),
    auth_token=_opt(secrets),
    channels=_opt(st.lists(names, max_size=MAX_ROOMS, unique=True).map(tuple)),
    reason=_opt(names),
    talker=_opt(names),
    device_name=_opt(names),
)
server_messages = st.one_of(
    on_channel_statuses, on_stream_starts, on_stream_stops, on_errors, on_text_messages, responses
)

audio_packets = st.builds(
    AudioPacket,
    stream_id=u32,
    packet_id=u32,
    payload=st.binary(min_size=1, max_size=MAX_BINARY_FRAME - AUDIO_HEADER_SIZE),
)

# Arbitrary JSON, including NaN and Infinity (which json.dumps writes and JSON forbids).
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from((-1, 0, 1, MAX_U32, MAX_U32 + 1, 2**64))
    | st.floats()
    | st.text(max_size=80)
)


def _containers(kids: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=10), kids, max_size=5)


json_values = st.recursive(json_scalars, _containers, max_leaves=20)
# The same without NaN and Infinity: real JSON.
finite_json_values = st.recursive(
    json_scalars.filter(lambda v: not isinstance(v, float) or math.isfinite(v)),
    _containers,
    max_leaves=20,
)
# Values that a real field might hold, so that fuzzing gets past the first checks.
plausible_values = st.one_of(
    json_values,
    names,
    u32,
    st.lists(names, max_size=4),
    st.sampled_from(
        (
            "gD4BPA==",
            "gLsBFA==",
            "RKwBFA==",
            "audio",
            "opus",
            "emergency",
            "normal",
            "online",
            "offline",
            True,
            False,
            "",
        )
    ),
)
field_dicts = st.dictionaries(
    st.sampled_from(FIELD_NAMES) | st.text(max_size=8), plausible_values, max_size=12
)


@st.composite
def command_dicts(draw: st.DrawFn) -> dict[str, Any]:
    obj = draw(field_dicts)
    if draw(st.booleans()):  # otherwise, maybe no command: a Response, to the server parser
        obj["command"] = draw(st.sampled_from(CLIENT_COMMANDS + SERVER_EVENTS))
    return obj


json_documents = json_values | command_dicts()


def _serialise(obj: Any, ascii_only: bool) -> str:
    return json.dumps(obj, ensure_ascii=ascii_only)


def _parse_or_error(parse: Callable[[Any], Any], frame: Any, allowed: frozenset[str]) -> Any:
    """The parsed message, or None when the parser raised ProtocolError with an allowed error.

    Any other exception propagates and fails the test.
    """
    try:
        return parse(frame)
    except ProtocolError as exc:
        assert exc.error in allowed, exc
        assert exc.seq is None or 0 <= exc.seq <= MAX_U32
        return None


def _error(parse: Callable[[Any], Any], frame: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse(frame)
    return info.value


def _frame(**fields: Any) -> str:
    return json.dumps(fields)


CODEC_60 = CodecHeader(16000, 1, 60)  # PROTOCOL.md's example, "gD4BPA=="


# ================================================================ client commands, by example


class TestLogon:
    def test_channels_list_with_auth_token(self) -> None:
        frame = '{"command":"logon","seq":1,"auth_token":"tok","channels":["Ops","Yard"]}'
        message = parse_client_message(frame)
        assert message == Logon(channels=("Ops", "Yard"), seq=1, auth_token="tok")
        assert message.to_json() == frame  # compact, fields in a fixed order

    def test_single_channel_string_parses_to_the_same_logon(self) -> None:
        old = parse_client_message('{"command":"logon","seq":1,"auth_token":"t","channel":"Ops"}')
        new = parse_client_message(
            '{"command":"logon","seq":1,"auth_token":"t","channels":["Ops"]}'
        )
        assert old == new == Logon(channels=("Ops",), seq=1, auth_token="t")
        # and it is always written in the newer spelling
        assert json.loads(old.to_json())["channels"] == ["Ops"]
        assert "channel" not in json.loads(old.to_json())

    def test_channels_wins_over_channel_and_duplicates_collapse(self) -> None:
        message = parse_client_message(
            _frame(command="logon", auth_token="t", channel="X", channels=["A", "B", "A"])
        )
        assert isinstance(message, Logon)
        assert message.channels == ("A", "B")

    def test_username_and_password(self) -> None:
        message = parse_client_message(
            _frame(command="logon", seq=3, username="alice", password="pw", channels=["Ops"])
        )
        assert message == Logon(channels=("Ops",), seq=3, username="alice", password="pw")
        assert json.loads(message.to_json()) == {
            "command": "logon",
            "seq": 3,
            "username": "alice",
            "password": "pw",
            "channels": ["Ops"],
        }

    def test_empty_password_is_a_password(self) -> None:
        message = parse_client_message(
            _frame(command="logon", username="alice", password="", channel="Ops")
        )
        assert isinstance(message, Logon)
        assert message.password == ""
        assert parse_client_message(message.to_json()) == message

    def test_refresh_token(self) -> None:
        message = parse_client_message(
            _frame(command="logon", seq=9, refresh_token="r-1", channels=["Ops"])
        )
        assert message == Logon(channels=("Ops",), seq=9, refresh_token="r-1")
        assert message.auth_token is None and message.username is None

    def test_listen_only_and_client_facts(self) -> None:
        frame = _frame(
            command="logon",
            seq=4,
            auth_token="t",
            channels=["Ops"],
            listen_only=True,
            version="1.2.3",
            platform_type="pi",
            platform_name="Raspberry Pi Zero 2 W",
        )
        message = parse_client_message(frame)
        assert message == Logon(
            channels=("Ops",),
            seq=4,
            auth_token="t",
            listen_only=True,
            version="1.2.3",
            platform_type="pi",
            platform_name="Raspberry Pi Zero 2 W",
        )
        assert json.loads(message.to_json()) == json.loads(frame)

    def test_listen_only_false_is_left_out(self) -> None:
        message = parse_client_message(
            _frame(command="logon", auth_token="t", channels=["Ops"], listen_only=False)
        )
        assert isinstance(message, Logon)
        assert message.listen_only is False
        assert "listen_only" not in json.loads(message.to_json())

    def test_non_ascii_is_written_raw(self) -> None:
        message = Logon(channels=("Ölfeld", "東京"), auth_token="t")
        assert message.to_json() == (
            '{"command":"logon","auth_token":"t","channels":["Ölfeld","東京"]}'
        )


class TestStartStream:
    def test_with_channel(self) -> None:
        frame = (
            '{"command":"start_stream","seq":2,"type":"audio","codec":"opus",'
            '"codec_header":"gD4BPA==","packet_duration":60,"channel":"Ops"}'
        )
        message = parse_client_message(frame)
        assert message == StartStream(
            codec_header=CODEC_60, packet_duration=60, seq=2, channel="Ops"
        )
        assert isinstance(message, StartStream)
        assert message.priority == "normal"
        assert message.type == "audio" and message.codec == "opus"
        assert message.to_json() == frame

    def test_without_channel(self) -> None:
        message = parse_client_message(
            _frame(
                command="start_stream",
                seq=5,
                type="audio",
                codec="opus",
                codec_header="gLsBFA==",
                packet_duration=20,
            )
        )
        assert message == StartStream(
            codec_header=CodecHeader(48000, 1, 20), packet_duration=20, seq=5
        )
        assert "channel" not in json.loads(message.to_json())

    def test_priority_emergency(self) -> None:
        frame = _frame(
            command="start_stream",
            seq=6,
            type="audio",
            codec="opus",
            codec_header="gD4BPA==",
            packet_duration=60,
            channel="Ops",
            priority="emergency",
        )
        message = parse_client_message(frame)
        assert isinstance(message, StartStream)
        assert message.priority == "emergency"
        assert json.loads(message.to_json()) == json.loads(frame)

    @pytest.mark.parametrize("priority", ["normal", None])
    def test_priority_normal_or_null_means_normal(self, priority: str | None) -> None:
        message = parse_client_message(
            _frame(
                command="start_stream",
                type="audio",
                codec="opus",
                codec_header="gD4BPA==",
                packet_duration=60,
                priority=priority,
            )
        )
        assert isinstance(message, StartStream)
        assert message.priority == "normal"
        assert "priority" not in json.loads(message.to_json())


def test_stop_stream() -> None:
    frame = '{"command":"stop_stream","seq":7,"stream_id":42,"channel":"Ops"}'
    message = parse_client_message(frame)
    assert message == StopStream(stream_id=42, seq=7, channel="Ops")
    assert message.to_json() == frame
    bare = parse_client_message('{"command":"stop_stream","stream_id":0}')
    assert bare == StopStream(stream_id=0)


def test_send_text_message() -> None:
    frame = '{"command":"send_text_message","seq":8,"channel":"Ops","text":"hello","for":"bob"}'
    message = parse_client_message(frame)
    assert message == SendTextMessage(channel="Ops", text="hello", seq=8, for_="bob")
    assert message.to_json() == frame
    to_all = parse_client_message(_frame(command="send_text_message", channel="Ops", text="hi"))
    assert to_all == SendTextMessage(channel="Ops", text="hi")
    assert "for" not in json.loads(to_all.to_json())


def test_pair() -> None:
    frame = '{"command":"pair","seq":1,"code":"483-921","device_name":"kitchen radio"}'
    message = parse_client_message(frame)
    assert message == Pair(code="483-921", device_name="kitchen radio", seq=1)
    assert message.to_json() == frame


def test_unpair() -> None:
    assert parse_client_message('{"command":"unpair","seq":12}') == Unpair(seq=12)
    assert parse_client_message('{"command":"unpair"}') == Unpair()
    assert Unpair(seq=12).to_json() == '{"command":"unpair","seq":12}'


def test_client_parser_accepts_bytes_like_str() -> None:
    frame = '{"command":"logon","seq":1,"auth_token":"t","channels":["Öl"]}'
    assert parse_client_message(frame.encode()) == parse_client_message(frame)


# ================================================================= server messages, by example


def test_on_channel_status() -> None:
    frame = '{"command":"on_channel_status","channel":"Ops","status":"online","users_online":3}'
    message = parse_server_message(frame)
    assert message == OnChannelStatus(channel="Ops", status="online", users_online=3)
    assert message.to_json() == frame
    offline = parse_server_message(
        '{"command":"on_channel_status","channel":"Ops","status":"offline"}'
    )
    assert offline == OnChannelStatus(channel="Ops", status="offline", users_online=0)


def test_on_stream_start() -> None:
    frame = (
        '{"command":"on_stream_start","type":"audio","codec":"opus","codec_header":"gD4BPA==",'
        '"packet_duration":60,"stream_id":42,"channel":"Ops","from":"alice"}'
    )
    message = parse_server_message(frame)
    assert message == OnStreamStart(
        stream_id=42, channel="Ops", from_="alice", codec_header=CODEC_60, packet_duration=60
    )
    assert message.to_json() == frame
    emergency = OnStreamStart(
        stream_id=43,
        channel="Ops",
        from_="bob",
        codec_header=CODEC_60,
        packet_duration=60,
        priority="emergency",
    )
    assert json.loads(emergency.to_json())["priority"] == "emergency"
    assert parse_server_message(emergency.to_json()) == emergency


@pytest.mark.parametrize("reason", [REASON_TIMEOUT, REASON_PREEMPTED])
def test_on_stream_stop_with_reason(reason: str) -> None:
    frame = f'{{"command":"on_stream_stop","stream_id":42,"channel":"Ops","reason":"{reason}"}}'
    message = parse_server_message(frame)
    assert message == OnStreamStop(stream_id=42, channel="Ops", reason=reason)
    assert message.to_json() == frame


def test_on_stream_stop_plain() -> None:
    message = parse_server_message('{"command":"on_stream_stop","stream_id":42}')
    assert message == OnStreamStop(stream_id=42)
    assert message.to_json() == '{"command":"on_stream_stop","stream_id":42}'


def test_on_error() -> None:
    frame = '{"command":"on_error","error":"server closed connection"}'
    message = parse_server_message(frame)
    assert message == OnError(error=SERVER_CLOSED_CONNECTION)
    assert message.to_json() == frame


def test_on_text_message() -> None:
    frame = (
        '{"command":"on_text_message","channel":"Ops","from":"alice","text":"on my way",'
        '"message_id":17}'
    )
    message = parse_server_message(frame)
    assert message == OnTextMessage(channel="Ops", from_="alice", text="on my way", message_id=17)
    assert message.to_json() == frame


class TestResponse:
    def test_success_with_refresh_token(self) -> None:
        frame = '{"seq":1,"success":true,"refresh_token":"r-1"}'
        message = parse_server_message(frame)
        assert message == Response(seq=1, refresh_token="r-1")
        assert isinstance(message, Response)
        assert message.success is True
        assert message.to_json() == frame

    def test_success_with_stream_id(self) -> None:
        frame = '{"seq":2,"success":true,"stream_id":42}'
        message = parse_server_message(frame)
        assert message == Response(seq=2, stream_id=42)
        assert message.to_json() == frame

    def test_pairing_success_with_auth_token_and_channels(self) -> None:
        frame = '{"seq":1,"success":true,"auth_token":"dev-tok","channels":["Ops","Yard"]}'
        message = parse_server_message(frame)
        assert message == Response(seq=1, auth_token="dev-tok", channels=("Ops", "Yard"))
        assert message.to_json() == frame

    def test_error_busy_with_talker(self) -> None:
        frame = '{"seq":2,"error":"failed to start stream","reason":"busy","talker":"alice"}'
        message = parse_server_message(frame)
        assert message == Response(
            seq=2, error=FAILED_TO_START_STREAM, reason=REASON_BUSY, talker="alice"
        )
        assert isinstance(message, Response)
        assert message.success is False
        assert message.to_json() == frame

    def test_error_with_success_false(self) -> None:
        message = parse_server_message('{"seq":3,"success":false,"error":"not authorized"}')
        assert message == Response(seq=3, error=NOT_AUTHORIZED)
        assert "success" not in json.loads(message.to_json())

    def test_without_seq(self) -> None:
        exc = _error(parse_server_message, '{"success":true}')
        assert exc.error == NOT_ENOUGH_PARAMS

    @pytest.mark.parametrize(
        "frame", ['{"seq":4}', '{"seq":4,"success":false}', '{"seq":4,"success":null}']
    )
    def test_neither_success_nor_error(self, frame: str) -> None:
        exc = _error(parse_server_message, frame)
        assert (exc.error, exc.seq) == (INVALID_REQUEST, 4)


def test_server_parser_rejects_client_commands() -> None:
    exc = _error(parse_server_message, '{"command":"unpair","seq":5}')
    assert (exc.error, exc.seq) == (UNKNOWN_COMMAND, 5)
    exc = _error(parse_client_message, '{"command":"on_error","error":"x"}')
    assert exc.error == UNKNOWN_COMMAND


# ============================================================================== codec header


class TestCodecHeader:
    def test_protocol_example_decodes(self) -> None:
        header = CodecHeader.decode("gD4BPA==")
        assert header == CodecHeader(sample_rate=16000, frames_per_packet=1, frame_size_ms=60)
        assert header.packet_duration_ms == 60

    def test_protocol_example_encodes(self) -> None:
        assert CODEC_60.encode() == "gD4BPA=="
        raw = base64.b64decode(CODEC_60.encode())
        assert raw == bytes([0x80, 0x3E, 0x01, 0x3C])  # 16000 LE, 1 frame, 60 ms

    def test_48000_1_20(self) -> None:
        header = CodecHeader(48000, 1, 20)
        assert header == CodecHeader()  # the defaults
        assert header.encode() == "gLsBFA=="
        assert base64.b64decode(header.encode()) == struct.pack("<HBB", 48000, 1, 20)
        assert CodecHeader.decode("gLsBFA==") == header
        assert header.packet_duration_ms == 20

    def test_several_frames_per_packet(self) -> None:
        header = CodecHeader(24000, 6, 20)
        assert header.packet_duration_ms == 120
        assert CodecHeader.decode(header.encode()) == header

    @pytest.mark.parametrize(
        "text",
        [
            "not base64!",
            "gD4BPA",  # padding missing
            "gD4B PA==",
            "gD4BPA==\n",
            "é",
            "",  # 0 bytes
            "gD4B",  # 3 bytes
            "gD4BPAA=",  # 5 bytes
            base64.b64encode(bytes(8)).decode(),
        ],
    )
    def test_malformed(self, text: str) -> None:
        exc = _error(CodecHeader.decode, text)
        assert exc.error == INVALID_REQUEST

    @pytest.mark.parametrize(
        ("rate", "frames", "size"),
        [
            (44100, 1, 20),  # not an Opus rate
            (0, 1, 20),
            (65535, 1, 20),
            (16000, 0, 20),  # no frames
            (16000, 1, 25),  # not an Opus frame size
            (16000, 1, 0),
            (16000, 3, 60),  # 180 ms: longer than an Opus packet
            (16000, 25, 5),
        ],
    )
    def test_bad_values(self, rate: int, frames: int, size: int) -> None:
        text = base64.b64encode(struct.pack("<HBB", rate, frames, size)).decode()
        assert _error(CodecHeader.decode, text).error == INVALID_REQUEST
        with pytest.raises(ProtocolError) as info:
            CodecHeader(rate, frames, size)
        assert info.value.error == INVALID_REQUEST

    def test_bad_header_in_start_stream_carries_seq(self) -> None:
        frame = _frame(
            command="start_stream",
            seq=31,
            type="audio",
            codec="opus",
            codec_header="RKwBFA==",  # 44100 Hz
            packet_duration=20,
        )
        exc = _error(parse_client_message, frame)
        assert (exc.error, exc.seq) == (INVALID_REQUEST, 31)

    @given(codec_headers())
    def test_round_trip(self, header: CodecHeader) -> None:
        text = header.encode()
        assert len(base64.b64decode(text)) == 4
        assert CodecHeader.decode(text) == header


# ============================================================================== audio packets


class TestAudioPacket:
    def test_header_layout_byte_by_byte(self) -> None:
        frame = AudioPacket(stream_id=0x01020304, packet_id=0x0A0B0C0D, payload=b"opus").encode()
        assert AUDIO_HEADER_SIZE == 9
        assert len(frame) == 9 + 4
        assert frame[0] == AUDIO_PACKET_TYPE == 0x01
        assert list(frame[1:5]) == [0x01, 0x02, 0x03, 0x04]  # stream_id, big-endian
        assert list(frame[5:9]) == [0x0A, 0x0B, 0x0C, 0x0D]  # packet_id, big-endian
        assert frame[9:] == b"opus"

    def test_extreme_ids(self) -> None:
        frame = AudioPacket(stream_id=MAX_U32, packet_id=0, payload=b"\x00").encode()
        assert frame == b"\x01\xff\xff\xff\xff\x00\x00\x00\x00\x00"
        assert parse_audio_packet(frame) == AudioPacket(MAX_U32, 0, b"\x00")

    @pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
    def test_parse(self, wrap: Callable[[bytes], Any]) -> None:
        raw = bytes([1, 0, 0, 0, 42, 0, 0, 1, 0]) + b"\xfc\xff\xfe"
        packet = parse_audio_packet(wrap(raw))
        assert packet == AudioPacket(stream_id=42, packet_id=256, payload=b"\xfc\xff\xfe")
        assert type(packet.payload) is bytes
        assert packet.encode() == raw
        assert audio_stream_id(wrap(raw)) == 42

    @pytest.mark.parametrize(
        "frame",
        [
            b"",
            b"\x01",
            b"\x01\x00\x00\x00\x01\x00\x00\x00",  # 8 bytes
            b"\x01\x00\x00\x00\x01\x00\x00\x00\x00",  # header only, no Opus packet
            b"\x00\x00\x00\x00\x01\x00\x00\x00\x00opus",  # wrong type byte
            b"\x02\x00\x00\x00\x01\x00\x00\x00\x00opus",
            b"\xff\x00\x00\x00\x01\x00\x00\x00\x00opus",
            b'{"command":"unpair"}',
            b"\x01" + bytes(MAX_BINARY_FRAME),  # one byte too many
            b"\x01" + bytes(4 * MAX_BINARY_FRAME),
        ],
    )
    def test_invalid(self, frame: bytes) -> None:
        exc = _error(parse_audio_packet, frame)
        assert exc.error == INVALID_AUDIO_PACKET
        exc = _error(audio_stream_id, frame)
        assert exc.error == INVALID_AUDIO_PACKET
        assert _error(audio_stream_id, memoryview(frame)).error == INVALID_AUDIO_PACKET

    def test_exactly_max_binary_frame_parses(self) -> None:
        payload = bytes(range(256)) * ((MAX_BINARY_FRAME - AUDIO_HEADER_SIZE) // 256 + 1)
        payload = payload[: MAX_BINARY_FRAME - AUDIO_HEADER_SIZE]
        frame = AudioPacket(7, 8, payload).encode()
        assert len(frame) == MAX_BINARY_FRAME
        assert parse_audio_packet(frame).payload == payload
        assert audio_stream_id(frame) == 7
        assert MAX_FRAME >= MAX_BINARY_FRAME

    @pytest.mark.parametrize(
        "fields",
        [
            {"stream_id": -1, "packet_id": 0, "payload": b"x"},
            {"stream_id": MAX_U32 + 1, "packet_id": 0, "payload": b"x"},
            {"stream_id": 0, "packet_id": MAX_U32 + 1, "payload": b"x"},
            {"stream_id": 0, "packet_id": 0, "payload": b""},
            {"stream_id": 0, "packet_id": 0, "payload": bytes(MAX_BINARY_FRAME - 8)},
        ],
    )
    def test_construction_is_validated(self, fields: dict[str, Any]) -> None:
        with pytest.raises(ProtocolError) as info:
            AudioPacket(**fields)
        assert info.value.error == INVALID_AUDIO_PACKET

    def test_renumber_changes_only_the_packet_id(self) -> None:
        frame = AudioPacket(0xDEADBEEF, 0, b"opus-data").encode()
        out = renumber_audio_packet(frame, 0x11223344)
        assert out[:5] == frame[:5]
        assert out[5:9] == b"\x11\x22\x33\x44"
        assert out[9:] == frame[9:]
        assert parse_audio_packet(out) == AudioPacket(0xDEADBEEF, 0x11223344, b"opus-data")
        # ids wrap around at 2**32
        assert renumber_audio_packet(frame, MAX_U32 + 6)[5:9] == b"\x00\x00\x00\x05"
        for wrap in (bytearray, memoryview):
            out = renumber_audio_packet(wrap(frame), 1)
            assert type(out) is bytes
            assert out == renumber_audio_packet(frame, 1)

    @given(audio_packets, u32)
    def test_renumber_property(self, packet: AudioPacket, packet_id: int) -> None:
        frame = packet.encode()
        out = renumber_audio_packet(frame, packet_id)
        assert len(out) == len(frame)
        assert out[:5] == frame[:5] and out[9:] == frame[9:]
        assert struct.unpack(">I", out[5:9])[0] == packet_id
        assert parse_audio_packet(out) == AudioPacket(packet.stream_id, packet_id, packet.payload)


# ============================================================================= error strings


@pytest.mark.parametrize(
    "frame",
    [
        "",
        "not json",
        "{",
        '{"command":"unpair",}',
        "[1, 2]",
        '[{"command":"unpair"}]',
        '"logon"',
        "42",
        "null",
        '{"command":"unpair","seq":1,"x":NaN}',  # not JSON, though Python's json reads it
        '{"command":"unpair","x":Infinity}',
        '{"command":"unpair","x":-Infinity}',
        "[" * 60_000,  # too deep for the parser: RecursionError
        b"\xff\xfe\xfd",
        b'{"command":"unpair","seq":1,"x":"\xff"}',  # invalid UTF-8 inside a string
        b'{"command":"unpair","x":"\xed\xa0\x80"}',  # an encoded surrogate is not UTF-8
        '\ufeff{"command":"unpair"}',  # a byte-order mark
        b'\xef\xbb\xbf{"command":"unpair"}',
        '{"command":"unpair"}'.encode("utf-16-le"),  # text frames are UTF-8
        '{"command":"unpair"}'.encode("utf-32"),
    ],
)
@pytest.mark.parametrize("parse", [parse_client_message, parse_server_message])
def test_invalid_json(parse: Callable[[Any], Any], frame: str | bytes) -> None:
    exc = _error(parse, frame)
    assert exc.error == INVALID_JSON
    assert exc.seq is None
    assert error_response(exc) == '{"command":"on_error","error":"invalid json"}'


@pytest.mark.parametrize(
    ("frame", "error", "seq"),
    [
        # no or bad command
        ('{"seq":1}', INVALID_REQUEST, 1),
        ("{}", INVALID_REQUEST, None),
        ('{"command":null,"seq":2}', INVALID_REQUEST, 2),
        ('{"command":5,"seq":3}', INVALID_REQUEST, 3),
        ('{"command":["logon"],"seq":3}', INVALID_REQUEST, 3),
        ('{"command":"dance","seq":4}', UNKNOWN_COMMAND, 4),
        ('{"command":"","seq":4}', UNKNOWN_COMMAND, 4),
        ('{"command":"Logon","seq":4}', UNKNOWN_COMMAND, 4),
        ('{"command":"on_error","error":"x"}', UNKNOWN_COMMAND, None),
        # unreadable seq
        ('{"command":"unpair","seq":"1"}', INVALID_REQUEST, None),
        ('{"command":"unpair","seq":true}', INVALID_REQUEST, None),
        ('{"command":"unpair","seq":1.0}', INVALID_REQUEST, None),
        ('{"command":"unpair","seq":-1}', INVALID_REQUEST, None),
        ('{"command":"unpair","seq":4294967296}', INVALID_REQUEST, None),
        # missing fields
        (
            '{"command":"start_stream","seq":5,"type":"audio","codec":"opus","packet_duration":60}',
            NOT_ENOUGH_PARAMS,
            5,
        ),
        (
            '{"command":"start_stream","seq":5,"type":"audio","codec":"opus",'
            '"codec_header":"gD4BPA=="}',
            NOT_ENOUGH_PARAMS,
            5,
        ),
        (
            '{"command":"start_stream","seq":5,"codec":"opus","codec_header":"gD4BPA==",'
            '"packet_duration":60}',
            NOT_ENOUGH_PARAMS,
            5,
        ),
        ('{"command":"logon","seq":6,"auth_token":"t"}', NOT_ENOUGH_PARAMS, 6),
        ('{"command":"logon","seq":6,"auth_token":"t","channels":[]}', NOT_ENOUGH_PARAMS, 6),
        ('{"command":"logon","seq":6,"auth_token":"t","channel":null}', NOT_ENOUGH_PARAMS, 6),
        ('{"command":"logon","seq":7,"channels":["Ops"]}', NOT_ENOUGH_PARAMS, 7),
        ('{"command":"logon","seq":7,"auth_token":"","channels":["Ops"]}', NOT_ENOUGH_PARAMS, 7),
        ('{"command":"logon","seq":7,"password":"pw","channels":["Ops"]}', NOT_ENOUGH_PARAMS, 7),
        ('{"command":"logon","seq":8,"username":"a","channels":["Ops"]}', NOT_ENOUGH_PARAMS, 8),
        ('{"command":"stop_stream","seq":9}', NOT_ENOUGH_PARAMS, 9),
        ('{"command":"stop_stream","seq":9,"stream_id":null}', NOT_ENOUGH_PARAMS, 9),
        ('{"command":"send_text_message","seq":10,"channel":"Ops"}', NOT_ENOUGH_PARAMS, 10),
        ('{"command":"send_text_message","seq":10,"text":"hi"}', NOT_ENOUGH_PARAMS, 10),
        ('{"command":"pair","seq":11,"code":"123"}', NOT_ENOUGH_PARAMS, 11),
        ('{"command":"pair","seq":11,"device_name":"radio"}', NOT_ENOUGH_PARAMS, 11),
        # wrong types and values
        ('{"command":"logon","seq":12,"auth_token":"t","channels":"Ops"}', INVALID_REQUEST, 12),
        ('{"command":"logon","seq":12,"auth_token":"t","channels":[1]}', INVALID_REQUEST, 12),
        ('{"command":"logon","seq":12,"auth_token":"t","channels":[""]}', INVALID_REQUEST, 12),
        ('{"command":"logon","seq":12,"auth_token":"t","channel":["Ops"]}', INVALID_REQUEST, 12),
        ('{"command":"logon","seq":12,"auth_token":"t","channel":""}', INVALID_REQUEST, 12),
        ('{"command":"logon","seq":12,"auth_token":5,"channel":"Ops"}', INVALID_REQUEST, 12),
        (
            '{"command":"logon","seq":12,"auth_token":"t","channel":"Ops","listen_only":"yes"}',
            INVALID_REQUEST,
            12,
        ),
        (
            '{"command":"logon","seq":12,"auth_token":"t","channel":"Ops","listen_only":1}',
            INVALID_REQUEST,
            12,
        ),
        (
            '{"command":"logon","seq":12,"username":"","password":"p","channel":"Ops"}',
            INVALID_REQUEST,
            12,
        ),
        ('{"command":"logon","seq":12,"auth_token":"t","channel":"\\ud800"}', INVALID_REQUEST, 12),
        ('{"command":"stop_stream","seq":13,"stream_id":"42"}', INVALID_REQUEST, 13),
        ('{"command":"stop_stream","seq":13,"stream_id":42.0}', INVALID_REQUEST, 13),
        ('{"command":"stop_stream","seq":13,"stream_id":true}', INVALID_REQUEST, 13),
        ('{"command":"stop_stream","seq":13,"stream_id":-1}', INVALID_REQUEST, 13),
        ('{"command":"stop_stream","seq":13,"stream_id":4294967296}', INVALID_REQUEST, 13),
        ('{"command":"stop_stream","seq":13,"stream_id":1,"channel":7}', INVALID_REQUEST, 13),
        (
            '{"command":"start_stream","seq":14,"type":"video","codec":"opus",'
            '"codec_header":"gD4BPA==","packet_duration":60}',
            INVALID_REQUEST,
            14,
        ),
        (
            '{"command":"start_stream","seq":14,"type":"audio","codec":"pcm",'
            '"codec_header":"gD4BPA==","packet_duration":60}',
            INVALID_REQUEST,
            14,
        ),
        (
            '{"command":"start_stream","seq":14,"type":"audio","codec":"opus",'
            '"codec_header":"gD4BPA==","packet_duration":60,"priority":"high"}',
            INVALID_REQUEST,
            14,
        ),
        (
            '{"command":"start_stream","seq":14,"type":"audio","codec":"opus",'
            '"codec_header":"gD4BPA==","packet_duration":0}',
            INVALID_REQUEST,
            14,
        ),
        (
            '{"command":"start_stream","seq":14,"type":"audio","codec":"opus",'
            '"codec_header":"gD4BPA==","packet_duration":"60"}',
            INVALID_REQUEST,
            14,
        ),
        (
            '{"command":"start_stream","seq":14,"type":"audio","codec":"opus",'
            '"codec_header":4,"packet_duration":60}',
            INVALID_REQUEST,
            14,
        ),
        (
            '{"command":"start_stream","seq":14,"type":"audio","codec":"opus",'
            '"codec_header":"gD4BPA==gD4BPA==gD4BPA==","packet_duration":60}',
            INVALID_REQUEST,
            14,
        ),
        ('{"command":"send_text_message","seq":15,"channel":"Ops","text":""}', INVALID_REQUEST, 15),
        ('{"command":"send_text_message","seq":15,"channel":"Ops","text":[]}', INVALID_REQUEST, 15),
        ('{"command":"pair","seq":16,"code":"","device_name":"radio"}', INVALID_REQUEST, 16),
    ],
)
def test_client_errors(frame: str, error: str, seq: int | None) -> None:
    exc = _error(parse_client_message, frame)
    assert (exc.error, exc.seq) == (error, seq)
    assert exc.error in ERROR_STRINGS


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        ('{"command":"on_channel_status","channel":"Ops"}', NOT_ENOUGH_PARAMS),
        ('{"command":"on_channel_status","channel":"Ops","status":"away"}', INVALID_REQUEST),
        (
            '{"command":"on_channel_status","channel":"Ops","status":"online","users_online":-1}',
            INVALID_REQUEST,
        ),
        ('{"command":"on_stream_stop"}', NOT_ENOUGH_PARAMS),
        ('{"command":"on_stream_stop","stream_id":1,"reason":5}', INVALID_REQUEST),
        ('{"command":"on_error"}', NOT_ENOUGH_PARAMS),
        ('{"command":"on_error","error":""}', INVALID_REQUEST),
        ('{"command":"on_text_message","channel":"Ops","from":"a","text":"t"}', NOT_ENOUGH_PARAMS),
        (
            '{"command":"on_stream_start","type":"audio","codec":"opus","codec_header":"gD4BPA==",'
            '"packet_duration":60,"stream_id":42,"channel":"Ops"}',
            NOT_ENOUGH_PARAMS,
        ),
        ('{"command":"on_nothing"}', UNKNOWN_COMMAND),
        ('{"command":7}', INVALID_REQUEST),
        ('{"seq":1,"success":true,"stream_id":"42"}', INVALID_REQUEST),
        ('{"seq":1,"success":"yes"}', INVALID_REQUEST),
        ('{"seq":1,"success":true,"channels":"Ops"}', INVALID_REQUEST),
        ('{"seq":1,"success":true,"refresh_token":""}', INVALID_REQUEST),
    ],
)
def test_server_errors(frame: str, error: str) -> None:
    exc = _error(parse_server_message, frame)
    assert exc.error == error


@pytest.mark.parametrize(
    ("key", "limit"),
    [
        ("channel", MAX_NAME),
        ("for", MAX_NAME),
        ("text", MAX_TEXT),
    ],
)
def test_length_limits_in_characters(key: str, limit: int) -> None:
    fields = {"command": "send_text_message", "seq": 1, "channel": "Ops", "text": "hi"}
    ok = parse_client_message(json.dumps({**fields, key: "😀" * limit}))
    assert ok.seq == 1
    exc = _error(parse_client_message, json.dumps({**fields, key: "😀" * (limit + 1)}))
    assert (exc.error, exc.seq) == (INVALID_REQUEST, 1)


def test_too_many_rooms() -> None:
    channels = [f"room {i}" for i in range(MAX_ROOMS + 1)]
    exc = _error(parse_client_message, _frame(command="logon", auth_token="t", channels=channels))
    assert exc.error == INVALID_REQUEST
    fits = parse_client_message(_frame(command="logon", auth_token="t", channels=channels[:-1]))
    assert isinstance(fits, Logon)
    assert len(fits.channels) == MAX_ROOMS


def test_error_response_with_seq() -> None:
    exc = _error(parse_client_message, '{"command":"start_stream","seq":5}')
    assert exc.seq == 5
    frame = error_response(exc)
    assert frame == f'{{"seq":5,"error":"{exc.error}"}}'
    assert json.loads(frame) == {"seq": 5, "error": exc.error}
    assert parse_server_message(frame) == Response(seq=5, error=exc.error)


def test_error_response_without_seq() -> None:
    exc = _error(parse_client_message, '{"command":"dance"}')
    frame = error_response(exc)
    assert frame == '{"command":"on_error","error":"unknown command"}'
    assert parse_server_message(frame) == OnError(UNKNOWN_COMMAND)


@pytest.mark.parametrize("seq", [0, 1, MAX_U32])
def test_error_response_keeps_any_seq(seq: int) -> None:
    answer = error_response(ProtocolError(NOT_LOGGED_IN, "detail", seq))
    assert json.loads(answer) == {"seq": seq, "error": NOT_LOGGED_IN}


def test_protocol_error_is_a_value_error_with_detail() -> None:
    exc = _error(parse_client_message, '{"command":"stop_stream","seq":9}')
    assert isinstance(exc, ValueError)
    assert exc.detail  # says what was wrong, for the logs
    assert str(exc).startswith("not enough params: ")
    assert exc.detail not in error_response(exc)  # but the wire only sees the exact string


# =============================================================================== size bounds


def test_text_frame_longer_than_the_limit() -> None:
    message = '{"command":"unpair","seq":1}'
    padded = message + " " * (MAX_TEXT_FRAME - len(message))
    assert parse_client_message(padded) == Unpair(seq=1)
    assert parse_client_message(padded.encode()) == Unpair(seq=1)
    for frame in (padded + " ", (padded + " ").encode(), padded * 3):
        with pytest.raises(ProtocolError):
            parse_client_message(frame)
        with pytest.raises(ProtocolError):
            parse_server_message(frame)


def test_text_frame_limit_counts_utf8_bytes_not_characters() -> None:
    """A str frame is measured as the websocket carries it, so str and bytes agree."""
    room = "😀" * MAX_NAME  # 256 bytes
    message = json.dumps(
        {"command": "send_text_message", "channel": "Ops", "text": "hi", "pad": [room] * 300},
        ensure_ascii=False,
    )
    assert len(message) < MAX_TEXT_FRAME < len(message.encode())
    with pytest.raises(ProtocolError):
        parse_client_message(message)
    with pytest.raises(ProtocolError):
        parse_client_message(message.encode())


def _four_byte_rooms() -> tuple[str, ...]:
    # distinct names (duplicates would collapse) of MAX_NAME characters of 4 bytes each
    return tuple(chr(0x1F600 + i) + chr(0x10000 + i) * (MAX_NAME - 1) for i in range(MAX_ROOMS))


def test_largest_logon_fits_in_a_text_frame() -> None:
    channels = _four_byte_rooms()
    assert all(len(name) == MAX_NAME and len(name.encode()) == 4 * MAX_NAME for name in channels)
    logon = Logon(channels=channels, seq=MAX_U32, auth_token="A" * MAX_SECRET)
    frame = logon.to_json()
    assert len(frame.encode()) <= MAX_TEXT_FRAME
    assert parse_client_message(frame) == logon
    assert parse_client_message(frame.encode()) == logon


def test_worst_case_messages_fit_in_a_text_frame() -> None:
    """Every field at its limit, of the characters that serialise longest (escaped controls)."""
    ctrl = "\x01"  # written as \u0001: 6 bytes
    assert len(json.dumps(ctrl, ensure_ascii=False)) == 8
    channels = tuple(f"{i:02d}" + ctrl * (MAX_NAME - 2) for i in range(MAX_ROOMS))
    name = ctrl * MAX_NAME
    secret = ctrl * MAX_SECRET
    worst: list[Any] = [
        Logon(
            channels=channels,
            seq=MAX_U32,
            auth_token=secret,
            refresh_token=secret,
            username=name,
            password=secret,
            listen_only=True,
            version=name,
            platform_type=name,
            platform_name=name,
        ),
        SendTextMessage(channel=name, text=ctrl * MAX_TEXT, seq=MAX_U32, for_=name),
        Pair(code=secret, device_name=name, seq=MAX_U32),
    ]
    for message in worst:
        assert len(message.to_json().encode()) <= MAX_TEXT_FRAME, type(message)
        assert parse_client_message(message.to_json()) == message
    worst_server: list[Any] = [
        Response(
            seq=MAX_U32,
            error=ctrl * MAX_TEXT,
            refresh_token=secret,
            stream_id=MAX_U32,
            auth_token=secret,
            channels=channels,
            reason=name,
            talker=name,
        ),
        OnTextMessage(channel=name, from_=name, text=ctrl * MAX_TEXT, message_id=MAX_U32),
        OnError(error=ctrl * MAX_TEXT),
    ]
    for message in worst_server:
        assert len(message.to_json().encode()) <= MAX_TEXT_FRAME, type(message)
        assert parse_server_message(message.to_json()) == message


def test_max_frame_covers_both_kinds() -> None:
    assert max(MAX_TEXT_FRAME, MAX_BINARY_FRAME) == MAX_FRAME


# =================================================================================== secrets


def test_logon_repr_hides_credentials() -> None:
    logon = Logon(
        channels=("Ops",),
        seq=1,
        auth_token="AUTH-s3cr3t",
        refresh_token="REFRESH-s3cr3t",
        username="alice",
        password="PASS-s3cr3t",
    )
    for text in (repr(logon), str(logon)):
        assert "alice" in text and "Ops" in text
        assert "s3cr3t" not in text


def test_pair_repr_hides_code() -> None:
    pair = Pair(code="CODE-s3cr3t-918273", device_name="kitchen radio", seq=2)
    assert "kitchen radio" in repr(pair)
    assert "s3cr3t" not in repr(pair) and "918273" not in repr(pair)
    assert "s3cr3t" not in str(pair)


def test_response_repr_hides_tokens() -> None:
    response = Response(
        seq=3, refresh_token="REFRESH-s3cr3t", auth_token="AUTH-s3cr3t", channels=("Ops",)
    )
    assert "seq=3" in repr(response) and "Ops" in repr(response)
    assert "s3cr3t" not in repr(response) and "s3cr3t" not in str(response)


MARK = "\u2063secret\u2063"  # so that a secret cannot match a name by chance


@given(logons(), pairs, responses)
def test_reprs_never_show_secrets(logon: Logon, pair: Pair, response: Response) -> None:
    def mark(value: str | None) -> str | None:
        return None if value is None else MARK + value

    logon = dataclasses.replace(
        logon,
        auth_token=mark(logon.auth_token),
        refresh_token=mark(logon.refresh_token),
        password=mark(logon.password),
    )
    pair = dataclasses.replace(pair, code=MARK + pair.code)
    response = dataclasses.replace(
        response, refresh_token=mark(response.refresh_token), auth_token=mark(response.auth_token)
    )
    for message in (logon, pair, response):
        assert MARK not in repr(message)
        assert MARK not in str(message)
    assert MARK in logon.to_json() and MARK in pair.to_json()  # still sent, of course
    assert repr(logon.channels) in repr(logon)
    assert repr(pair.device_name) in repr(pair)


# ================================================================================ properties


@given(client_commands)
def test_client_commands_round_trip(message: Any) -> None:
    frame = message.to_json()
    assert parse_client_message(frame) == message
    assert parse_client_message(frame.encode()) == message
    assert json.loads(frame)["command"] == message.COMMAND
    assert frame == json.dumps(json.loads(frame), separators=(",", ":"), ensure_ascii=False)


@given(server_messages)
def test_server_messages_round_trip(message: Any) -> None:
    frame = message.to_json()
    assert parse_server_message(frame) == message
    assert parse_server_message(frame.encode()) == message
    obj = json.loads(frame)
    if isinstance(message, Response):
        assert "command" not in obj
        assert obj["seq"] == message.seq
        assert ("success" in obj) == (message.error is None)
    else:
        assert obj["command"] == message.COMMAND


@given(audio_packets)
def test_audio_packets_round_trip(packet: AudioPacket) -> None:
    frame = packet.encode()
    assert len(frame) == AUDIO_HEADER_SIZE + len(packet.payload) <= MAX_BINARY_FRAME
    assert parse_audio_packet(frame) == packet
    assert parse_audio_packet(memoryview(frame)) == packet
    assert audio_stream_id(frame) == packet.stream_id


@given(codec_headers(), durations, seqs)
def test_messages_with_codec_headers_keep_them(
    header: CodecHeader, duration: int, seq: int | None
) -> None:
    start = StartStream(codec_header=header, packet_duration=duration, seq=seq)
    assert json.loads(start.to_json())["codec_header"] == header.encode()
    parsed = parse_client_message(start.to_json())
    assert isinstance(parsed, StartStream)
    assert parsed.codec_header == header


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_text_parsers(frame: str | bytes) -> None:
    """Both text parsers either parse or raise ProtocolError; what parses re-parses the same."""
    client = _parse_or_error(parse_client_message, frame, PARSE_ERRORS)
    if client is not None:
        assert parse_client_message(client.to_json()) == client
    server = _parse_or_error(parse_server_message, frame, PARSE_ERRORS)
    if server is not None:
        assert parse_server_message(server.to_json()) == server


@FUZZ
@given(st.binary(max_size=20_000))
def test_fuzz_arbitrary_bytes(frame: bytes) -> None:
    _check_text_parsers(frame)
    packet = _parse_or_error(parse_audio_packet, frame, frozenset({INVALID_AUDIO_PACKET}))
    if packet is not None:
        assert packet.encode() == frame
        assert audio_stream_id(frame) == packet.stream_id
    else:
        assert _error(audio_stream_id, frame).error == INVALID_AUDIO_PACKET


@FUZZ
@given(st.binary(max_size=MAX_BINARY_FRAME + 16).map(lambda tail: b"\x01" + tail))
def test_fuzz_audio_frames_and_stream_id_agree(frame: bytes) -> None:
    try:
        packet = parse_audio_packet(frame)
    except ProtocolError as exc:
        assert exc.error == INVALID_AUDIO_PACKET
        assert _error(audio_stream_id, frame).error == INVALID_AUDIO_PACKET
        assert len(frame) <= AUDIO_HEADER_SIZE or len(frame) > MAX_BINARY_FRAME
    else:
        assert audio_stream_id(frame) == packet.stream_id
        assert audio_stream_id(memoryview(frame)) == packet.stream_id
        assert packet.encode() == frame


@FUZZ
@given(st.text(max_size=2_000))
def test_fuzz_arbitrary_text(frame: str) -> None:
    _check_text_parsers(frame)
    _check_text_parsers(frame.encode("utf-8", "surrogatepass"))


@FUZZ
@given(json_documents, st.booleans())
def test_fuzz_arbitrary_json(document: Any, ascii_only: bool) -> None:
    frame = _serialise(document, ascii_only)
    _check_text_parsers(frame)
    if ascii_only:
        _check_text_parsers(frame.encode())


@FUZZ
@given(client_commands, field_dicts, st.booleans())
def test_fuzz_valid_commands_with_extra_or_changed_fields(
    message: Any, extra: dict[str, Any], ascii_only: bool
) -> None:
    """Start from a valid command and overwrite some of its fields with random values."""
    obj = {**json.loads(message.to_json()), **extra}
    _check_text_parsers(_serialise(obj, ascii_only))


@FUZZ
@given(server_messages, field_dicts, st.booleans())
def test_fuzz_valid_server_messages_with_extra_or_changed_fields(
    message: Any, extra: dict[str, Any], ascii_only: bool
) -> None:
    obj = {**json.loads(message.to_json()), **extra}
    _check_text_parsers(_serialise(obj, ascii_only))


@given(
    client_commands,
    st.dictionaries(st.text(min_size=1, max_size=8), finite_json_values, max_size=4),
)
def test_unknown_fields_are_ignored(message: Any, extra: dict[str, Any]) -> None:
    obj = json.loads(message.to_json())
    obj.update({f"x-{key}": value for key, value in extra.items()})
    assert parse_client_message(json.dumps(obj)) == message
