"""End-to-end encrypted rooms in the room server's connection rules (:mod:`pttd.server.session`),
by plain calls, frame for frame.

No sockets, no clock: connections are strings and :class:`Harness` plays both the asyncio server
(it answers the core's registry calls) and the registry (:class:`Registry` below: which rooms
are encrypted and which room keys the key authority sealed for whom, as
:meth:`pttd.server.registry.Registry.current` would report them). The core learns of a change
only at :meth:`Harness.poll` (the server's look at the registry) or from a logon, which reads the
registry afresh. Frames are compared as the JSON the client receives (and audio as bytes), so that
a field sent or left out shows.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from pttd.e2ee.sframe import CipherSuite, Sender
from pttd.server.session import (
    CheckLogon,
    Close,
    CoreSettings,
    IssueRefreshToken,
    Principal,
    Send,
    ServerCore,
)
from pttd.wire import messages as p

CLEAR = p.CodecHeader()  # the Channel API's 4 bytes: gLsBFA==
SFRAME = p.CodecHeader(sframe_suite=CipherSuite.AES_128_CTR_HMAC_SHA256_80)  # 6: gLsBFAAB
IDENTITY = "aWRlbnRpdHkta2V5LW9mLWEtY2xpZW50"  # a public identity key, base64url
REFRESH = "r3fr3sh"

Kind = Literal["user", "device"]


@dataclass
class Registry:
    """What the admin and the key authority set: the rooms of each user and device, the
    encrypted rooms, the sealed room keys ``(room, member) -> sealed``. :meth:`principal` is
    what the real registry hands the server: only encrypted rooms of the principal's own, and
    only keys sealed for it in those."""

    rooms: dict[str, tuple[Kind, frozenset[str]]] = field(
        default_factory=lambda: {
            "ann": ("user", frozenset({"ops", "board"})),
            "bob": ("user", frozenset({"ops", "board"})),
            "dan": ("user", frozenset({"ops", "board"})),
            "van": ("device", frozenset({"ops"})),  # a Channel-API radio: no identity key
            "car": ("device", frozenset({"board"})),  # approved by nobody yet: no key sealed
        }
    )
    encrypted: set[str] = field(default_factory=lambda: {"board"})
    sealed: dict[tuple[str, str], str] = field(
        default_factory=lambda: {
            ("board", "ann"): "ann-board-1",
            ("board", "bob"): "bob-board-1",
            ("board", "dan"): "dan-board-1",
        }
    )
    emergency: set[str] = field(default_factory=set)

    def principal(self, name: str) -> Principal:
        kind, rooms = self.rooms[name]
        encrypted = frozenset(rooms & self.encrypted)
        keys = tuple(
            sorted((r, k) for (r, m), k in self.sealed.items() if m == name and r in encrypted)
        )
        return Principal(
            kind,
            name,
            rooms,
            credential=f"hash-of-{name}" if kind == "device" else "",
            emergency=name in self.emergency,
            encrypted=encrypted,
            room_keys=keys,
        )

    def set_encrypted(self, room: str, encrypted: bool) -> None:
        """As :meth:`pttd.server.registry.Registry.set_encrypted`: a room made clear loses its
        room keys."""
        if encrypted:
            self.encrypted.add(room)
        else:
            self.encrypted.discard(room)
            self.sealed = {k: v for k, v in self.sealed.items() if k[0] != room}


class Harness:
    """The core, the registry, and every frame each connection was sent, in order."""

    def __init__(self, registry: Registry | None = None, **core: Any) -> None:
        self.core: ServerCore[str] = ServerCore(CoreSettings(**core))
        self.registry = registry or Registry()
        self.got: dict[str, list[str | bytes]] = defaultdict(list)
        self.closed: dict[str, tuple[int, str]] = {}
        self.sent: list[Send[str]] = []

    def run(self, actions: list[Any]) -> list[Any]:
        done: list[Any] = []
        for action in actions:
            done.append(action)
            if isinstance(action, Send):
                self.sent.append(action)
                for conn in action.to:
                    self.got[conn].append(action.data)
            elif isinstance(action, Close):
                self.closed.setdefault(action.conn, (action.code, action.reason))
            elif isinstance(action, CheckLogon):
                m = action.logon
                name = m.auth_token or m.username
                who = self.registry.principal(name) if name in self.registry.rooms else None
                done += self.run(self.core.logon_checked(action.conn, m, who, 0.0))
            elif isinstance(action, IssueRefreshToken):
                done += self.run(
                    self.core.refresh_issued(action.conn, action.logon, action.principal, REFRESH)
                )
            else:  # pragma: no cover - pairing is not used here
                raise AssertionError(action)
        return done

    def poll(self) -> list[Any]:
        """The server's look at the registry (``RoomServer._watch_registry``)."""
        live = self.core.live_principals()
        current = {x: self.registry.principal(x.name) for x in live}
        return self.run(self.core.principals_changed(current))

    # the client's side ----------------------------------------------------------------------

    def send(self, conn: str, message: Any) -> list[Any]:
        return self.run(self.core.text(conn, message.to_json(), 0.0))

    def logon(
        self,
        conn: str,
        name: str,
        rooms: tuple[str, ...],
        key: str | None = IDENTITY,
        seq: int = 1,
        **extra: Any,
    ) -> dict[str, Any]:
        """Connect ``conn`` (if new) and log on as ``name`` (an ``identity_key`` unless
        ``key`` is None); the answer's JSON."""
        if conn not in self.core.sessions:
            self.run(self.core.connected(conn, "192.0.2.1", 0.0))
        if self.registry.rooms.get(name, ("user",))[0] == "device":
            creds: dict[str, Any] = {"auth_token": name}
        else:
            creds = {"username": name, "password": "right"}
        self.send(conn, p.Logon(rooms, seq=seq, identity_key=key, **creds, **extra))
        return self.answer(conn, seq)

    def talk(
        self, conn: str, room: str, header: p.CodecHeader, seq: int = 2, **extra: Any
    ) -> dict[str, Any]:
        self.send(conn, p.StartStream(header, 20, seq=seq, channel=room, **extra))
        return self.answer(conn, seq)

    def audio(self, conn: str, stream_id: int, payload: bytes) -> list[Any]:
        frame = p.AudioPacket(stream_id, 0, payload).encode()
        return self.run(self.core.binary(conn, frame, 0.0))

    def mark(self, *conns: str) -> dict[str, int]:
        return {c: len(self.got[c]) for c in conns}

    def frames(self, conn: str, since: int | dict[str, int] = 0) -> list[Any]:
        """What ``conn`` was sent (from ``since`` on): text frames as JSON objects, audio as
        bytes."""
        start = since[conn] if isinstance(since, dict) else since
        return [f if isinstance(f, bytes) else json.loads(f) for f in self.got[conn][start:]]

    def answer(self, conn: str, seq: int) -> dict[str, Any]:
        answers = [f for f in self.frames(conn) if isinstance(f, dict) and f.get("seq") == seq]
        assert answers, f"{conn} got no answer to {seq}: {self.frames(conn)}"
        answer: dict[str, Any] = answers[-1]
        return answer


