"""The device's side of the wire (:mod:`pttd.wire.client`), by plain calls.

No sockets, no event loop, no clock: time is a number passed in, the back-off's random numbers come
from a list, and :class:`Harness` plays the part of :class:`pttd.radio.link.ServerLink` (it keeps
what the core sends and what it says happened). A hypothesis state machine then drives random
sequences through the core and checks its invariants after every step; a last test runs the client
core against the server's (:class:`pttd.server.session.ServerCore`), still with plain calls.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from pttd.radio.store import Credential
from pttd.server.session import CheckLogon, IssueRefreshToken, Principal, ServerCore
from pttd.server.session import Close as ServerClose
from pttd.server.session import Send as ServerSend
from pttd.wire import messages as p
from pttd.wire.client import (
    CLOSE_POLICY,
    NO_ANSWER,
    REVOKED_REASON,
    BadFrame,
    ClientCore,
    ClientSettings,
    Close,
    Denied,
    Effect,
    Granted,
    Offline,
    Online,
    OwnStreamEnded,
    Phase,
    Revoked,
    Send,
    ServerError,
    SessionEnded,
    TimedOut,
    UnpairAnswered,
)

HEADER = p.CodecHeader(48000, 1, 20)
CREDENTIAL = Credential("ws://server", "van", "t0k3n", ("ops", "yard"))
TIMEOUT = 5.0


class Harness:
    """The core, a clock moved by hand, random numbers from a list, and what came out."""

    def __init__(self, rolls: Iterable[float] = (), **settings: Any) -> None:
        self.rolls = itertools.chain(rolls, itertools.repeat(0.5))
        self.core = ClientCore(
            HEADER, ClientSettings(answer_timeout=TIMEOUT, **settings), rng=lambda: next(self.rolls)
        )
        self.now = 100.0
        self.sent: list[str | bytes] = []
        self.closes: list[Close] = []
        self.outcomes: list[Any] = []

    def run(self, effects: list[Effect]) -> list[Any]:
        """Keep what the core sends and closes; return the outcomes, in order."""
        outcomes = []
        for effect in effects:
            if isinstance(effect, Send):
                self.sent.append(effect.data)
            elif isinstance(effect, Close):
                self.closes.append(effect)
            else:
                outcomes.append(effect)
        self.outcomes += outcomes
        return outcomes

    # the server's side -------------------------------------------------------------------

    def open(self) -> p.Logon:
        self.run(self.core.opened(CREDENTIAL, self.now))
        logon = self.last()
        assert isinstance(logon, p.Logon)
        return logon

    def hear(self, message: Any) -> list[Any]:
        if isinstance(message, p.AudioPacket):
            return self.run(self.core.binary(message.encode(), self.now))
        return self.run(self.core.text(message.to_json(), self.now))

    def answer(self, **fields: Any) -> list[Any]:
        """Answer the last request sent (success unless an ``error`` is given)."""
        request = self.last()
        assert request.seq is not None
        return self.hear(p.Response(seq=request.seq, **fields))

    def online(self) -> list[Any]:
        self.open()
        outcomes = self.answer()
        assert self.core.online
        return outcomes

    def closed(self, code: int | None = 1000, reason: str = "", error: str = "") -> list[Any]:
        return self.run(self.core.closed(self.now, code, reason, error))

    def later(self, seconds: float) -> list[Any]:
        self.now += seconds
        return self.run(self.core.tick(self.now))

    # the device's side -------------------------------------------------------------------

    def talk(self, request: int = 1, room: str = "ops") -> list[Any]:
        return self.run(self.core.start_stream(request, room, "normal", self.now))

    def granted(self, stream_id: int = 7, request: int = 1) -> int:
        self.talk(request)
        assert self.answer(stream_id=stream_id) == [Granted(self.now, request, stream_id)]
        return stream_id

    def audio(self, stream_id: int, payload: bytes = b"opus") -> list[int]:
        """Stream ids of the packets that went out."""
        before = len(self.sent)
        self.run(self.core.send_audio(stream_id, payload))
        return [p.audio_stream_id(x) for x in self.sent[before:] if isinstance(x, bytes)]

    def last(self) -> Any:
        data = self.sent[-1]
        assert isinstance(data, str)
        return p.parse_client_message(data)

    def messages(self) -> list[Any]:
        return [p.parse_client_message(x) for x in self.sent if isinstance(x, str)]

    def of(self, kind: type[Any]) -> list[Any]:
        return [o for o in self.outcomes if isinstance(o, kind)]


def ended(outcomes: list[Any]) -> SessionEnded:
    found = [o for o in outcomes if isinstance(o, SessionEnded)]
    assert len(found) == 1 and outcomes[-1] is found[0], outcomes
    return found[0]


# --------------------------------------------------------------------------- logon


def test_logon_is_built_from_the_credential_and_is_the_first_thing_said() -> None:
    h = Harness()
    assert h.core.phase is Phase.IDLE
    logon = h.open()
    assert logon.auth_token == "t0k3n" and logon.channels == ("ops", "yard")
    assert (logon.platform_type, logon.platform_name) == ("pttd", "van")
    assert logon.version and not logon.listen_only and logon.seq == 1
    assert h.core.phase is Phase.LOGGING_ON and h.core.next_deadline == h.now + TIMEOUT
    # Until its answer the device says nothing else, and hears nothing else.
    assert h.talk() == [Denied(h.now, 1, "offline")]
    assert h.audio(7) == [] and h.core.unpair(h.now) == (None, [])
    assert h.hear(p.OnStreamStart(3, "ops", "bob", HEADER, 20)) == []
    assert h.hear(p.OnError(p.NOT_AUTHORIZED)) == []
    assert len(h.sent) == 1


def test_a_listen_only_device_says_so_and_never_asks_for_the_floor() -> None:
    h = Harness(listen_only=True)
    assert h.open().listen_only
    h.answer()
    assert h.talk() == [Denied(h.now, 1, "listen only")]
    assert h.run(h.core.send_text("ops", "hello")) == [] and len(h.sent) == 1


def test_a_logon_answered_ok_is_online() -> None:
    h = Harness()
    assert h.online() == [Online(h.now, ("ops", "yard"))]
    assert h.core.phase is Phase.ONLINE and h.core.sessions_online == 1
    assert h.core.next_deadline is None  # nothing waits for an answer


def test_a_refused_logon_revokes_and_stops_the_retries() -> None:
    h = Harness()
    h.open()
    assert h.answer(error=p.NOT_AUTHORIZED) == []
    assert h.closes == [Close(1000, "")]
    assert h.core.phase is Phase.CLOSING and not h.core.online
    outcomes = h.closed()
    assert [type(o) for o in outcomes] == [Revoked, SessionEnded]  # never online: no Offline
    assert ended(outcomes).result == "refused"
    assert h.core.last_error == "logon refused: not authorized"
    assert h.core.retry_delay() is None  # wait for a new pairing


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (p.NOT_AUTHORIZED, p.REASON_RATE_LIMITED),  # someone else's guessing behind our NAT
        (p.NOT_AUTHORIZED, p.REASON_ENCRYPTED_ROOM),  # the credential is good
        (p.NOT_AUTHORIZED, p.REASON_TOO_MANY_SESSIONS),
        (p.INVALID_REQUEST, None),
        (p.INTERNAL_SERVER_ERROR, None),
    ],
)
def test_any_other_logon_failure_is_retried(error: str, reason: str | None) -> None:
    h = Harness()
    h.open()
    h.answer(error=error, reason=reason)
    assert h.closes == [Close(1000, "")]
    outcomes = h.closed()
    assert not [o for o in outcomes if isinstance(o, Revoked)]
    assert ended(outcomes).result == "failed"
    assert h.core.last_error == f"logon refused: {error}" + (f" ({reason})" if reason else "")
    assert h.core.retry_delay() is not None


def test_no_answer_to_the_logon_closes_and_retries() -> None:
    h = Harness()
    h.open()
    assert h.later(TIMEOUT - 0.1) == [] and h.closes == []
    assert h.later(0.1) == [TimedOut(h.now, 1, "logon")]
    assert h.closes == [Close(1000, "")]
    assert h.answer() == []  # too late: the connection is closing
    outcomes = h.closed()
    assert ended(outcomes) == SessionEnded(h.now, "failed", NO_ANSWER, False)
    assert h.core.retry_delay() is not None


def test_only_the_answer_to_our_logon_counts() -> None:
    h = Harness()
    h.open()
    assert h.hear(p.Response(seq=99, error=p.NOT_AUTHORIZED)) == []  # not ours
    assert h.core.phase is Phase.LOGGING_ON
    assert h.hear(p.Response(seq=1)) == [Online(h.now, ("ops", "yard"))]


def test_a_bad_frame_ends_a_logon_but_is_skipped_once_online() -> None:
    h = Harness()
    h.open()
    outcomes = h.run(h.core.text("{nonsense", h.now))
    assert [type(o) for o in outcomes] == [BadFrame] and h.closes == [Close(1000, "")]
    assert ended(h.closed()).error.startswith("server sent a bad message: ")
    h.online()
    assert [type(o) for o in h.run(h.core.text('{"command": "on_nothing"}', h.now))] == [BadFrame]
    assert [type(o) for o in h.run(h.core.binary(b"\x02junk-junk", h.now))] == [BadFrame]
    assert h.core.online and len(h.closes) == 1


def test_the_seq_counter_is_one_for_the_life_of_the_link() -> None:
    h = Harness()
    h.online()
    h.talk()
    h.closed()
    assert h.open().seq == 3  # not reset by the reconnection


# --------------------------------------------------------------------------- answers


def test_answers_are_matched_to_their_requests_by_seq() -> None:
    h = Harness()
    h.online()
    h.talk(request=7)
    talk_seq = h.last().seq
    unpair_seq, effects = h.core.unpair(h.now)
    h.run(effects)
    assert unpair_seq == talk_seq + 1
    assert h.hear(p.Response(seq=unpair_seq)) == [UnpairAnswered(h.now, unpair_seq, True)]
    assert h.hear(p.Response(seq=talk_seq, stream_id=9)) == [Granted(h.now, 7, 9)]
    assert h.core.pending == {}


def test_unknown_and_repeated_answers_are_dropped() -> None:
    h = Harness()
    h.online()
    assert h.hear(p.Response(seq=4242, stream_id=5)) == []
    h.talk()
    seq = h.last().seq
    h.hear(p.Response(seq=seq, error=p.FAILED_TO_START_STREAM, reason=p.REASON_BUSY))
    sent = len(h.sent)
    assert h.hear(p.Response(seq=seq, stream_id=5)) == []  # answered already
    assert len(h.sent) == sent and h.core.own_stream is None


def test_a_grant_after_its_request_timed_out_is_stopped_at_once() -> None:
    h = Harness()
    h.online()
    h.talk()
    seq = h.last().seq
    assert h.later(TIMEOUT) == [TimedOut(h.now, seq, "start_stream")]
    assert h.core.pending == {}
    assert h.hear(p.Response(seq=seq, stream_id=11)) == []  # nobody is told of it …
    assert h.last() == p.StopStream(11)  # … and the server has it back
    assert h.core.own_stream is None and h.audio(11) == []


# --------------------------------------------------------------------------- our own stream


def test_the_floor_granted_then_released() -> None:
    h = Harness()
    h.online()
    h.talk(request=3, room="yard")
    request = h.last()
    assert isinstance(request, p.StartStream)
    assert (request.channel, request.codec_header, request.packet_duration) == ("yard", HEADER, 20)
    h.answer(stream_id=42)
    assert h.core.own_stream == 42
    assert h.audio(42) == [42]
    h.run(h.core.stop_stream(42, "yard"))
    assert h.last() == p.StopStream(42, channel="yard")
    assert h.core.own_stream is None and h.audio(42) == []


def test_the_floor_refused_says_why_and_who_talks() -> None:
    h = Harness()
    h.online()
    h.talk(request=5)
    outcomes = h.answer(error=p.FAILED_TO_START_STREAM, reason=p.REASON_BUSY, talker="bob")
    assert outcomes == [Denied(h.now, 5, "busy", "bob")]
    h.talk(request=6)
    assert h.answer(error=p.NOT_AUTHORIZED) == [Denied(h.now, 6, p.NOT_AUTHORIZED)]
    assert h.core.own_stream is None


def test_audio_goes_only_under_the_granted_stream() -> None:
    h = Harness()
    assert h.audio(7) == []  # offline
    h.online()
    h.talk()
    assert h.audio(7) == []  # not granted yet
    h.answer(stream_id=7)
    assert h.audio(8) == [] and h.audio(7) == [7]
    h.hear(p.OnStreamStop(7, "ops", p.REASON_TIMEOUT))
    assert h.audio(7) == []  # ended by the server
    h.granted(stream_id=9, request=2)
    h.closed(1001)
    assert h.audio(9) == []  # the connection went


def test_our_stream_ended_by_the_server_is_ours_no_more() -> None:
    h = Harness()
    h.online()
    h.granted(stream_id=7)
    stop = p.OnStreamStop(7, "ops", p.REASON_PREEMPTED)
    assert h.hear(stop) == [OwnStreamEnded(h.now, 7, p.REASON_PREEMPTED)]
    assert h.core.own_stream is None
    assert h.hear(stop) == [stop]  # again: any other stream's stop, passed on
    sent = len(h.sent)
    assert h.run(h.core.stop_stream(7, "ops")) == [] and len(h.sent) == sent  # nothing to stop


def test_at_most_one_stream_is_ours() -> None:
    h = Harness()
    h.online()
    h.granted(stream_id=7, request=1)
    h.talk(request=2)
    assert h.answer(stream_id=8) == [Denied(h.now, 2, p.REASON_BUSY)]
    assert h.last() == p.StopStream(8)
    assert h.core.own_stream == 7


def test_streams_text_and_audio_of_others_are_passed_on() -> None:
    h = Harness()
    h.online()
    heard = [
        p.OnStreamStart(3, "ops", "bob", HEADER, 20),
        p.AudioPacket(3, 0, b"opus"),
        p.OnTextMessage("ops", "bob", "hello", 1),
        p.OnStreamStop(3, "ops"),
    ]
    for message in heard:
        assert h.hear(message) == [message]
    status = p.OnChannelStatus("ops", "online", 3, encrypted=True)  # for the room keys
    assert h.hear(status) == [status]
    key = p.OnRoomKey("ops", "c2VhbGVk")
    assert h.hear(key) == [key]


# --------------------------------------------------------------------------- revocation


@pytest.mark.parametrize(
    ("code", "reason", "error"),
    [
        (1000, "", ""),
        (1001, "", ""),  # the server restarts
        (None, "", "the server closed the connection"),  # the network drops
        (1006, "", "the server closed the connection"),
        (CLOSE_POLICY, "flood", "the server closed the connection"),
        (1000, REVOKED_REASON, ""),  # the right words with the wrong code
    ],
)
def test_an_unrelated_not_authorized_then_a_drop_never_revokes(
    code: int | None, reason: str, error: str
) -> None:
    """The sticky-revocation bug: one stray error and a later network drop must not unpair."""
    h = Harness()
    h.online()
    assert h.hear(p.OnError(p.NOT_AUTHORIZED)) == [ServerError(h.now, p.NOT_AUTHORIZED)]
    assert h.core.online and h.closes == []
    outcomes = h.closed(code, reason, error)
    assert not h.of(Revoked)
    assert ended(outcomes).result == "ended"
    assert h.core.retry_delay() is not None
    h.online()  # and the next logon is as good as ever
    assert h.core.sessions_online == 2


def test_the_server_closing_with_1008_revoked_revokes() -> None:
    h = Harness()
    h.online()
    h.granted()
    h.hear(p.OnError(p.NOT_AUTHORIZED))  # what the server says first: not the signal itself
    outcomes = h.closed(CLOSE_POLICY, REVOKED_REASON, "the server closed the connection")
    why = "the server revoked this device's credential"
    assert outcomes == [
        Offline(h.now, why),
        Revoked(h.now, why),
        SessionEnded(h.now, "refused", why, True),
    ]
    assert h.core.retry_delay() is None and h.core.own_stream is None


def test_a_revocation_is_not_remembered_past_the_next_pairing() -> None:
    h = Harness()
    h.online()
    h.closed(CLOSE_POLICY, REVOKED_REASON)
    assert h.core.retry_delay() is None
    h.run(h.core.closed(h.now, error="cannot reach the server"))  # the new credential's 1st try
    assert h.core.result == "failed" and h.core.retry_delay() is not None


def test_a_credential_given_up_ends_the_session_quietly() -> None:
    h = Harness()
    h.online()
    h.granted()
    assert h.run(h.core.give_up()) == [] and h.closes == [Close(1000, "")]
    assert h.run(h.core.give_up()) == [] and len(h.closes) == 1  # once
    assert h.audio(7) == [] and h.talk(2) == [Denied(h.now, 2, "offline")]
    assert h.hear(p.OnStreamStart(3, "ops", "bob", HEADER, 20)) == []  # nothing more is heard
    # Even a revocation at that moment is nothing more to act on: the credential is gone.
    assert h.closed(CLOSE_POLICY, REVOKED_REASON) == [
        Offline(h.now, ""),
        SessionEnded(h.now, "ended", "", True),
    ]
    assert h.run(Harness().core.give_up()) == []  # nothing open: nothing to close


# --------------------------------------------------------------------------- unpair


def test_unpair_confirmed_refused_timed_out_or_cut() -> None:
    h = Harness()
    h.online()
    for answer, confirmed in (({}, True), ({"error": p.INVALID_REQUEST}, False)):
        seq, effects = h.core.unpair(h.now)
        h.run(effects)
        assert h.last() == p.Unpair(seq=seq)
        assert h.answer(**answer) == [
            UnpairAnswered(h.now, seq, confirmed, answer.get("error", ""))
        ]
    seq, effects = h.core.unpair(h.now)
    h.run(effects)
    assert h.later(TIMEOUT)[-1] == UnpairAnswered(h.now, seq, False, NO_ANSWER)
    seq, effects = h.core.unpair(h.now)
    h.run(effects)
    assert h.closed()[0] == UnpairAnswered(h.now, seq, False, "the connection closed")


# --------------------------------------------------------------------------- back-off


def test_the_back_off_doubles_to_its_cap_with_full_jitter() -> None:
    h = Harness(rolls=[0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.0, 0.999], backoff_initial=0.2)
    delays = []
    for _ in range(8):
        h.run(h.core.closed(h.now, error="cannot reach the server"))
        delay = h.core.retry_delay()
        assert delay is not None
        delays.append(delay)
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 0.0, 3.996])


def test_the_back_off_starts_afresh_after_a_session_that_got_online() -> None:
    h = Harness(rolls=itertools.repeat(1.0))
    for _ in range(4):
        h.run(h.core.closed(h.now, error="cannot reach the server"))
        h.core.retry_delay()
    assert h.core.backoff.current == 3.2
    h.online()
    h.closed(1001)
    assert h.core.retry_delay() == 0.2
    h.open()  # a logon that fails does not
    h.answer(error=p.NOT_AUTHORIZED, reason=p.REASON_RATE_LIMITED)
    h.closed()
    assert h.core.retry_delay() == 0.4


def test_a_refusal_resets_the_back_off_for_the_next_pairing() -> None:
    h = Harness(rolls=itertools.repeat(1.0))
    for _ in range(3):
        h.run(h.core.closed(h.now, error="cannot reach the server"))
        h.core.retry_delay()
    h.open()
    h.answer(error=p.NOT_AUTHORIZED)
    h.closed()
    assert h.core.retry_delay() is None
    h.run(h.core.closed(h.now, error="cannot reach the server"))
    assert h.core.retry_delay() == 0.2


def test_the_back_off_never_waits_longer_than_its_cap() -> None:
    h = Harness(rolls=itertools.repeat(1.0), backoff_initial=600.0, backoff_max=4.0)
    h.run(h.core.closed(h.now, error="cannot reach the server"))
    assert h.core.retry_delay() == 4.0


# --------------------------------------------------------------------------- with the server's core


def test_the_server_core_and_the_client_core_agree_on_revocation() -> None:
    """The client core takes what the server core does on a revocation for one, and the server
    core's answer to a stray request (not authorized, no seq) for nothing of the kind."""
    server: ServerCore[str] = ServerCore()
    h = Harness()
    van = Principal("device", "van", frozenset({"ops", "yard"}))
    closes: list[ServerClose[str]] = []

    def to_van(actions: list[Any]) -> None:
        """Carry the server core's actions out for the one connection, 'van'."""
        for action in actions:
            if isinstance(action, ServerSend) and "van" in action.to:
                if isinstance(action.data, bytes):
                    h.run(h.core.binary(action.data, h.now))
                else:
                    h.run(h.core.text(action.data, h.now))
            elif isinstance(action, ServerClose):
                closes.append(action)
            elif isinstance(action, CheckLogon):
                to_van(server.logon_checked("van", action.logon, van, h.now))
            elif isinstance(action, IssueRefreshToken):
                to_van(server.refresh_issued("van", action.logon, action.principal, "r"))

    def to_server(effects: list[Effect]) -> None:
        h.run(effects)
        for effect in effects:
            if isinstance(effect, Send) and isinstance(effect.data, str):
                to_van(server.text("van", effect.data, h.now))

    server.connected("van", "192.0.2.7", h.now)
    to_server(h.core.opened(CREDENTIAL, h.now))
    assert h.core.online
    to_server(h.core.send_text("nowhere", "hello"))  # a room it is not in: on_error, no seq
    assert h.of(ServerError) == [ServerError(h.now, p.NOT_AUTHORIZED)] and h.core.online
    to_van(server.principals_changed({x: None for x in server.live_principals()}))
    assert [(c.code, c.reason) for c in closes] == [(CLOSE_POLICY, REVOKED_REASON)]
    h.closed(closes[0].code, closes[0].reason)
    assert h.of(Revoked) and h.core.retry_delay() is None

    # Its next logon is refused: the other signal, on the server core's word too.
    h.core.retry_delay()
    server.connected("van2", "192.0.2.7", h.now)
    h.run(h.core.opened(CREDENTIAL, h.now))
    logon = h.last()
    for action in server.text("van2", logon.to_json(), h.now):
        assert isinstance(action, CheckLogon)  # the registry no longer knows the token
        for answer in server.logon_checked("van2", action.logon, None, h.now):
            assert isinstance(answer, ServerSend) and isinstance(answer.data, str)
            h.run(h.core.text(answer.data, h.now))
    assert ended(h.closed()).result == "refused"
    assert h.core.last_error == "logon refused: not authorized"


