"""The room server's connection rules (:mod:`pttd.server.session`), by plain calls.

No sockets, no event loop, no clock: connections are strings, time is a number passed in, and the
registry's answers are handed back by :class:`Harness`, which plays the asyncio server's part.
A hypothesis state machine then drives random sequences through the core and checks its
invariants after every step.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from pttd.server.session import (
    CLOSE_NORMAL,
    CLOSE_POLICY,
    EMERGENCY_PREEMPTIONS,
    EMERGENCY_WINDOW,
    CheckLogon,
    Close,
    CoreSettings,
    IssueRefreshToken,
    Pairing,
    PairRefused,
    Principal,
    RedeemCode,
    Send,
    ServerCore,
    UnpairDevice,
)
from pttd.wire import messages as p

HEADER = p.CodecHeader()
ANN = Principal("user", "ann", frozenset({"ops", "yard"}), emergency=True)
BOB = Principal("user", "bob", frozenset({"ops"}), emergency=True)
VAN = Principal("device", "van", frozenset({"ops"}), emergency=True)
CAR = Principal("device", "car", frozenset({"yard"}))
DAN = Principal("user", "dan", frozenset({"ops"}))  # no emergency grant, like CAR
PRINCIPALS = {x.name: x for x in (ANN, BOB, VAN, CAR, DAN)}


class Harness:
    """The core plus what the asyncio server would do: answer registry calls from a dict of
    principals, and remember what each connection was sent and whether it was closed."""

    def __init__(self, **settings: Any) -> None:
        self.core: ServerCore[str] = ServerCore(CoreSettings(**settings))
        self.now = 0.0
        self.revoked: set[str] = set()
        self.got: dict[str, list[str | bytes]] = defaultdict(list)
        self.closed: dict[str, tuple[int, str]] = {}
        self.sent: list[Send[str]] = []  # every send, in order
        self.refresh: str | None = "r3fr3sh"  # what the registry issues (None: a reuse)

    def run(self, actions: list[Any]) -> list[Any]:
        """Carry out actions as RoomServer does; registry calls are answered here."""
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
                done += self.run(
                    self.core.logon_checked(action.conn, action.logon, self._who(action), self.now)
                )
            elif isinstance(action, IssueRefreshToken):
                done += self.run(
                    self.core.refresh_issued(
                        action.conn, action.logon, action.principal, self.refresh
                    )
                )
            elif isinstance(action, RedeemCode):
                result: Pairing | PairRefused = (
                    Pairing("new-radio", "t0k3n", ("ops",))
                    if action.pair.code == "GOOD-CODE-0000"
                    else PairRefused(p.REASON_INVALID_CODE)
                )
                done += self.run(self.core.pair_done(action.conn, action.pair, result, self.now))
            elif isinstance(action, UnpairDevice):
                done += self.run(self.core.unpair_done(action.conn, action.unpair))
        return done

    def _who(self, check: CheckLogon[str]) -> Principal | None:
        m = check.logon
        name = m.auth_token or (m.username if check.password_allowed else None)
        if name is None or name in self.revoked:
            return None
        if m.password is not None and m.password != "right":
            return None
        return PRINCIPALS.get(name)

    # the client's side -------------------------------------------------------------------

    def connect(self, conn: str, address: str = "192.0.2.1") -> None:
        self.run(self.core.connected(conn, address, self.now))

    def send(self, conn: str, message: Any) -> list[Any]:
        return self.run(self.core.text(conn, message.to_json(), self.now))

    def audio(self, conn: str, stream_id: int, payload: bytes = b"opus") -> list[Any]:
        frame = p.AudioPacket(stream_id, 0, payload).encode()
        return self.run(self.core.binary(conn, frame, self.now))

    def logon(
        self, conn: str, who: Principal, rooms: tuple[str, ...] = ("ops",), **extra: Any
    ) -> p.Response:
        self.connect(conn)
        if who.kind == "device":
            self.send(conn, p.Logon(rooms, seq=1, auth_token=who.name, **extra))
        else:
            self.send(conn, p.Logon(rooms, seq=1, username=who.name, password="right", **extra))
        return self.answer(conn, 1)

    def talk(self, conn: str, room: str | None = "ops", seq: int = 2, **extra: Any) -> p.Response:
        self.send(conn, p.StartStream(HEADER, 20, seq=seq, channel=room, **extra))
        return self.answer(conn, seq)

    def later(self, seconds: float) -> list[Any]:
        self.now += seconds
        return self.run(self.core.tick(self.now))

    def events(self, conn: str) -> list[Any]:
        out: list[Any] = []
        for data in self.got[conn]:
            if isinstance(data, bytes):
                out.append(p.parse_audio_packet(data))
            else:
                out.append(p.parse_server_message(data))
        return out

    def answer(self, conn: str, seq: int) -> p.Response:
        answers = [e for e in self.events(conn) if isinstance(e, p.Response) and e.seq == seq]
        assert answers, f"{conn} got no answer to {seq}: {self.events(conn)}"
        return answers[-1]

    def of(self, conn: str, kind: type[Any]) -> list[Any]:
        return [e for e in self.events(conn) if isinstance(e, kind)]


# --------------------------------------------------------------------------- logon


def test_nothing_but_logon_or_pair_before_a_logon() -> None:
    h = Harness()
    h.connect("c")
    h.send("c", p.StartStream(HEADER, 20, seq=7, channel="ops"))
    assert h.answer("c", 7).error == p.NOT_LOGGED_IN
    assert h.audio("c", 1) and h.of("c", p.OnError)[-1].error == p.NOT_LOGGED_IN


def test_a_logon_answers_with_a_refresh_token_and_tells_the_room() -> None:
    h = Harness()
    assert h.logon("a", ANN).refresh_token == "r3fr3sh"
    assert h.logon("b", BOB).success
    statuses = h.of("a", p.OnChannelStatus)
    assert [(s.channel, s.users_online) for s in statuses] == [("ops", 1), ("ops", 2)]


def test_rooms_not_given_are_refused_and_nothing_is_joined() -> None:
    h = Harness()
    answer = h.logon("b", BOB, ("ops", "yard"))
    assert answer.error == p.NOT_AUTHORIZED
    assert h.core.directory.get("ops") is None and not h.of("b", p.OnChannelStatus)


def test_failed_logons_block_passwords_from_that_address_but_not_device_tokens() -> None:
    h = Harness(auth_failures=3)
    for i in range(3):
        h.connect(f"x{i}")
        h.send(f"x{i}", p.Logon(("ops",), seq=1, username="ann", password="wrong"))
        assert h.answer(f"x{i}", 1).error == p.NOT_AUTHORIZED
        assert h.answer(f"x{i}", 1).reason is None
    h.connect("guess")
    h.send("guess", p.Logon(("ops",), seq=1, username="ann", password="right"))
    assert h.answer("guess", 1).reason == p.REASON_RATE_LIMITED  # the right one too: not checked
    assert h.logon("radio", VAN).success  # a device token is not a guess
    h.later(60.0)  # the window passes
    assert h.logon("later", ANN).success


def test_attempts_sent_at_once_count_before_they_are_checked() -> None:
    """Many password guesses sent together: only as many get a password check as the limit
    allows; the rest are refused without one. A right one gives its reservation back."""
    h = Harness(auth_failures=5, max_pending_per_address=100)
    checks: list[CheckLogon[str]] = []
    for i in range(30):
        h.connect(f"g{i}")
        guess = p.Logon(("ops",), seq=1, username="ann", password=f"guess-{i}")
        checks += [
            a for a in h.core.text(f"g{i}", guess.to_json(), h.now) if isinstance(a, CheckLogon)
        ]
    assert len(checks) == 30 and sum(c.password_allowed for c in checks) == 5
    for check in checks:  # the registry's answers come back, all wrong
        h.run(h.core.logon_checked(check.conn, check.logon, None, h.now))
    reasons = [h.answer(c.conn, 1).reason for c in checks]
    assert reasons.count(p.REASON_RATE_LIMITED) == 25 and reasons.count(None) == 5
    h.later(60.0)
    assert h.logon("right", ANN).success
    assert len(h.core.auth_failures) == 0  # the right one counted nothing


def test_a_refresh_token_used_meanwhile_fails_the_logon() -> None:
    h = Harness()
    h.refresh = None  # the registry found the token used by another logon
    answer = h.logon("a", ANN)
    assert answer.error == p.NOT_AUTHORIZED and answer.refresh_token is None
    assert h.core.sessions["a"].principal is None and not h.of("a", p.OnChannelStatus)
    h.refresh = "n3xt"
    h.send("a", p.Logon(("ops",), seq=2, username="ann", password="right"))
    assert h.answer("a", 2).refresh_token == "n3xt"


def test_a_connection_that_does_not_log_on_in_time_is_closed() -> None:
    h = Harness(logon_timeout=30.0)
    h.connect("idle")
    h.logon("busy", ANN)
    assert h.core.next_deadline == 30.0
    h.later(29.9)
    assert not h.closed
    h.later(0.1)
    assert h.closed == {"idle": (CLOSE_POLICY, "logon timeout")}
    assert h.core.next_deadline is None


def test_a_device_logging_on_again_replaces_its_older_connection() -> None:
    h = Harness()
    h.logon("old", VAN)
    h.logon("listener", BOB)
    h.talk("old")
    assert h.logon("new", VAN).success
    assert h.closed == {"old": (CLOSE_NORMAL, "replaced by a new logon")}
    assert [s.reason for s in h.of("listener", p.OnStreamStop)] == [p.REASON_DISCONNECTED]
    assert [s.conn for s in h.core.directory.room("ops").members] == ["listener", "new"]


def test_a_user_may_log_on_twice() -> None:
    h = Harness()
    h.logon("phone", ANN)
    h.logon("laptop", ANN)
    assert not h.closed and h.core.directory.room("ops").users_online == 2


# --------------------------------------------------------------------------- floor and relay


def test_audio_is_relayed_renumbered_to_the_others_in_the_room() -> None:
    h = Harness()
    h.logon("a", ANN)
    h.logon("b", BOB)
    h.logon("y", CAR, ("yard",))
    stream = h.talk("a").stream_id
    assert stream is not None
    assert [s.from_ for s in h.of("b", p.OnStreamStart)] == ["ann"]
    for _ in range(3):
        h.audio("a", stream)
    assert [(x.stream_id, x.packet_id) for x in h.of("b", p.AudioPacket)] == [
        (stream, 0),
        (stream, 1),
        (stream, 2),
    ]
    assert not h.of("a", p.AudioPacket) and not h.of("y", p.AudioPacket)
    assert h.core.packets_relayed == 3


def test_one_talker_per_room_and_an_emergency_preempts() -> None:
    h = Harness()
    h.logon("a", ANN)
    h.logon("b", BOB)
    first = h.talk("a").stream_id
    busy = h.talk("b")
    assert (busy.error, busy.reason, busy.talker) == (
        p.FAILED_TO_START_STREAM,
        p.REASON_BUSY,
        "ann",
    )
    urgent = h.talk("b", seq=3, priority="emergency")
    assert urgent.success
    stops = h.of("a", p.OnStreamStop)
    assert [(s.stream_id, s.reason) for s in stops] == [(first, p.REASON_PREEMPTED)]
    assert h.talk("a", seq=4, priority="emergency").reason == p.REASON_BUSY


def test_emergency_without_the_grant_is_refused_and_the_talk_goes_on() -> None:
    h = Harness()
    h.logon("a", ANN)
    h.logon("d", DAN)
    first = h.talk("a").stream_id
    refused = h.talk("d", seq=3, priority="emergency")
    assert (refused.error, refused.reason, refused.talker) == (
        p.FAILED_TO_START_STREAM,
        p.REASON_NOT_ALLOWED,
        None,
    )
    assert not h.of("a", p.OnStreamStop)
    assert [s.stream_id for s in h.core.streams.values()] == [first]
    h.send("d", p.StartStream(HEADER, 20, channel="ops", priority="emergency"))  # no seq
    assert not h.of("a", p.OnStreamStop)
    assert h.talk("d", seq=4).reason == p.REASON_BUSY  # a normal request is still busy
    h.send("a", p.StopStream(first or 0, seq=5))
    assert h.talk("d", seq=6, priority="emergency").reason == p.REASON_NOT_ALLOWED  # free floor


def test_pre_emptions_are_rate_limited_per_principal_not_per_connection() -> None:
    h = Harness()
    h.logon("b", BOB)
    h.logon("a1", ANN)
    h.logon("a2", ANN)  # the same user twice: one budget
    preempted = 0
    for i in range(EMERGENCY_PREEMPTIONS):
        h.talk("b", seq=10 + i)
        urgent = h.talk("a1" if i % 2 else "a2", seq=20 + i, priority="emergency")
        assert urgent.success, urgent
        preempted += 1
        h.send("a1" if i % 2 else "a2", p.StopStream(urgent.stream_id or 0))
    assert [s.reason for s in h.of("b", p.OnStreamStop)].count(p.REASON_PREEMPTED) == preempted
    h.talk("b", seq=30)
    over = h.talk("a1", seq=31, priority="emergency")  # treated as a normal request
    assert (over.reason, over.talker) == (p.REASON_BUSY, "bob")
    h.logon("v", VAN)  # another principal has its own budget
    # A line logged meanwhile (v's logon) leaves ann's budget spent.
    assert h.talk("a2", seq=32, priority="emergency").reason == p.REASON_BUSY
    assert h.talk("v", seq=33, priority="emergency").success
    assert [s.reason for s in h.of("b", p.OnStreamStop)].count(p.REASON_PREEMPTED) == 4
    h.send("v", p.StopStream(h.answer("v", 33).stream_id or 0))
    # The window slides: a minute after the first pre-emption, ann may pre-empt again.
    h.later(EMERGENCY_WINDOW)
    h.talk("b", seq=35)
    assert h.talk("a2", seq=36, priority="emergency").success


def test_an_emergency_grant_follows_the_registry_live() -> None:
    h = Harness()
    h.logon("a", ANN)
    h.logon("d", DAN)
    h.run(h.core.principals_changed({ANN: replace(ANN, emergency=False)}))
    h.run(h.core.principals_changed({DAN: replace(DAN, emergency=True)}))
    h.talk("a")
    assert h.talk("d", seq=3, priority="emergency").success
    assert h.talk("a", seq=4, priority="emergency").reason == p.REASON_NOT_ALLOWED


def test_packets_of_a_stream_the_server_ended_are_dropped_quietly() -> None:
    h = Harness(max_talk_time=10.0)
    h.logon("a", ANN)
    h.logon("b", BOB)
    stream = h.talk("a").stream_id
    assert stream is not None
    h.later(10.0)
    assert [s.reason for s in h.of("a", p.OnStreamStop)] == [p.REASON_TIMEOUT]
    assert h.audio("a", stream) == []  # in flight when the talk ended: no error, no relay
    h.send("a", p.StopStream(stream, seq=9))
    assert h.answer("a", 9).success


def test_audio_under_someone_elses_stream_is_refused() -> None:
    h = Harness()
    h.logon("a", ANN)
    h.logon("b", BOB)
    stream = h.talk("a").stream_id
    assert stream is not None
    h.audio("b", stream)
    assert h.of("b", p.OnError)[-1].error == p.INVALID_AUDIO_PACKET
    assert not h.of("a", p.AudioPacket)
    h.send("b", p.StopStream(stream, seq=5))
    assert h.answer("b", 5).error == p.FAILED_TO_STOP_STREAM


def test_talk_timers_max_and_idle_with_time_passed_in() -> None:
    h = Harness(max_talk_time=60.0, stream_idle_timeout=5.0)
    h.logon("a", ANN)
    h.logon("b", BOB)
    stream = h.talk("a").stream_id
    assert stream is not None
    assert h.core.next_deadline == 5.0  # idle comes first
    for _ in range(20):  # audio keeps it alive …
        h.later(4.0)
        h.audio("a", stream)
    assert not h.core.streams  # the maximum (60 s) ended it, audio or not
    assert [s.reason for s in h.of("b", p.OnStreamStop)] == [p.REASON_TIMEOUT]
    again = h.talk("a", seq=3).stream_id
    assert again is not None
    h.later(4.9)
    assert h.core.streams
    h.later(0.1)  # … and silence ends it
    assert [s.reason for s in h.of("b", p.OnStreamStop)][-1] == p.REASON_IDLE


def test_a_member_joining_mid_talk_hears_it() -> None:
    h = Harness()
    h.logon("a", ANN)
    stream = h.talk("a").stream_id
    h.logon("late", BOB)
    assert [s.stream_id for s in h.of("late", p.OnStreamStart)] == [stream]
    h.audio("a", stream or 0)
    assert len(h.of("late", p.AudioPacket)) == 1


def test_listen_only_neither_talks_nor_writes() -> None:
    h = Harness()
    h.logon("l", BOB, listen_only=True)
    assert h.talk("l").error == p.LISTEN_ONLY_CONNECTION
    h.send("l", p.SendTextMessage("ops", "hi", seq=4))
    assert h.answer("l", 4).error == p.LISTEN_ONLY_CONNECTION


def test_text_goes_to_the_room_or_to_one_member() -> None:
    h = Harness()
    h.logon("a", ANN)
    h.logon("b", BOB)
    h.logon("v", VAN)
    h.send("a", p.SendTextMessage("ops", "all", seq=4))
    h.send("a", p.SendTextMessage("ops", "bob only", seq=5, for_="bob"))
    assert [m.text for m in h.of("b", p.OnTextMessage)] == ["all", "bob only"]
    assert [m.text for m in h.of("v", p.OnTextMessage)] == ["all"]
    assert not h.of("a", p.OnTextMessage)


def test_floods_close_the_flooder_once() -> None:
    h = Harness(max_packet_rate=10.0, max_text_rate=2.0)
    h.logon("a", ANN)
    h.logon("b", BOB)
    stream = h.talk("a").stream_id or 0
    for _ in range(30):
        h.audio("a", stream)
    assert h.closed == {"a": (CLOSE_POLICY, "flood")}
    assert len(h.of("a", p.OnError)) == 1  # one kick, however many frames follow
    assert len(h.of("b", p.AudioPacket)) == 10
    for i in range(10):
        h.send("b", p.SendTextMessage("ops", "x", seq=10 + i))
    assert h.closed["b"] == (CLOSE_POLICY, "flood")


# --------------------------------------------------------------------------- pairing, revocation


def test_pairing_answers_the_token_and_wrong_codes_count_as_failures() -> None:
    h = Harness(auth_failures=2)
    h.connect("p")
    h.send("p", p.Pair("GOOD-CODE-0000", "radio", seq=1))
    paired = h.answer("p", 1)
    assert (paired.auth_token, paired.device_name) == ("t0k3n", "new-radio")
    for seq in (2, 3):
        h.send("p", p.Pair("BAD0-CODE-0000", "radio", seq=seq))
        assert h.answer("p", seq).reason == p.REASON_INVALID_CODE
    h.send("p", p.Pair("GOOD-CODE-0000", "radio", seq=4))
    assert h.answer("p", 4).reason == p.REASON_RATE_LIMITED


def test_a_revoked_device_is_closed_and_relays_nothing_after() -> None:
    h = Harness()
    h.logon("b", BOB)
    h.logon("v", VAN)
    stream = h.talk("v").stream_id or 0
    h.audio("v", stream)
    h.revoked.add("van")
    h.run(h.core.principals_changed({VAN: None}))
    assert h.closed == {"v": (CLOSE_POLICY, "revoked")}
    assert h.of("v", p.OnError)[-1].error == p.NOT_AUTHORIZED
    assert [s.reason for s in h.of("b", p.OnStreamStop)] == [p.REASON_DISCONNECTED]
    assert h.audio("v", stream) == [] and len(h.of("b", p.AudioPacket)) == 1
    assert h.logon("v2", VAN).error == p.NOT_AUTHORIZED


def test_a_room_taken_away_is_left_at_once() -> None:
    h = Harness()
    h.logon("a", ANN, ("ops", "yard"))
    h.logon("b", BOB)
    stream = h.talk("a", room="ops").stream_id or 0
    h.run(h.core.principals_changed({ANN: Principal("user", "ann", frozenset({"yard"}))}))
    offline = [s for s in h.of("a", p.OnChannelStatus) if s.status == "offline"]
    assert [s.channel for s in offline] == ["ops"]
    assert [s.reason for s in h.of("b", p.OnStreamStop)] == [p.REASON_DISCONNECTED]
    assert h.audio("a", stream) == []  # in flight: dropped quietly, relayed to no one
    assert h.talk("a", room="ops", seq=5).error == p.NOT_AUTHORIZED
    assert h.talk("a", room="yard", seq=6).success
    assert h.core.directory.room("ops").users_online == 1


def test_a_device_unpairs_itself() -> None:
    h = Harness()
    h.logon("v", VAN)
    h.send("v", p.Unpair(seq=3))
    assert h.answer("v", 3).success
    assert h.closed == {"v": (CLOSE_NORMAL, "unpaired")}
    assert h.core.directory.room("ops").users_online == 0
    h.logon("b", BOB)
    h.send("b", p.Unpair(seq=4))
    assert h.answer("b", 4).error == p.INVALID_REQUEST  # users are not paired


def test_unparseable_frames_are_answered_not_raised() -> None:
    h = Harness()
    h.connect("c")
    h.run(h.core.text("c", "{not json", h.now))
    h.run(h.core.binary("c", b"\x07", h.now))
    assert [e.error for e in h.of("c", p.OnError)] == [p.INVALID_JSON, p.NOT_LOGGED_IN]


# --------------------------------------------------------------------------- the state machine

CONNS = [f"c{i}" for i in range(4)]
ROOMS = ["ops", "yard"]


@settings(max_examples=400, stateful_step_count=40, deadline=None)
class ServerRules(RuleBasedStateMachine):
    """Random connections, logons, talks, audio, text, revocations and time, with checks that:
    one talker per room; nothing is relayed to a connection outside the room; a revoked principal
    has nothing relayed after its revocation; every talk a listener heard start ends for it."""

    def __init__(self) -> None:
        super().__init__()
        self.h = Harness(max_talk_time=20.0, stream_idle_timeout=5.0, logon_timeout=30.0)
        self.seq = 100
        self.checked = 0  # sends already checked
        self.heard: dict[str, set[int]] = defaultdict(set)  # conn -> streams it heard start
        self.revoked_at: dict[str, int] = {}  # device name -> index of the send at revocation

    # moves -----------------------------------------------------------------------------

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    @rule(conn=st.sampled_from(CONNS))
    def connect(self, conn: str) -> None:
        if conn not in self.h.core.sessions:
            self.h.got.pop(conn, None)
            self.h.closed.pop(conn, None)
            self.heard.pop(conn, None)
            self.h.connect(conn)

    @rule(
        conn=st.sampled_from(CONNS),
        who=st.sampled_from(sorted(PRINCIPALS)),
        rooms=st.lists(st.sampled_from(ROOMS), min_size=1, max_size=2, unique=True),
        listen_only=st.sampled_from([False, False, False, True]),
    )
    def logon(self, conn: str, who: str, rooms: list[str], listen_only: bool) -> None:
        self.connect(conn)
        principal = PRINCIPALS[who]
        creds: dict[str, Any] = (
            {"auth_token": who}
            if principal.kind == "device"
            else {"username": who, "password": "right"}
        )
        self.h.send(conn, p.Logon(tuple(rooms), seq=self._next(), listen_only=listen_only, **creds))

    @rule(who=st.sampled_from(sorted(PRINCIPALS)))
    def logon_to_its_rooms(self, who: str) -> None:
        """A free connection logs on to every room it may join."""
        free = [c for c in CONNS if (s := self.h.core.sessions.get(c)) is None or not s.principal]
        if free:
            self.logon(free[0], who, sorted(PRINCIPALS[who].rooms), listen_only=False)

    @rule(pick=st.integers(0, 3), room=st.sampled_from(ROOMS), urgent=st.booleans())
    def a_member_asks_for_the_floor(self, pick: int, room: str, urgent: bool) -> None:
        members = [c for c, s in self.h.core.sessions.items() if room in s.rooms]
        if members:
            self.start(members[pick % len(members)], room, urgent)

    @rule(conn=st.sampled_from(CONNS), room=st.sampled_from([*ROOMS, None]), urgent=st.booleans())
    def start(self, conn: str, room: str | None, urgent: bool) -> None:
        priority = "emergency" if urgent else "normal"
        self.h.send(
            conn, p.StartStream(HEADER, 20, seq=self._next(), channel=room, priority=priority)
        )

    @rule(conn=st.sampled_from(CONNS), pick=st.integers(0, 5))
    def stop(self, conn: str, pick: int) -> None:
        self.h.send(conn, p.StopStream(self._stream(conn, pick), seq=self._next()))

    @rule(conn=st.sampled_from(CONNS), pick=st.integers(0, 5))
    def audio(self, conn: str, pick: int) -> None:
        self.h.audio(conn, self._stream(conn, pick))

    @rule(conn=st.sampled_from(CONNS), room=st.sampled_from(ROOMS))
    def text(self, conn: str, room: str) -> None:
        self.h.send(conn, p.SendTextMessage(room, "hello", seq=self._next()))

    @rule(device=st.sampled_from(["van", "car"]))
    def revoke(self, device: str) -> None:
        self.h.revoked.add(device)
        self.revoked_at.setdefault(device, len(self.h.sent))
        live = self.h.core.live_principals()
        current = {x: None if x.name in self.h.revoked else x for x in live}
        self.h.run(self.h.core.principals_changed(current))
        self._check_sends()

    @rule(conn=st.sampled_from(CONNS))
    def disconnect(self, conn: str) -> None:
        self.h.run(self.h.core.disconnected(conn))
        self.heard.pop(conn, None)

    @rule(pick=st.integers(0, 3), packets=st.integers(1, 5))
    def a_talker_talks(self, pick: int, packets: int) -> None:
        talkers = sorted({s.talker.conn for s in self.h.core.streams.values()})
        conn = talkers[pick % len(talkers)] if talkers else CONNS[pick]
        for _ in range(packets):
            self.h.audio(conn, self._stream(conn, 0))
            self.h.later(0.02)

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.0, 5.0, 12.0]))
    def time_passes(self, seconds: float) -> None:
        self.h.later(seconds)

    def _stream(self, conn: str, pick: int) -> int:
        """Mostly the connection's own last stream (ended or not), else anyone's, else none."""
        own = [
            int(e.stream_id)
            for e in self.h.events(conn)
            if isinstance(e, p.Response) and e.stream_id is not None
        ]
        ids = sorted(self.h.core.streams)
        if own and pick < 3:
            return own[-1]
        return ids[pick % len(ids)] if ids and pick < 5 else pick + 1000

    # checks ----------------------------------------------------------------------------

    @invariant()
    def one_talker_per_room(self) -> None:
        core = self.h.core
        for stream_id, stream in core.streams.items():
            assert stream.room.stream is stream, stream_id
        for room in core.directory.rooms():
            if room.stream is not None:
                assert core.streams.get(room.stream.stream_id) is room.stream
                assert room.stream.talker in room.members

    @invariant()
    def relayed_only_to_members_and_never_for_the_revoked(self) -> None:
        self._check_sends()

    def _check_sends(self) -> None:
        core = self.h.core
        for index in range(self.checked, len(self.h.sent)):
            send = self.h.sent[index]
            if isinstance(send.data, bytes):  # audio: to members of the talk's room, not from
                stream = core.streams.get(p.audio_stream_id(send.data))  # the revoked
                assert stream is not None
                members = {s.conn for s in stream.room.members}
                assert set(send.to) <= members - {stream.talker.conn}
                assert stream.talker_name not in self.h.revoked
                continue
            message = json.loads(send.data)
            if message.get("command") in ("on_stream_start", "on_text_message"):
                room = core.directory.get(message["channel"])
                assert room is not None
                assert set(send.to) <= {s.conn for s in room.members}
            if message.get("command") == "on_stream_start":
                for conn in send.to:
                    self.heard[conn].add(message["stream_id"])
            if message.get("command") == "on_stream_stop":
                for conn in send.to:
                    self.heard[conn].discard(message["stream_id"])
        self.checked = len(self.h.sent)

    def teardown(self) -> None:
        """Every talk ends: after the longest talk time, no floor is held, and every connection
        still here was told that each talk it heard start has stopped."""
        self.h.later(20.0)
        self._check_sends()
        assert not self.h.core.streams
        for conn in self.h.core.sessions:
            assert not self.heard.get(conn), (conn, self.heard[conn])


TestServerRules = ServerRules.TestCase


@pytest.mark.parametrize("rooms", [("ops",), ("ops", "yard")])
def test_next_deadline_is_the_earliest_of_every_timer(rooms: tuple[str, ...]) -> None:
    h = Harness(max_talk_time=60.0, stream_idle_timeout=5.0, logon_timeout=30.0)
    h.logon("a", ANN, rooms)
    h.connect("quiet")
    assert h.core.next_deadline == 30.0
    h.later(1.0)
    h.talk("a", room="ops")
    assert h.core.next_deadline == 6.0


def test_an_unknown_command_is_logged_by_its_length_not_its_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness()
    h.connect("c")
    with caplog.at_level("INFO", logger="pttd.server.session"):
        h.run(h.core.text("c", '{"command": "launch-the-missiles-now", "seq": 3}', h.now))
    assert h.answer("c", 3).error == p.UNKNOWN_COMMAND
    assert "missiles" not in caplog.text and "a command name of 23 characters" in caplog.text


def test_one_user_opens_a_bounded_number_of_sessions() -> None:
    h = Harness(max_sessions_per_principal=3)
    for i in range(3):
        assert h.logon(f"ann{i}", ANN).success
    refused = h.logon("ann3", ANN)
    assert (refused.error, refused.reason) == (p.NOT_AUTHORIZED, p.REASON_TOO_MANY_SESSIONS)
    h.run(h.core.disconnected("ann0"))
    assert h.logon("ann4", ANN).success
    for i in range(5):  # a device has one connection: a new one replaces the old
        assert h.logon(f"van{i}", VAN).success
    assert sum(1 for s in h.core.sessions.values() if s.principal == VAN) == 1


def test_connections_not_logged_on_go_first_when_there_are_too_many() -> None:
    h = Harness(max_pending_per_address=3, max_connections=6)
    h.logon("ann", ANN)
    for i in range(3):
        h.connect(f"x{i}", "198.51.100.7")
    h.connect("x3", "198.51.100.7")  # a fourth from that address: the oldest pending goes
    assert h.closed == {"x0": (1013, "too many connections")} and "x0" not in h.core.sessions
    h.connect("y0", "203.0.113.9")
    h.connect("y1", "203.0.113.9")
    h.connect("y2", "203.0.113.9")  # full (6): the oldest pending anywhere goes, not ann
    assert "x1" in h.closed and "ann" in h.core.sessions
    assert len(h.core.sessions) == 6


def test_what_a_client_can_make_the_server_log_is_bounded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness(log_burst=5, log_window=10.0, max_text_rate=1e6)
    h.logon("a", ANN)
    with caplog.at_level("INFO", logger="pttd.server.session"):
        for _ in range(1000):
            h.run(h.core.text("a", '{"command": "nope", "seq": 1}', h.now))
        refused = [r for r in caplog.records if "refused" in r.getMessage()]
        assert len(refused) == 5
        h.later(10.0)
        h.run(h.core.text("a", '{"command": "nope", "seq": 2}', h.now))
    assert "(and 995 more like this before)" in caplog.records[-1].getMessage()


def test_a_stream_of_refused_audio_is_a_flood() -> None:
    """Audio aimed at someone else's talk, just under the packet limit: a few refusals are
    answered, then the sender is closed, and nothing of it was relayed."""
    h = Harness()
    h.logon("a", ANN)
    h.logon("b", BOB)
    stream = h.talk("a").stream_id or 0
    for _ in range(100):
        h.audio("b", stream)
        h.now += 0.01  # 100 a second
    assert h.closed == {"b": (CLOSE_POLICY, "flood")}
    assert 20 <= len(h.of("b", p.OnError)) <= 30 and not h.of("a", p.AudioPacket)