# --- the frames, as the client reads them -------------------------------------------------------


def ok(seq: int, **fields: Any) -> dict[str, Any]:
    return {"seq": seq, "success": True, **fields}


def logged_on(seq: int = 1, encrypted: list[str] | None = None) -> dict[str, Any]:
    answer = ok(seq, refresh_token=REFRESH)
    if encrypted is not None:
        answer["encrypted"] = encrypted
    return answer


def refused(seq: int, error: str, reason: str) -> dict[str, Any]:
    return {"seq": seq, "error": error, "reason": reason}


def status(room: str, users: int, *, encrypted: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "command": "on_channel_status",
        "channel": room,
        "status": "online",
        "users_online": users,
    }
    if encrypted:
        out["encrypted"] = True
    return out


def offline(room: str) -> dict[str, Any]:
    return {"command": "on_channel_status", "channel": room, "status": "offline", "users_online": 0}


def room_key(room: str, key: str) -> dict[str, Any]:
    return {"command": "on_room_key", "channel": room, "key": key}


def stream_start(stream_id: int, room: str, talker: str, header: str) -> dict[str, Any]:
    return {
        "command": "on_stream_start",
        "type": "audio",
        "codec": "opus",
        "codec_header": header,
        "packet_duration": 20,
        "stream_id": stream_id,
        "channel": room,
        "from": talker,
    }