# --------------------------------------------------------------------------- stateful property

CLOSES = [
    (1000, ""),
    (1001, ""),
    (None, ""),
    (CLOSE_POLICY, "flood"),
    (CLOSE_POLICY, "logon timeout"),
    (CLOSE_POLICY, REVOKED_REASON),
    (1000, "replaced by a new logon"),
]


@settings(max_examples=300, stateful_step_count=50, deadline=None)
class ClientRules(RuleBasedStateMachine):
    """Random connections, answers (right, wrong, late, unknown), server events, closes, time and
    device requests, with checks that: a session is revoked only on one of the two signals; at
    most one stream is ours, and only while online; audio goes only under it; every request is
    answered, timed out or dropped with its connection, once; the back-off stays in [0, cap]."""

    def __init__(self) -> None:
        super().__init__()
        self.rolls: list[float] = []
        self.h = Harness(backoff_initial=0.2, backoff_max=4.0)
        self.h.rolls = iter(self._roll, None)
        self.signal = False  # one of the two revocation signals came in this session
        self.requests = itertools.count(1)
        self.asked: dict[int, int] = {}  # start_stream seq -> the device's request number
        self.open_requests: set[int] = set()  # seqs neither answered, timed out nor dropped
        self.granted: set[int] = set()  # stream ids the core announced as ours
        self.given_up: set[int] = set()  # seqs of start_streams that timed out

    def _roll(self) -> float:
        return self.rolls.pop() if self.rolls else 0.999

    @property
    def core(self) -> ClientCore:
        return self.h.core

    def feed(self, call: Callable[[], list[Effect]]) -> list[Any]:
        """Make one call on the core, carry its effects out and check them against the model."""
        own_before = self.core.own_stream
        before = len(self.h.sent)
        outcomes = self.h.run(call())
        for data in self.h.sent[before:]:
            if isinstance(data, bytes):
                assert p.audio_stream_id(data) == own_before == self.core.own_stream
                assert own_before in self.granted
                continue
            message = p.parse_client_message(data)
            if message.seq is not None:
                self.open_requests.add(message.seq)
        for outcome in outcomes:
            if isinstance(outcome, Granted):
                assert own_before is None, "a second stream of ours"
                self.granted.add(outcome.stream_id)
                self._resolved(outcome.request)
            elif isinstance(outcome, Denied):
                self._resolved(outcome.request)
            elif isinstance(outcome, TimedOut):
                assert outcome.seq in self.open_requests
                self.open_requests.discard(outcome.seq)
                if outcome.kind == "start_stream":
                    self.given_up.add(outcome.seq)
            elif isinstance(outcome, UnpairAnswered) and outcome.why != NO_ANSWER:
                assert outcome.seq in self.open_requests
                self.open_requests.discard(outcome.seq)
        return outcomes

    def _resolved(self, request: int) -> None:
        seqs = [seq for seq, r in self.asked.items() if r == request]
        if seqs:  # None when denied at once (offline): nothing was sent
            assert seqs[0] in self.open_requests, "answered twice"
            self.open_requests.discard(seqs[0])

    # the connection ----------------------------------------------------------------------

    @precondition(lambda self: self.core.phase is Phase.IDLE)
    @rule()
    def connect(self) -> None:
        self.signal = False
        self.feed(lambda: self.core.opened(CREDENTIAL, self.h.now))

    @precondition(lambda self: self.core.phase is Phase.IDLE)
    @rule(roll=st.floats(0.0, 1.0, exclude_max=True))
    def connection_fails(self, roll: float) -> None:
        self.signal = False
        self.end(lambda: self.core.closed(self.h.now, error="cannot reach the server"), roll)

    @precondition(lambda self: self.core.phase is not Phase.IDLE)
    @rule(close=st.sampled_from(CLOSES), roll=st.floats(0.0, 1.0, exclude_max=True))
    def connection_closes(self, close: tuple[int | None, str], roll: float) -> None:
        code, reason = close
        if (code, reason) == (CLOSE_POLICY, REVOKED_REASON):
            self.signal = True
        dropped = frozenset(self.core.pending)
        self.end(lambda: self.core.closed(self.h.now, code, reason), roll, dropped)

    def end(
        self, call: Callable[[], list[Effect]], roll: float, dropped: frozenset[int] = frozenset()
    ) -> None:
        outcomes = self.feed(call)
        self.open_requests -= dropped  # dropped with the connection (an unpair is told so)
        assert self.core.phase is Phase.IDLE and not self.core.pending
        assert not self.open_requests, "a request neither answered, timed out nor dropped"
        session = ended(outcomes)
        revoked = [o for o in outcomes if isinstance(o, Revoked)]
        assert (session.result == "refused") == bool(revoked)
        if session.result == "refused":
            assert self.signal, "revoked without one of the two signals"
        self.rolls.append(roll)
        delay = self.core.retry_delay()
        if session.result == "refused":
            assert delay is None
        else:
            assert delay is not None and 0.0 <= delay <= self.core.settings.backoff_max

    @precondition(lambda self: self.core.phase is not Phase.IDLE)
    @rule()
    def give_up(self) -> None:
        self.feed(self.core.give_up)

    # the server speaks -------------------------------------------------------------------

    def logon_pending(self) -> int | None:
        seqs = [seq for seq, x in self.core.pending.items() if x.kind == "logon"]
        return seqs[0] if seqs else None

    @precondition(lambda self: self.logon_pending() is not None)
    @rule(answer=st.sampled_from(["ok", "ok", "ok", "not authorized", "rate limited", "invalid"]))
    def logon_answered(self, answer: str) -> None:
        seq = self.logon_pending()
        assert seq is not None
        if self.core.phase is Phase.LOGGING_ON:  # else closing: not heard
            self.signal = self.signal or answer == "not authorized"
            self.open_requests.discard(seq)
        fields: dict[str, Any] = {
            "ok": {},
            "not authorized": {"error": p.NOT_AUTHORIZED},
            "rate limited": {"error": p.NOT_AUTHORIZED, "reason": p.REASON_RATE_LIMITED},
            "invalid": {"error": p.INVALID_REQUEST},
        }[answer]
        answered = p.Response(seq=seq, **fields).to_json()
        self.feed(lambda: self.core.text(answered, self.h.now))

    @rule(
        pick=st.integers(0, 7),
        answer=st.sampled_from(["ok", "ok", "busy", "not authorized", "invalid"]),
        stream_id=st.integers(1, 4),
    )
    def answer(self, pick: int, answer: str, stream_id: int) -> None:
        """An answer to a start_stream or unpair pending, to one that timed out, or to a seq
        nobody used."""
        seqs = [seq for seq, x in sorted(self.core.pending.items()) if x.kind != "logon"]
        seqs += sorted(self.given_up)
        seq = seqs[pick % len(seqs)] if seqs and pick < 6 else 4000 + pick
        pending = self.core.pending.get(seq)
        fields: dict[str, Any] = {
            "ok": {"stream_id": stream_id},
            "busy": {"error": p.FAILED_TO_START_STREAM, "reason": p.REASON_BUSY, "talker": "b"},
            "not authorized": {"error": p.NOT_AUTHORIZED},
            "invalid": {"error": p.INVALID_REQUEST},
        }[answer]
        answered = p.Response(seq=seq, **fields).to_json()
        phase = self.core.phase
        outcomes = self.feed(lambda: self.core.text(answered, self.h.now))
        assert self.core.phase is phase, "only the logon's answer changes the connection"
        if pending is None:
            assert outcomes == [], "an answer nobody waited for was passed on"
            self.given_up.discard(seq)

    @rule(error=st.sampled_from([p.NOT_AUTHORIZED, p.INVALID_REQUEST, p.FAILED_TO_SEND_DATA]))
    def server_error(self, error: str) -> None:
        phase = self.core.phase
        self.feed(lambda: self.core.text(p.OnError(error).to_json(), self.h.now))
        assert self.core.phase is phase, "an on_error alone changes nothing"

    @rule(pick=st.integers(0, 4), reason=st.sampled_from([None, "timeout", "preempted"]))
    def stream_stops(self, pick: int, reason: str | None) -> None:
        own = self.core.own_stream
        stream_id = own if own is not None and pick < 2 else pick + 1
        stop = p.OnStreamStop(stream_id, "ops", reason).to_json()
        outcomes = self.feed(lambda: self.core.text(stop, self.h.now))
        if own is not None and stream_id == own:
            assert outcomes == [OwnStreamEnded(self.h.now, own, reason or "")]

    @rule(stream_id=st.integers(1, 4))
    def others_talk(self, stream_id: int) -> None:
        start = p.OnStreamStart(stream_id, "ops", "bob", HEADER, 20).to_json()
        self.feed(lambda: self.core.text(start, self.h.now))
        packet = p.AudioPacket(stream_id, 0, b"opus").encode()
        self.feed(lambda: self.core.binary(packet, self.h.now))

    @rule()
    def garbage(self) -> None:
        self.feed(lambda: self.core.text("[1, 2", self.h.now))

    @rule(seconds=st.sampled_from([0.5, 2.0, TIMEOUT, 12.0]))
    def time_passes(self, seconds: float) -> None:
        self.h.now += seconds
        self.feed(lambda: self.core.tick(self.h.now))
        if seconds >= TIMEOUT:
            assert not self.core.pending, "a request outlived its time-out"

    # the device speaks -------------------------------------------------------------------

    @rule(urgent=st.booleans())
    def start_stream(self, urgent: bool) -> None:
        request = next(self.requests)
        before = len(self.h.sent)
        priority: p.Priority = "emergency" if urgent else "normal"
        self.feed(lambda: self.core.start_stream(request, "ops", priority, self.h.now))
        for data in self.h.sent[before:]:
            message = p.parse_client_message(data)
            assert isinstance(message, p.StartStream) and message.seq is not None
            self.asked[message.seq] = request

    @precondition(lambda self: self.core.online)
    @rule(stream_id=st.integers(1, 4))
    def asked_and_granted(self, stream_id: int) -> None:
        """A start_stream answered at once with a grant (the common case, in one step)."""
        self.start_stream(urgent=False)
        seq = max(self.asked)
        granted = p.Response(seq=seq, stream_id=stream_id).to_json()
        self.feed(lambda: self.core.text(granted, self.h.now))

    @rule(pick=st.integers(0, 4))
    def stop_stream(self, pick: int) -> None:
        own = self.core.own_stream
        stream_id = own if own is not None and pick < 2 else pick + 1
        before = len(self.h.sent)
        self.feed(lambda: self.core.stop_stream(stream_id, "ops"))
        stops = [p.parse_client_message(x) for x in self.h.sent[before:]]
        if own == stream_id:
            assert self.core.own_stream is None
            assert stops == [p.StopStream(stream_id, channel="ops")]
        else:
            assert stops == [], "a stop for a stream that is not ours"
            assert self.core.own_stream == own

    @rule(pick=st.integers(0, 4))
    def send_audio(self, pick: int) -> None:
        own = self.core.own_stream
        stream_id = own if own is not None and pick < 2 else pick + 1
        self.feed(lambda: self.core.send_audio(stream_id, b"opus"))

    @rule()
    def unpair(self) -> None:
        self.feed(lambda: self.core.unpair(self.h.now)[1])

    # checks ------------------------------------------------------------------------------

    @invariant()
    def our_stream_only_while_online(self) -> None:
        assert self.core.own_stream is None or self.core.online

    @invariant()
    def every_pending_request_has_a_deadline_ahead(self) -> None:
        for pending in self.core.pending.values():
            assert self.h.now < pending.deadline <= self.h.now + TIMEOUT
        assert set(self.core.pending) <= self.open_requests

    @invariant()
    def nothing_pending_without_a_connection(self) -> None:
        if self.core.phase is Phase.IDLE:
            assert not self.core.pending and self.core.own_stream is None

    @invariant()
    def back_off_within_its_cap(self) -> None:
        assert 0.0 <= self.core.backoff.current <= self.core.settings.backoff_max


TestClientRules = ClientRules.TestCase
