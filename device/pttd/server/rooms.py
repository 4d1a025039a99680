"""Rooms and floor control, sans-I/O: who is in a room, who holds its floor, and who may take it.

The asyncio server (:mod:`pttd.server.app`) moves frames and runs timers; every decision about the
floor is made here, so the rule lives in one place and its tests are plain calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from pttd.wire.messages import REASON_BUSY, CodecHeader, Priority

M = TypeVar("M")  # a room member: the server's session object


@dataclass(eq=False, slots=True)
class Stream(Generic[M]):
    """One talk: the floor of ``room`` held by ``talker``."""

    stream_id: int
    room: Room[M]
    talker: M
    talker_name: str
    codec_header: CodecHeader
    packet_duration: int
    priority: Priority
    started_at: float
    next_packet_id: int = 0
    last_packet: float = 0.0  # when the last packet (or the grant) came
    recipients: list[M] = field(default_factory=list)

    def take_packet_id(self) -> int:
        packet_id = self.next_packet_id
        self.next_packet_id += 1
        return packet_id


@dataclass(frozen=True, slots=True)
class Granted(Generic[M]):
    stream: Stream[M]
    preempted: Stream[M] | None = None  # the normal talk an emergency ended


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str
    talker: str


@dataclass(eq=False, slots=True)
class Room(Generic[M]):
    """A room: its members (insertion-ordered) and the stream holding its floor, if any."""

    name: str
    members: dict[M, None] = field(default_factory=dict)
    stream: Stream[M] | None = None
    encrypted: bool = False  # its audio is SFrame only; as the registry said at the last look

    @property
    def users_online(self) -> int:
        return len(self.members)

    def join(self, member: M) -> None:
        self.members[member] = None
        self._refresh_recipients()

    def leave(self, member: M) -> Stream[M] | None:
        """Remove ``member``; return its stream if it held the floor (now ended)."""
        self.members.pop(member, None)
        ended = None
        if self.stream is not None and self.stream.talker is member:
            ended, self.stream = self.stream, None
        self._refresh_recipients()
        return ended

    def request_floor(
        self,
        talker: M,
        talker_name: str,
        stream_id: int,
        codec_header: CodecHeader,
        packet_duration: int,
        priority: Priority,
        now: float,
    ) -> Granted[M] | Refused:
        """One talker per room; an emergency pre-empts a normal talk, nothing else does."""
        current = self.stream
        preempted = None
        if current is not None:
            if priority == "emergency" and current.priority == "normal":
                preempted = current
            else:
                return Refused(REASON_BUSY, current.talker_name)
        self.stream = Stream(
            stream_id=stream_id,
            room=self,
            talker=talker,
            talker_name=talker_name,
            codec_header=codec_header,
            packet_duration=packet_duration,
            priority=priority,
            started_at=now,
            last_packet=now,
        )
        self._refresh_recipients()
        return Granted(self.stream, preempted)

    def release_floor(self, stream: Stream[M]) -> bool:
        """End ``stream`` if it still holds the floor; False if it had already ended."""
        if self.stream is not stream:
            return False
        self.stream = None
        return True

    def _refresh_recipients(self) -> None:
        # The relay's hot path reads this list; it changes only when membership or the talker does.
        if self.stream is not None:
            talker = self.stream.talker
            self.stream.recipients = [m for m in self.members if m is not talker]