def stream_stop(stream_id: int, room: str, reason: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"command": "on_stream_stop", "stream_id": stream_id, "channel": room}
    if reason is not None:
        out["reason"] = reason
    return out


def packet(stream_id: int, packet_id: int, payload: bytes) -> bytes:
    return p.AudioPacket(stream_id, packet_id, payload).encode()


ENCRYPTED_ROOM = p.REASON_ENCRYPTED_ROOM

# --------------------------------------------------------------------------- logon


def test_the_codec_headers_are_the_documented_bytes() -> None:
    assert (CLEAR.encode(), SFRAME.encode()) == ("gLsBFA==", "gLsBFAAB")


@pytest.mark.parametrize("listen_only", [False, True])
def test_a_logon_without_an_identity_key_is_refused_from_an_encrypted_room_and_told_why(
    listen_only: bool,
) -> None:
    h = Harness(auth_failures=2)
    answer = h.logon("a", "ann", ("ops", "board"), key=None, listen_only=listen_only)
    assert h.frames("a") == [refused(1, p.NOT_AUTHORIZED, ENCRYPTED_ROOM)]
    assert answer == refused(1, p.NOT_AUTHORIZED, ENCRYPTED_ROOM)
    assert h.core.sessions["a"].principal is None  # nothing joined, not even the clear room
    assert h.core.directory.get("ops") is None and h.core.directory.get("board") is None
    # The credential is good: refusals for this reason are no failed attempts.
    for seq in (2, 3, 4):
        assert h.logon("a", "ann", ("board",), key=None, seq=seq)["reason"] == ENCRYPTED_ROOM
    # The same connection, still not logged on, may join the clear room: as before, no
    # `encrypted` in the answer nor in the status, although ann has an encrypted room.
    assert h.logon("a", "ann", ("ops",), key=None, seq=5, listen_only=listen_only) == logged_on(5)
    assert h.frames("a")[-1] == status("ops", 1)
    assert h.core.sessions["a"].sframe is False


def test_the_answer_names_the_encrypted_rooms_then_each_room_gets_its_key_and_its_status() -> None:
    h = Harness()
    h.logon("a", "ann", ("board", "ops"))
    assert h.frames("a") == [
        logged_on(encrypted=["board"]),
        room_key("board", "ann-board-1"),
        status("board", 1, encrypted=True),
        status("ops", 1),
    ]
    # Nothing sealed for car yet: no key, the rest alike.
    at = h.mark("a")
    h.logon("c", "car", ("board",))
    assert h.frames("c") == [logged_on(encrypted=["board"]), status("board", 2, encrypted=True)]
    # bob joins in the order he asked; ann hears of him, never of his key.
    h.logon("b", "bob", ("ops", "board"))
    assert h.frames("b") == [
        logged_on(encrypted=["board"]),
        status("ops", 2),
        room_key("board", "bob-board-1"),
        status("board", 3, encrypted=True),
    ]
    assert h.frames("a", at) == [
        status("board", 2, encrypted=True),
        status("ops", 2),
        status("board", 3, encrypted=True),
    ]
    assert h.frames("c")[2:] == [status("board", 3, encrypted=True)]


def test_a_client_with_an_identity_key_in_clear_rooms_only_is_answered_as_before() -> None:
    h = Harness()
    assert h.logon("a", "ann", ("ops",)) == logged_on()  # no `encrypted`: none joined is
    assert h.frames("a") == [logged_on(), status("ops", 1)]
    assert h.core.sessions["a"].sframe is True


# --------------------------------------------------------------------------- streams and text


