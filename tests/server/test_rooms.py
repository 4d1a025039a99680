"""Floor control as plain calls: no sockets, no clocks."""

from __future__ import annotations

from pttd.server.rooms import Granted, Refused, Room
from pttd.wire.messages import REASON_BUSY, CodecHeader

CODEC = CodecHeader()


def request(
    room: Room[str], who: str, sid: int, priority: str = "normal"
) -> Granted[str] | Refused:
    return room.request_floor(who, who, sid, CODEC, 20, priority, now=float(sid))  # type: ignore[arg-type]


def test_one_talker_at_a_time() -> None:
    room: Room[str] = Room("ops")
    for member in ("a", "b", "c"):
        room.join(member)
    granted = request(room, "a", 1)
    assert isinstance(granted, Granted)
    assert granted.stream.recipients == ["b", "c"]
    refused = request(room, "b", 2)
    assert refused == Refused(REASON_BUSY, "a")
    assert request(room, "a", 3) == Refused(REASON_BUSY, "a")  # a second stream of one's own too
    assert room.release_floor(granted.stream)
    assert not room.release_floor(granted.stream)  # already ended
    assert isinstance(request(room, "b", 4), Granted)


def test_emergency_preempts_normal_only() -> None:
    room: Room[str] = Room("ops")
    room.join("a")
    room.join("b")
    normal = request(room, "a", 1)
    assert isinstance(normal, Granted)
    emergency = request(room, "b", 2, "emergency")
    assert isinstance(emergency, Granted)
    assert emergency.preempted is normal.stream
    assert room.stream is emergency.stream
    assert request(room, "a", 3, "emergency") == Refused(REASON_BUSY, "b")


def test_recipients_follow_membership_and_leaving_talker_ends_stream() -> None:
    room: Room[str] = Room("ops")
    room.join("a")
    granted = request(room, "a", 1)
    assert isinstance(granted, Granted)
    assert granted.stream.recipients == []
    room.join("late")
    assert granted.stream.recipients == ["late"]
    assert room.leave("late") is None
    assert granted.stream.recipients == []
    assert room.leave("a") is granted.stream
    assert room.stream is None and room.users_online == 0


def test_packet_ids_count_up_per_stream() -> None:
    room: Room[str] = Room("ops")
    room.join("a")
    granted = request(room, "a", 1)
    assert isinstance(granted, Granted)
    assert [granted.stream.take_packet_id() for _ in range(3)] == [0, 1, 2]
