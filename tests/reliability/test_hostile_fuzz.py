"""Fuzzing the live room server (hypothesis) while a talk goes on.

One logged-on client (a user of room beta only) and one anonymous client send bursts of
generated frames: arbitrary text, JSON of any shape, messages shaped like every command with
fields of the wrong types and values, random bytes, and audio packets aimed at the talk in room
alpha (its real stream id), at made-up stream ids and at their own streams. Meanwhile a talker in
alpha streams to a listener.

After every burst: the listener got the talker's packets, all of them, in order, and nothing else
(no injected audio, no stream stop); the server still answers a logon; nothing was logged at
ERROR (an unexpected exception in a handler is logged so and answered "internal server error").
At the end the server holds no state for connections that are gone (sessions, room members).

The server runs on an event loop in a thread of its own: hypothesis drives examples from the
test's (synchronous) thread and hands each burst to that loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
import threading
from collections import Counter
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from channel_client import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from relkit import PASSWORDS, fast_server_settings, user_client
from waits import eventually
from websockets.exceptions import ConnectionClosed

from pttd.server.app import RoomServer
from pttd.server.registry import Registry
from pttd.wire import messages as p

T = TypeVar("T")
EXAMPLE_TIMEOUT = 30.0
PACKET_INTERVAL = 0.02  # the honest talker sends as a device does: one 20 ms packet at a time
NO_PINGS: dict[str, Any] = {"ping_interval": None}  # see Live._setup

COMMANDS = [
    "logon",
    "start_stream",
    "stop_stream",
    "send_text_message",
    "pair",
    "unpair",
    "on_stream_start",
    "launch_missiles",
]
FIELDS = [
    "seq",
    "auth_token",
    "refresh_token",
    "username",
    "password",
    "channel",
    "channels",
    "listen_only",
    "type",
    "codec",
    "codec_header",
    "packet_duration",
    "stream_id",
    "priority",
    "text",
    "for",
    "code",
    "device_name",
    "version",
]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(["alpha", "beta", "gamma", "gD4BPA==", "audio", "opus", "emergency", ""])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)
command_shaped = st.builds(
    lambda command, fields: json.dumps({"command": command, **fields}),
    st.sampled_from(COMMANDS) | st.text(max_size=12),
    st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), json_values, max_size=6),
)
# Real commands with plausible values ("$victim" and "$own" become the talk's stream id and the
# sender's own last stream id when sent), and the same with one field replaced by anything.
seqs = st.integers(min_value=0, max_value=2**31) | st.none()
rooms = st.sampled_from(["alpha", "beta", "gamma"])
targets = st.sampled_from(["$victim", "$own"]) | st.integers(min_value=-5, max_value=2**33)
real_commands = st.one_of(
    st.fixed_dictionaries(
        {
            "command": st.just("start_stream"),
            "seq": seqs,
            "type": st.just("audio"),
            "codec": st.just("opus"),
            "codec_header": st.sampled_from(["gD4BPA==", "gD4BFA==", "AAAAAA==", "!"]),
            "packet_duration": st.sampled_from([20, 60, 0, -1]),
            "channel": rooms | st.none(),
            "priority": st.sampled_from(["normal", "emergency", "x"]),
        }
    ),
    st.fixed_dictionaries(
        {"command": st.just("stop_stream"), "seq": seqs, "stream_id": targets, "channel": rooms}
    ),
    st.fixed_dictionaries(
        {
            "command": st.just("send_text_message"),
            "seq": seqs,
            "channel": rooms,
            "text": st.text(max_size=50),
            "for": st.sampled_from(["alice", "bob", "mallory"]),
        }
    ),
    st.fixed_dictionaries(
        {
            "command": st.just("logon"),
            "seq": seqs,
            "channels": st.lists(rooms, max_size=3),
            "auth_token": st.text(max_size=50),
        }
    ),
    st.fixed_dictionaries(
        {
            "command": st.just("logon"),
            "seq": seqs,
            "channel": rooms,
            "username": st.sampled_from(["alice", "bob", "mallory", "nobody"]),
            "password": st.text(max_size=20),
        }
    ),
    st.fixed_dictionaries(
        {
            "command": st.just("pair"),
            "seq": seqs,
            "code": st.text(alphabet="0123456789ABCDEFGHJKMNPQRSTVWXYZ-", max_size=16),
            "device_name": st.text(max_size=70),
        }
    ),
    st.fixed_dictionaries({"command": st.just("unpair"), "seq": seqs}),
)
mutated_commands = st.builds(
    lambda message, key, value: {**message, key: value},
    real_commands,
    st.sampled_from(FIELDS),
    json_values,
)
text_frames = (
    (real_commands | mutated_commands).map(json.dumps)
    | command_shaped
    | json_values.map(json.dumps)
    | st.text(max_size=200)
    | st.sampled_from(['{"command": "logon"', "[]", "null", '{"seq": NaN}', "\x00", "{}" * 3])
)
# Binary: ("raw", bytes) or ("audio", target, packet_id, payload); the target is resolved at run
# time: "victim" is the talk in alpha, "own" the sender's last stream, else a made-up id.
binary_frames = st.tuples(st.just("raw"), st.binary(max_size=120)) | st.tuples(
    st.just("audio"),
    st.sampled_from(["victim", "own"]) | st.integers(min_value=0, max_value=p.MAX_U32),
    st.integers(min_value=0, max_value=p.MAX_U32),
    st.binary(min_size=1, max_size=120),
)
frames = st.lists(
    st.tuples(st.sampled_from(["user", "anonymous"]), text_frames | binary_frames),
    min_size=1,
    max_size=10,
)


TALK = struct.Struct(">I")


class Live:
    """The server and its clients, on an event loop in another thread."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="live-server")
        self.packet_no = 0
        self.next_packet_due = 0.0
        self.bursts = 0
        self.reconnects = 0
        self.own_stream = 0
        self.answers: Counter[str] = Counter()  # what the fuzzers were told, by kind

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = EXAMPLE_TIMEOUT) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> None:
        self.thread.start()
        self.run(self._setup())

    def stop(self) -> None:
        try:
            self.run(self._teardown())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    async def _setup(self) -> None:
        # No keepalive pings during the run, from the server or the clients: websockets draws
        # their payloads from `random`, which hypothesis rightly flags when it happens while it
        # generates an example. The talk in alpha lasts the whole run: no talk-time limit, and no
        # idle limit either (hypothesis may take seconds between examples while it shrinks).
        s = fast_server_settings(
            auth_failures=10**9,
            max_talk_time=3600.0,
            stream_idle_timeout=3600.0,
            ping_interval=3600.0,
            ping_timeout=3600.0,
        )
        self.server = RoomServer(self.registry, s)
        await self.server.start()
        self.url = self.server.url
        code = await asyncio.to_thread(self.registry.create_pair_code, ["alpha"])
        pairing = await asyncio.to_thread(self.registry.redeem_pair_code, code.code, "probe")
        self.probe_token = pairing.auth_token
        self.talker = await user_client(self.url, "alice", PASSWORDS["alice"], **NO_PINGS)
        self.listener = await user_client(self.url, "bob", PASSWORDS["bob"], **NO_PINGS)
        answer = await self.talker.start("alpha")
        assert answer.stream_id is not None
        self.stream_id = answer.stream_id
        await self.listener.next_of(p.OnStreamStart)
        self.user = await Client.connect(self.url, **NO_PINGS)
        answer = await self.user.logon(("beta",), username="mallory", password=PASSWORDS["mallory"])
        assert answer.success and answer.refresh_token
        self.refresh = answer.refresh_token
        self.anonymous = await Client.connect(self.url, **NO_PINGS)

    async def _teardown(self) -> None:
        for client in (self.talker, self.listener, self.user, self.anonymous):
            await client.close()
        await self.server.close()

    def _read_answers(self) -> None:
        """What the fuzzers were told: never an internal error; note the user's own stream."""
        for client in (self.user, self.anonymous):
            for event in client.drain():
                error = getattr(event, "error", None)
                assert error != p.INTERNAL_SERVER_ERROR, event
                self.answers[f"{type(event).__name__}: {error or 'ok'}"] += 1
                if isinstance(event, p.Response) and event.stream_id is not None:
                    self.own_stream = event.stream_id

    async def _ensure_clients(self) -> None:
        """Flooding, oversized frames or the logon deadline may have closed a fuzzing client:
        a new one takes its place (the user logs on again with its refresh token)."""
        self._read_answers()
        if self.user.closed.is_set():
            await self.user.close()
            self.reconnects += 1
            self.user = await Client.connect(self.url, **NO_PINGS)
            answer = await self.user.logon(("beta",), refresh_token=self.refresh)
            assert answer.success, answer
            self.refresh = answer.refresh_token or self.refresh
        if self.anonymous.closed.is_set():
            await self.anonymous.close()
            self.reconnects += 1
            self.anonymous = await Client.connect(self.url, **NO_PINGS)

    def _resolve(self, frame: str | tuple[Any, ...]) -> str | bytes:
        if isinstance(frame, str):
            own, victim = str(self.own_stream), str(self.stream_id)
            return frame.replace('"$own"', own).replace('"$victim"', victim)
        if frame[0] == "raw":
            data: bytes = frame[1]
            return data
        _, target, packet_id, payload = frame
        stream_id = {"victim": self.stream_id, "own": self.own_stream}.get(target, target)
        head = bytes([p.AUDIO_PACKET_TYPE]) + TALK.pack(stream_id) + TALK.pack(packet_id)
        return head + bytes(payload)

    async def _talk(self, expected: list[int]) -> None:
        """One packet of the honest talk, paced as a real talker's: never faster than one per
        20 ms, so the server's flood limit (meant for the fuzzers) never hits the talker."""
        loop = asyncio.get_running_loop()
        due = max(self.next_packet_due, loop.time())
        await asyncio.sleep(due - loop.time())
        self.next_packet_due = due + PACKET_INTERVAL
        self.packet_no += 1
        expected.append(self.packet_no)
        await self.talker.send_audio(self.stream_id, TALK.pack(self.packet_no) + bytes(40))

    async def burst(self, frames: list[tuple[str, str | tuple[Any, ...]]]) -> None:
        self.bursts += 1
        await self._ensure_clients()
        expected: list[int] = []
        for i, (who, frame) in enumerate(frames):
            client = self.user if who == "user" else self.anonymous
            with contextlib.suppress(ConnectionClosed):  # by hand: see Client.send
                await client.send(self._resolve(frame))
            if i % 2 == 0:
                await self._talk(expected)
        await self._talk(expected)

        # The listener hears the talk, all of it, in order, and nothing else.
        got: list[int] = []
        while len(got) < len(expected):
            event = await self.listener.next()
            if isinstance(event, p.OnChannelStatus):
                continue
            assert isinstance(event, p.AudioPacket), f"the listener got {event!r}"
            assert event.stream_id == self.stream_id, "audio injected into the talk's room"
            got.append(TALK.unpack_from(event.payload)[0])
        assert got == expected

        self._read_answers()

        # The server still answers a logon.
        probe = await Client.connect(self.url, **NO_PINGS)
        answer = await probe.logon(("alpha",), auth_token=self.probe_token)
        assert answer.success, answer
        await probe.close()

    async def settled(self) -> None:
        """Connections that are gone left nothing behind on the server."""
        # Answers to slow requests (password checks) come in: the server deals with each
        # connection's frames in order, so a barrier's answer comes after them.
        for client in (self.user, self.anonymous):
            with contextlib.suppress(ConnectionClosed, ConnectionError):
                await client.sync()
        await self._ensure_clients()
        self._read_answers()
        server = self.server
        live = {self.talker.ws, self.listener.ws, self.user.ws, self.anonymous.ws}
        await eventually(
            lambda: len(server.core.sessions) == len(live), 10, "the server let the gone ones go"
        )
        alpha = server.core.directory.room("alpha")
        assert {s.name for s in alpha.members} == {"alice", "bob"}
        assert set(server.core.streams) <= {self.stream_id, self.own_stream}
        assert alpha.stream is not None and alpha.stream.stream_id == self.stream_id
        assert len(server.core.auth_failures) <= 1  # one address: 127.0.0.1
        beta = server.core.directory.get("beta")
        assert beta is None or {s.name for s in beta.members} <= {"mallory"}