def test_a_clear_stream_in_an_encrypted_room_and_an_sframe_one_in_a_clear_room_are_refused() -> (
    None
):
    h = Harness()
    h.logon("a", "ann", ("board", "ops"))
    h.logon("b", "bob", ("board", "ops"))
    at = h.mark("a", "b")
    assert h.talk("a", "board", CLEAR, seq=2) == refused(
        2, p.FAILED_TO_START_STREAM, ENCRYPTED_ROOM
    )
    assert h.talk("a", "ops", SFRAME, seq=3) == refused(
        3, p.FAILED_TO_START_STREAM, p.REASON_CLEAR_ROOM
    )
    # Without a seq: refused without a word, as every refused start_stream.
    h.send("a", p.StartStream(CLEAR, 20, channel="board"))
    h.send("a", p.StartStream(SFRAME, 20, channel="ops"))
    assert h.frames("a", at) == [
        refused(2, p.FAILED_TO_START_STREAM, ENCRYPTED_ROOM),
        refused(3, p.FAILED_TO_START_STREAM, p.REASON_CLEAR_ROOM),
    ]
    assert h.frames("b", at) == [] and not h.core.streams
    # An emergency is refused alike: the kind is checked before the floor.
    h.registry.emergency.add("dan")
    h.logon("d", "dan", ("board",))
    assert h.talk("d", "board", CLEAR, seq=4, priority="emergency") == refused(
        4, p.FAILED_TO_START_STREAM, ENCRYPTED_ROOM
    )
    # The right kind in each room: two floors.
    assert h.talk("a", "board", SFRAME, seq=5) == ok(5, stream_id=1)
    assert h.talk("b", "ops", CLEAR, seq=6) == ok(6, stream_id=2)
    assert h.frames("b", at) == [
        status("board", 3, encrypted=True),
        stream_start(1, "board", "ann", "gLsBFAAB"),
        ok(6, stream_id=2),
    ]


def test_text_is_refused_in_an_encrypted_room_and_goes_as_before_in_a_clear_one() -> None:
    h = Harness()
    h.logon("a", "ann", ("board", "ops"))
    h.logon("b", "bob", ("board", "ops"))
    at = h.mark("a", "b")
    h.send("a", p.SendTextMessage("board", "the code is 1234", seq=4))
    h.send("a", p.SendTextMessage("board", "bob only", seq=5, for_="bob"))
    h.send("a", p.SendTextMessage("ops", "hello", seq=6))
    assert h.frames("a", at) == [
        refused(4, p.NOT_AUTHORIZED, ENCRYPTED_ROOM),
        refused(5, p.NOT_AUTHORIZED, ENCRYPTED_ROOM),
        ok(6),
    ]
    assert h.frames("b", at) == [
        {
            "command": "on_text_message",
            "channel": "ops",
            "from": "ann",
            "text": "hello",
            "message_id": 1,  # the refused ones took no number
        }
    ]


def clear_room_scenario(h: Harness, ann_rooms: tuple[str, ...], ann_key: str | None) -> None:
    """A Channel-API radio (van) and ann in the clear room ops: each talks, both write."""
    h.logon("v", "van", ("ops",), key=None)
    h.logon("a", "ann", ann_rooms, key=ann_key)
    stream = h.talk("a", "ops", CLEAR)["stream_id"]
    for i in range(3):
        h.audio("a", stream, bytes([0xFC, i]) * 20)
    h.send("a", p.StopStream(stream, seq=3))
    h.send("a", p.SendTextMessage("ops", "over", seq=4))
    mine = h.talk("v", "ops", CLEAR, seq=5)["stream_id"]
    h.audio("v", mine, b"\x01\x02\x03")
    h.send("v", p.SendTextMessage("ops", "roger", seq=6))
    h.run(h.core.disconnected("v"))  # the talk ends for ann
    h.run(h.core.disconnected("a"))


def test_a_clear_room_works_exactly_as_before_beside_an_encrypted_one() -> None:
    """The radio's frames are the same, byte for byte, whether or not ann (with an identity key)
    is in an encrypted room too; and they are the Channel API's."""
    before = Harness(Registry(encrypted=set(), sealed={}))
    clear_room_scenario(before, ("ops",), None)
    now = Harness()
    clear_room_scenario(now, ("board", "ops"), IDENTITY)
    assert now.got["v"] == before.got["v"]
    assert now.frames("v") == [
        logged_on(),
        status("ops", 1),
        status("ops", 2),
        stream_start(1, "ops", "ann", "gLsBFA=="),
        packet(1, 0, b"\xfc\x00" * 20),
        packet(1, 1, b"\xfc\x01" * 20),
        packet(1, 2, b"\xfc\x02" * 20),
        stream_stop(1, "ops"),
        {"command": "on_text_message", "channel": "ops", "from": "ann", "text": "over",
         "message_id": 1},
        ok(5, stream_id=2),
        ok(6),
    ]  # fmt: skip
    assert before.frames("a")[0] == logged_on() == before.answer("a", 1)
    assert now.frames("a")[0] == logged_on(encrypted=["board"])
    ann_in_ops = [
        f for f in now.frames("a") if not isinstance(f, dict) or f.get("channel") != "board"
    ]
    assert ann_in_ops[1:] == before.frames("a")[1:]  # ann's frames of ops: the same too


