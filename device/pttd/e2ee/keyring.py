"""A member's room keys, sans-I/O: which encrypted rooms it may talk in, and the SFrame of each.

The device (and any client of encrypted rooms) keeps one :class:`Keyring`. The server tells it
which rooms are encrypted and passes on the room keys the key authority sealed for it; the keyring
opens them (:func:`pttd.e2ee.keys.open_bundle`: signed by the authority the installer's pairing
link named, wrapped for this identity, under this name), refuses an epoch older than the one it
holds, and from the room key makes:

* its own SFrame :class:`~pttd.e2ee.sframe.Sender` (KID = epoch and its sender index), whose
  counters start at ``generation << GENERATION_SHIFT``: the caller passes a generation that was
  never used before (persisted before use: :meth:`pttd.radio.store.Store.next_generation`), so a
  counter never repeats under one key, across restarts and crashes alike;
* an SFrame :class:`~pttd.e2ee.sframe.Receiver` holding every roster member's key of the current
  epoch and of the one before (packets in flight across a rotation still decode; a member removed
  by the rotation gets no key of the new epoch at all).

Each packet is bound to its room: the SFrame metadata (authenticated, not sent) is the room name.
A room the keyring has no usable key for is *locked*: :meth:`Keyring.why_locked` says why, and
the state machine lets nobody talk there (the microphone never opens).

What the server says is not trusted where a signed key says otherwise. ``floors`` (persisted by
the caller: :attr:`Keyring.floors` after each accepted key) hold, per room, the highest epoch
ever accepted: an older one is refused after a restart too (a server replaying the epoch a
removed member still holds), and a room that ever had a signed key stays encrypted whatever the
server says later (a server announcing it clear, or a clear stream in it, is refused).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from pttd.e2ee import sframe
from pttd.e2ee.keys import (
    AuthorityPublicKey,
    E2eeError,
    IdentityKey,
    KeyRefused,
    RoomKey,
    bundle_from_text,
    make_kid,
    open_bundle,
    sender_base_key,
    split_kid,
)

GENERATION_SHIFT: Final = 40  # 2**40 packets per start (700 years of 20 ms), 2**24 starts
MAX_GENERATION: Final = 2 ** (64 - GENERATION_SHIFT) - 1

WAITING: Final = "waiting for its room key (not approved by the key authority yet?)"
DOWNGRADE: Final = "the server says this room is clear, but its key authority keyed it: refused"
NO_AUTHORITY: Final = (
    "no key authority known: pair again with a link that names the room's key authority"
)


class NoRoomKey(E2eeError):
    """No usable key for the room (locked): nothing can be sealed or opened there."""


@dataclass(frozen=True, slots=True)
class Heard:
    """An opened packet: who sealed it (the roster's name, None if not in it) and the Opus."""

    sender: str | None
    epoch: int
    payload: bytes


@dataclass
class _RoomKeys:
    key: RoomKey
    sender: sframe.Sender
    receiver: sframe.Receiver
    previous: RoomKey | None = None
    metadata: bytes = b""


@dataclass
class Keyring:
    """One member's keys. ``authority`` None: paired without a key authority (every encrypted
    room stays locked)."""

    identity: IdentityKey
    authority: AuthorityPublicKey | None
    name: str
    generation: int
    encrypted: set[str] = field(default_factory=set)
    # Room -> the highest epoch ever accepted there (persisted by the caller, given back at start).
    floors: dict[str, int] = field(default_factory=dict)
    _rooms: dict[str, _RoomKeys] = field(default_factory=dict)
    _refused: dict[str, str] = field(default_factory=dict)  # room -> why its last key was refused
    # Every sender of this run, by room and KID: one installed again (a key forgotten and sent
    # again) carries on from its counter, never back to the start of the generation.
    _senders: dict[tuple[str, int], sframe.Sender] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.generation <= MAX_GENERATION:
            raise E2eeError(f"counter generation {self.generation} out of range")
        self.encrypted |= set(self.floors)  # keyed once: encrypted for good

    # -- which rooms ------------------------------------------------------------------------

    def set_encrypted(self, room: str, encrypted: bool) -> bool:
        """What the server says of a room. False when it says clear of a room the authority
        keyed (it stays encrypted, and is locked: :data:`DOWNGRADE`)."""
        if encrypted:
            self.encrypted.add(room)
            return True
        if room in self.floors:
            self._refused[room] = DOWNGRADE
            self._rooms.pop(room, None)  # locked until a key comes again
            return False
        self.encrypted.discard(room)
        return True

    def keyed(self, room: str) -> bool:
        """Whether the room's key authority ever keyed this room for this member."""
        return room in self.floors

    def why_locked(self, room: str) -> str | None:
        """Why nobody may talk in ``room`` from here (None: a clear room, or a key is held)."""
        if room not in self.encrypted or room in self._rooms:
            return None
        if self.authority is None:
            return NO_AUTHORITY
        refused = self._refused.get(room)
        if refused == DOWNGRADE:
            return DOWNGRADE
        return f"room key refused: {refused}" if refused else WAITING

    def locked(self, rooms: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
        """(room, why) for each of ``rooms`` that is locked."""
        out = []
        for room in rooms:
            why = self.why_locked(room)
            if why is not None:
                out.append((room, why))
        return tuple(out)

    def key(self, room: str) -> RoomKey | None:
        held = self._rooms.get(room)
        return held.key if held else None

    def state(self, room: str) -> str:
        """The room's key state for people (the console): never a secret."""
        if room not in self.encrypted:
            return "clear"
        held = self._rooms.get(room)
        if held is None:
            return self.why_locked(room) or WAITING
        k = held.key
        return f"encrypted, epoch {k.epoch}, {len(k.roster)} members, sender {k.sender_index}"

    # -- keys in ----------------------------------------------------------------------------

    def accept(self, room: str, text: str) -> RoomKey:
        """Open a sealed room key for ``room``. KeyRefused (``reason`` says why, for people)
        when it is not from this room's authority, not for this device, for another room, or
        older than the key held; the key held (if any) stays."""
        try:
            if self.authority is None:
                raise KeyRefused(NO_AUTHORITY)
            key = open_bundle(bundle_from_text(text), self.authority, self.identity, self.name)
            if key.room != room:
                raise KeyRefused(f"sealed for room {key.room!r}, delivered for {room!r}")
            held = self._rooms.get(room)
            floor = self.floors.get(room, 0)
            if key.epoch < floor:
                raise KeyRefused(f"epoch {key.epoch} is older than epoch {floor}, accepted before")
            if held is not None and key.epoch < held.key.epoch:
                raise KeyRefused(f"epoch {key.epoch} is older than the epoch {held.key.epoch} held")
            if held is not None and key.epoch == held.key.epoch:
                if key.epoch_secret != held.key.epoch_secret or key.suite != held.key.suite:
                    raise KeyRefused(f"a second, different key for epoch {key.epoch}")
                if set(key.roster) <= set(held.key.roster):
                    return held.key  # the same key again (a reconnection, an older re-issue)
                # A re-issue of the epoch held naming members approved since: installed, so
                # that they are heard (and named).
        except KeyRefused as exc:
            self._refused[room] = exc.reason
            raise
        self._refused.pop(room, None)
        self._install(room, key, held)
        self.floors[room] = max(floor, key.epoch)
        self.encrypted.add(room)
        return key

    def _install(self, room: str, key: RoomKey, held: _RoomKeys | None) -> None:
        suite = sframe.CipherSuite(key.suite)
        previous = None
        if held is not None:
            previous = held.previous if held.key.epoch == key.epoch else held.key
        # The receiver carries on: a KID kept keeps its replay window, so a packet heard before
        # a rotation (or a re-issue) cannot be played to this member again after it. (A KID is
        # dropped only when its epoch is two behind, never to come back: epochs only grow, and
        # a re-issue of the epoch held only adds members.)
        if held is not None and held.receiver.suite == suite:
            receiver = held.receiver
        else:
            receiver = sframe.Receiver(suite)
        # The previous epoch (packets in flight across a rotation) only for the members who
        # remain: a member removed by the rotation is not heard under its old key either.
        remain = {index for index, _ in key.roster}
        wanted: dict[int, bytes] = {}
        for old in (previous, key):
            if old is None or old.suite != key.suite:
                continue
            for index, _ in old.roster:
                if old is key or index in remain:
                    wanted[make_kid(old.epoch, index)] = sender_base_key(old.epoch_secret, index)
        for kid in receiver.kids() - wanted.keys():
            receiver.remove_key(kid)
        for kid, base in wanted.items():
            receiver.add_key(kid, base)  # the same base key again: nothing changes
        before = self._senders.get((room, key.kid))
        first = before.next_counter if before else self.generation << GENERATION_SHIFT
        base = sender_base_key(key.epoch_secret, key.sender_index)
        sender = sframe.Sender(suite, key.kid, base, first_counter=first)
        self._senders[(room, key.kid)] = sender
        self._rooms[room] = _RoomKeys(key, sender, receiver, previous, room.encode("utf-8"))

    def forget(self) -> None:
        """Every key goes (unpaired, revoked)."""
        self._rooms.clear()
        self._refused.clear()
        self.encrypted = set(self.floors)  # what was keyed stays encrypted

    # -- packets ----------------------------------------------------------------------------

    def suite(self, room: str) -> int | None:
        """The SFrame suite a talk in ``room`` announces (None: a clear room). NoRoomKey when
        the room is encrypted and locked."""
        if room not in self.encrypted:
            return None
        return self._held(room).key.suite

    def seal(self, room: str, payload: bytes) -> bytes:
        """One Opus packet of ours, sealed for ``room``. NoRoomKey when locked;
        sframe.CounterExhausted (never in practice) when the sender is spent."""
        held = self._held(room)
        return held.sender.encrypt(payload, held.metadata)

    def open(self, room: str, packet: bytes) -> Heard:
        """One packet heard in ``room``, opened. NoRoomKey when locked; sframe.SFrameError when
        it does not open (forged, tampered, replayed, a key this member does not hold)."""
        held = self._held(room)
        opened = held.receiver.decrypt(packet, held.metadata)
        epoch, index = split_kid(opened.kid)
        key = held.key if epoch == held.key.epoch else held.previous
        return Heard(key.name_of(index) if key else None, epoch, opened.plaintext)

    def _held(self, room: str) -> _RoomKeys:
        held = self._rooms.get(room)
        if held is None:
            raise NoRoomKey(f"no room key for {room}: {self.why_locked(room) or WAITING}")
        return held