@pytest.fixture
def live(registry: Registry) -> Iterator[Live]:
    rig = Live(registry)
    rig.start()
    try:
        yield rig
    finally:
        rig.stop()
        print(f"\nfuzz: {rig.bursts} bursts, {rig.reconnects} reconnects, answers {rig.answers}")


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(burst=frames)
def test_fuzzed_clients_do_not_disturb_the_server_or_a_talk(
    live: Live, caplog: pytest.LogCaptureFixture, burst: list[tuple[str, Any]]
) -> None:
    caplog.set_level(logging.WARNING)
    live.run(live.burst(burst))
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors][:3]


def test_after_the_fuzz_nothing_is_left_behind(live: Live) -> None:
    """A bounded run of bursts with every kind of frame, then the server's state is checked."""
    junk: list[tuple[str, Any]] = [
        (
            "anonymous",
            '{"command":"logon","seq":1,"username":"x","password":"y","channel":"alpha"}',
        ),
        ("anonymous", '{"command":"pair","seq":2,"code":"0000-0000-0000","device_name":"z"}'),
        ("user", p.StartStream(p.CodecHeader(), 20, seq=3, channel="beta").to_json()),
        ("user", '{"command":"stop_stream","seq":5,"stream_id":"$own","channel":"beta"}'),
        ("user", ("audio", "own", 0, b"x" * 20)),
        ("user", ("audio", "victim", 0, b"x" * 20)),
        ("user", p.StartStream(p.CodecHeader(), 20, seq=4, channel="alpha").to_json()),
        ("user", '{"command":"stop_stream","seq":6,"stream_id":"$victim"}'),
        ("anonymous", ("audio", "victim", 0, b"x" * 20)),
    ]
    too_big: list[tuple[str, Any]] = [("user", ("raw", b"\x01" + bytes(p.MAX_FRAME)))]
    for _ in range(5):
        live.run(live.burst(junk))
        live.run(live.burst(too_big))  # closes the sender, and only the sender
    live.run(live.settled())
    assert live.reconnects >= 5  # the oversized frame cost the user its connection each time
    told = live.answers
    assert told["Response: not authorized"] >= 5  # the anonymous logon, the pairing
    assert told["OnError: invalid audio packet"] >= 5  # the user's packets into alice's talk
    assert told["OnError: not logged in"] >= 5  # the anonymous client's packet
    assert told["Response: ok"] >= 5  # the user's own talks in beta
    assert told["Response: failed to stop stream"] >= 5  # alice's talk is not the user's