# --------------------------------------------------------------------------- relay, late entry


def test_sframe_audio_is_relayed_byte_for_byte_and_a_late_joiner_gets_key_status_and_talk() -> None:
    h = Harness()
    h.logon("a", "ann", ("board",))
    h.logon("c", "car", ("board",))
    assert h.talk("a", "board", SFRAME) == ok(2, stream_id=1)
    assert h.frames("c")[-1] == stream_start(1, "board", "ann", "gLsBFAAB")
    sender = Sender(CipherSuite.AES_128_CTR_HMAC_SHA256_80, kid=3, base_key=bytes(range(16)))
    sealed = [sender.encrypt(b"opus frame %d" % i) for i in range(3)]
    for payload in sealed[:2]:
        h.audio("a", 1, payload)
    # bob comes in mid-talk: his key, the room's status, then the talk with its SFrame suite.
    h.logon("b", "bob", ("board",))
    assert h.frames("b") == [
        logged_on(encrypted=["board"]),
        room_key("board", "bob-board-1"),
        status("board", 3, encrypted=True),
        stream_start(1, "board", "ann", "gLsBFAAB"),
    ]
    h.audio("a", 1, sealed[2])
    # The server renumbers packets and touches nothing else: header, counter, tag as sent.
    assert [f for f in h.frames("c") if isinstance(f, bytes)] == [
        packet(1, i, sealed[i]) for i in range(3)
    ]
    assert h.frames("b")[4:] == [packet(1, 2, sealed[2])]
    assert not [f for f in h.got["a"] if isinstance(f, bytes)]
    parsed = p.parse_server_message(json.dumps(h.frames("b")[3]))
    assert isinstance(parsed, p.OnStreamStart) and parsed.codec_header == SFRAME


# --------------------------------------------------------------------------- registry changes


def test_a_new_room_key_goes_to_that_members_sessions_in_that_room_only_and_only_once() -> None:
    h = Harness()
    h.logon("phone", "ann", ("board", "ops"))
    h.logon("laptop", "ann", ("board",))
    h.logon("desk", "ann", ("ops",))  # ann may join board, but this one did not
    h.logon("b", "bob", ("board",))
    at = h.mark("phone", "laptop", "desk", "b")
    h.registry.sealed[("board", "ann")] = "ann-board-2"  # a rotation, or an approval
    h.poll()
    assert h.frames("phone", at) == [room_key("board", "ann-board-2")]
    assert h.frames("laptop", at) == [room_key("board", "ann-board-2")]
    assert h.frames("desk", at) == [] and h.frames("b", at) == []
    assert h.poll() == []  # unchanged: nothing sent again
    h.registry.emergency.add("ann")  # another change of ann's: her keys are not sent again
    assert h.poll() == []
    principals = [h.core.sessions[c].principal for c in ("phone", "laptop", "desk")]
    assert all(x is not None and x.emergency for x in principals)
    h.registry.sealed[("board", "bob")] = "bob-board-2"
    h.poll()
    assert h.frames("b", at) == [room_key("board", "bob-board-2")]
    assert [len(h.frames(c, at)) for c in ("phone", "laptop", "desk")] == [1, 1, 0]
    # A key sealed for car, who logged on before its approval, reaches it live.
    h.logon("c", "car", ("board",))
    before = h.mark("c")
    h.registry.sealed[("board", "car")] = "car-board-1"
    h.poll()
    assert h.frames("c", before) == [room_key("board", "car-board-1")]


@pytest.mark.parametrize("talker_first", [True, False])
def test_a_room_turning_encrypted_ends_a_clear_talk_and_takes_the_clear_clients_out(
    talker_first: bool,
) -> None:
    """However the connections are ordered, the clear talk ends with `encrypted room` for
    everyone, its talker included, and the clients without an identity key leave the room."""
    h = Harness()
    if talker_first:
        h.logon("v", "van", ("ops",), key=None)  # a Channel-API radio: the talker
    h.logon("a", "ann", ("ops",))
    h.logon("old", "bob", ("ops",), key=None)  # bob on an old client too
    h.logon("b", "bob", ("ops",))
    if not talker_first:
        h.logon("v", "van", ("ops",), key=None)
    stream = h.talk("v", "ops", CLEAR)["stream_id"]
    h.audio("v", stream, b"clear")
    at = h.mark("v", "a", "old", "b")
    h.registry.set_encrypted("ops", True)
    h.registry.sealed.update({("ops", "ann"): "ann-ops-1", ("ops", "bob"): "bob-ops-1"})
    h.poll()
    stop = stream_stop(stream, "ops", ENCRYPTED_ROOM)
    assert h.frames("v", at) == [stop, offline("ops")]
    assert h.frames("old", at) == [stop, offline("ops")]
    assert h.frames("a", at) == [
        stop,
        status("ops", 2, encrypted=True),
        room_key("ops", "ann-ops-1"),
    ]
    assert h.frames("b", at) == [
        stop,
        status("ops", 2, encrypted=True),
        room_key("ops", "bob-ops-1"),
    ]
    room = h.core.directory.get("ops")
    assert room is not None and room.encrypted and room.stream is None
    assert [s.conn for s in room.members] == ["a", "b"]
    assert not h.closed  # the clear clients stay connected, in no room
    # The radio's packets still in flight are dropped without a word; it may not talk there.
    assert h.audio("v", stream, b"late") == []
    assert h.talk("v", "ops", CLEAR, seq=9) == {"seq": 9, "error": p.NOT_AUTHORIZED}
    assert h.poll() == []
    # The room is the encrypted one it now is.
    assert h.talk("a", "ops", CLEAR, seq=10)["reason"] == ENCRYPTED_ROOM
    assert h.talk("a", "ops", SFRAME, seq=11)["stream_id"] == stream + 1
    assert h.frames("b")[-1] == stream_start(stream + 1, "ops", "ann", "gLsBFAAB")


def test_a_room_turning_clear_again_ends_an_sframe_talk_and_keeps_its_members() -> None:
    h = Harness()
    h.logon("a", "ann", ("board",))
    h.logon("b", "bob", ("board",))
    assert h.talk("a", "board", SFRAME) == ok(2, stream_id=1)
    at = h.mark("a", "b")
    h.registry.set_encrypted("board", False)  # its room keys go with it
    h.poll()
    for conn in ("a", "b"):  # `encrypted` left out: the status is the Channel API's again
        assert h.frames(conn, at) == [stream_stop(1, "board", ENCRYPTED_ROOM), status("board", 2)]
    assert h.talk("a", "board", SFRAME, seq=3) == refused(
        3, p.FAILED_TO_START_STREAM, p.REASON_CLEAR_ROOM
    )
    assert h.talk("b", "board", CLEAR, seq=4) == ok(4, stream_id=2)
    h.send("a", p.SendTextMessage("board", "clear now", seq=5))
    assert h.answer("a", 5) == ok(5)
    # A Channel-API client may join it now.
    assert h.logon("c", "car", ("board",), key=None) == logged_on()
    assert h.frames("c")[1:] == [status("board", 3), stream_start(2, "board", "bob", "gLsBFA==")]


def test_a_logon_that_learns_first_that_a_room_turned_encrypted_ends_the_clear_talk() -> None:
    """The registry changed, the server has not looked yet, and a logon (which reads the
    registry) brings the news: the room is encrypted from then on, for everyone: the clear talk
    ends, clear clients leave, and the joiner never hears the clear talk."""
    h = Harness()
    h.logon("a", "ann", ("ops",))  # with an identity key, talking clear in a clear room
    h.logon("b", "bob", ("ops",))
    h.logon("v", "van", ("ops",), key=None)
    assert h.talk("a", "ops", CLEAR) == ok(2, stream_id=1)
    at = h.mark("a", "b", "v")
    h.registry.set_encrypted("ops", True)
    h.registry.sealed.update({("ops", n): f"{n}-ops-1" for n in ("ann", "bob", "dan")})
    h.logon("d", "dan", ("ops",))
    stop = stream_stop(1, "ops", ENCRYPTED_ROOM)
    assert h.frames("d") == [
        logged_on(encrypted=["ops"]),
        room_key("ops", "dan-ops-1"),
        status("ops", 3, encrypted=True),
    ]
    assert h.frames("a", at) == [stop, status("ops", 3, encrypted=True)]
    assert h.frames("b", at) == [stop, status("ops", 3, encrypted=True)]
    assert h.frames("v", at) == [stop, offline("ops")]
    assert h.audio("a", 1, b"late clear packet") == []
    # The server's look brings ann and bob their keys, and nothing else.
    at = h.mark("a", "b", "v", "d")
    h.poll()
    assert h.frames("a", at) == [room_key("ops", "ann-ops-1")]
    assert h.frames("b", at) == [room_key("ops", "bob-ops-1")]
    assert h.frames("v", at) == [] and h.frames("d", at) == []


def test_a_logon_that_learns_first_that_a_room_turned_clear_ends_the_sframe_talk() -> None:
    h = Harness()
    h.logon("a", "ann", ("board",))
    h.logon("b", "bob", ("board",))
    assert h.talk("a", "board", SFRAME) == ok(2, stream_id=1)
    at = h.mark("a", "b")
    h.registry.set_encrypted("board", False)
    assert h.logon("c", "car", ("board",), key=None) == logged_on()
    assert h.frames("c") == [logged_on(), status("board", 3)]  # no talk it could not decode
    for conn in ("a", "b"):
        assert h.frames(conn, at) == [stream_stop(1, "board", ENCRYPTED_ROOM), status("board", 3)]
    h.poll()
    assert [h.frames(c, at)[2:] for c in ("a", "b")] == [[], []]


def test_a_member_taken_out_of_an_encrypted_room_leaves_and_the_room_stays_encrypted() -> None:
    h = Harness()
    h.logon("a", "ann", ("board", "ops"))
    h.logon("b", "bob", ("board",))
    assert h.talk("b", "board", SFRAME) == ok(2, stream_id=1)
    at = h.mark("a", "b")
    h.registry.rooms["ann"] = ("user", frozenset({"ops"}))  # the grant taken back
    h.poll()
    assert h.frames("a", at) == [offline("board")]
    assert h.frames("b", at) == [status("board", 1, encrypted=True)]  # the talk goes on
    room = h.core.directory.get("board")
    assert room is not None and room.encrypted and room.stream is not None
    h.audio("b", 1, b"still sealed")
    assert h.frames("a", at) == [offline("board")]
    assert h.talk("a", "ops", CLEAR, seq=3) == ok(3, stream_id=2)


# --------------------------------------------------------------------------- the state machine

CONNS = ["c0", "c1", "c2", "c3"]
NAMES = ["ann", "bob", "van", "car"]
ROOMS = ["ops", "board"]


@settings(max_examples=300, stateful_step_count=40, deadline=None)
class EncryptedRooms(RuleBasedStateMachine):
    """Random logons (with and without identity keys), talks of both kinds, audio, text, rooms
    turning encrypted and clear, keys sealed, and the server's looks at the registry, checking:
    a talk is always of its room's kind; a client without an identity key is never in an
    encrypted room, never hears an SFrame talk nor any key; nobody gets a key that is not
    sealed for them, for a room they are not in; no text crosses an encrypted room; and after
    each look at the registry every room is as the registry says and every member of an
    encrypted room holds its latest key."""

    def __init__(self) -> None:
        super().__init__()
        registry = Registry(
            rooms={
                "ann": ("user", frozenset({"ops", "board"})),
                "bob": ("user", frozenset({"ops", "board"})),
                "van": ("device", frozenset({"ops"})),
                "car": ("device", frozenset({"ops", "board"})),
            },
        )
        self.h = Harness(registry, max_text_rate=1e6, max_packet_rate=1e6)
        self.seq = 100
        self.epoch = 1
        self.checked = 0
        self.polled = False

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    @rule(
        conn=st.sampled_from(CONNS),
        name=st.sampled_from(NAMES),
        rooms=st.lists(st.sampled_from(ROOMS), min_size=1, max_size=2, unique=True),
        key=st.booleans(),
    )
    def logon(self, conn: str, name: str, rooms: list[str], key: bool) -> None:
        if conn in self.h.core.sessions and self.h.core.sessions[conn].principal is not None:
            return
        self.h.got.pop(conn, None)
        rooms = [r for r in rooms if r in self.h.registry.rooms[name][1]] or ["ops"]
        self.h.logon(conn, name, tuple(rooms), key=IDENTITY if key else None, seq=self._next())
        self.polled = False

    @rule(conn=st.sampled_from(CONNS), room=st.sampled_from(ROOMS), sframe=st.booleans())
    def start(self, conn: str, room: str, sframe: bool) -> None:
        if conn in self.h.core.sessions:
            self.h.talk(conn, room, SFRAME if sframe else CLEAR, seq=self._next())

    @rule(conn=st.sampled_from(CONNS))
    def audio(self, conn: str) -> None:
        own = [s.stream_id for s in self.h.core.streams.values() if s.talker.conn == conn]
        if own:
            self.h.audio(conn, own[0], b"\x80payload")

    @rule(conn=st.sampled_from(CONNS))
    def stop(self, conn: str) -> None:
        for stream in list(self.h.core.streams.values()):
            if stream.talker.conn == conn:
                self.h.send(conn, p.StopStream(stream.stream_id, seq=self._next()))

    @rule(conn=st.sampled_from(CONNS), room=st.sampled_from(ROOMS))
    def text(self, conn: str, room: str) -> None:
        if conn in self.h.core.sessions:
            self.h.send(conn, p.SendTextMessage(room, "hello", seq=self._next()))

    @rule(room=st.sampled_from(ROOMS), encrypted=st.booleans())
    def admin_turns(self, room: str, encrypted: bool) -> None:
        self.h.registry.set_encrypted(room, encrypted)
        self.polled = False

    @rule(room=st.sampled_from(ROOMS), name=st.sampled_from(NAMES))
    def authority_seals(self, room: str, name: str) -> None:
        self.epoch += 1
        self.h.registry.sealed[(room, name)] = f"{name}-{room}-{self.epoch}"
        self.polled = False

    @rule()
    def server_looks(self) -> None:
        self.h.poll()
        self.polled = True

    @rule(conn=st.sampled_from(CONNS))
    def disconnect(self, conn: str) -> None:
        self.h.run(self.h.core.disconnected(conn))

    # checks --------------------------------------------------------------------------------

    @invariant()
    def talks_are_of_their_rooms_kind_and_clear_clients_stay_out(self) -> None:
        core = self.h.core
        for stream in core.streams.values():
            assert (stream.codec_header.sframe_suite is not None) == stream.room.encrypted
        for room in core.directory.rooms():
            if room.encrypted:
                assert all(s.sframe for s in room.members), room.name

    @invariant()
    def what_was_sent_was_allowed(self) -> None:
        core = self.h.core
        for send in self.h.sent[self.checked :]:
            if isinstance(send.data, bytes):
                continue
            message = json.loads(send.data)
            command = message.get("command")
            sessions = [core.sessions[c] for c in send.to if c in core.sessions]
            if command == "on_room_key":
                (session,) = sessions
                assert session.sframe and message["channel"] in session.rooms
                assert session.principal is not None
                name = session.principal.name
                assert message["key"].startswith(f"{name}-{message['channel']}-")
            elif command == "on_stream_start" and message["codec_header"] == "gLsBFAAB":
                assert all(s.sframe for s in sessions)
            elif command == "on_text_message":
                room = core.directory.get(message["channel"])
                assert room is not None and not room.encrypted
        self.checked = len(self.h.sent)

    @precondition(lambda self: self.polled)
    @invariant()
    def after_a_look_every_room_is_as_the_registry_says(self) -> None:
        reg = self.h.registry
        for conn, session in self.h.core.sessions.items():
            if session.principal is None:
                continue
            name = session.principal.name
            for room_name, room in session.rooms.items():
                assert room.encrypted == (room_name in reg.encrypted), (conn, room_name)
                sealed = reg.sealed.get((room_name, name))
                if room.encrypted and sealed is not None:
                    keys = [
                        f["key"]
                        for f in self.h.frames(conn)
                        if isinstance(f, dict)
                        and f.get("command") == "on_room_key"
                        and f["channel"] == room_name
                    ]
                    assert keys and keys[-1] == sealed, (conn, room_name, keys, sealed)


TestEncryptedRooms = EncryptedRooms.TestCase
