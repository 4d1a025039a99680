"""pttd.e2ee.keyring: a member's room keys, with real keys end to end.

The room keys come from a real key authority (:class:`pttd.e2ee.authority.Authority`, its key
file in ``tmp_path``) or, where a test needs bundles no honest authority makes, straight from
:func:`pttd.e2ee.keys.seal_bundle`; every device has a real hybrid identity key. What one keyring
seals another opens, so each assertion is about real SFrame packets.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pttd.e2ee import sframe
from pttd.e2ee.authority import Authority
from pttd.e2ee.keyring import (
    DOWNGRADE,
    GENERATION_SHIFT,
    MAX_GENERATION,
    NO_AUTHORITY,
    WAITING,
    Heard,
    Keyring,
    NoRoomKey,
)
from pttd.e2ee.keys import (
    REFUSED_MALFORMED,
    REFUSED_OTHER_DEVICE,
    REFUSED_SIGNATURE,
    SFRAME_DEFAULT_SUITE,
    AuthorityKey,
    E2eeError,
    IdentityKey,
    KeyRefused,
    RoomKey,
    bundle_to_text,
    make_kid,
    new_epoch_secret,
    seal_bundle,
    sender_base_key,
)

NAMES = ("alice", "bob", "carol")


@pytest.fixture(scope="module")
def devices() -> dict[str, IdentityKey]:
    return {name: IdentityKey.generate() for name in NAMES}


def approve(auth: Authority, room: str, name: str, identity: IdentityKey) -> None:
    """Approve ``identity`` as the admin would: with the digits read off the device."""
    auth.approve(room, name, identity.public, identity.public.fingerprint.digits)


@pytest.fixture
def auth(tmp_path: Path, devices: dict[str, IdentityKey]) -> Authority:
    """An authority with rooms ops and yard, alice and bob approved in both (epoch 1)."""
    authority = Authority.create(tmp_path / "authority.json")
    for room in ("ops", "yard"):
        authority.add_room(room)
        for name in ("alice", "bob"):
            approve(authority, room, name, devices[name])
    return authority


def sealed_for(auth: Authority, room: str, name: str) -> str:
    """The current epoch of ``room`` sealed for ``name``, as the server passes it on."""
    return bundle_to_text(dict(auth.bundles(room))[name])


def ring(
    auth: Authority | None,
    devices: dict[str, IdentityKey],
    name: str,
    *,
    generation: int = 1,
    rooms: tuple[str, ...] = ("ops",),
) -> Keyring:
    """``name``'s keyring (no keys yet) with ``rooms`` encrypted."""
    keyring = Keyring(devices[name], auth.public_key if auth else None, name, generation)
    for room in rooms:
        keyring.set_encrypted(room, True)
    return keyring


def keyed(
    auth: Authority,
    devices: dict[str, IdentityKey],
    name: str,
    *,
    generation: int = 1,
    rooms: tuple[str, ...] = ("ops",),
) -> Keyring:
    """``name``'s keyring holding the current key of each of ``rooms``."""
    keyring = ring(auth, devices, name, generation=generation, rooms=rooms)
    for room in rooms:
        keyring.accept(room, sealed_for(auth, room, name))
    return keyring


def header(packet: bytes) -> tuple[int, int]:
    """(KID, CTR) of an SFrame packet."""
    kid, ctr, _ = sframe.decode_header(packet)
    return kid, ctr


def assert_talk(talker: Keyring, listener: Keyring, epoch: int, room: str = "ops") -> None:
    """What ``talker`` seals ``listener`` opens: the talker's name, the epoch, the payload."""
    payload = f"opus frame of {talker.name} in {room}".encode()
    packet = talker.seal(room, payload)
    assert payload not in packet
    assert listener.open(room, packet) == Heard(talker.name, epoch, payload)


# --- talking ----------------------------------------------------------------------------------


def test_two_members_hear_each_other_by_name(
    auth: Authority, devices: dict[str, IdentityKey]
) -> None:
    alice = keyed(auth, devices, "alice")
    bob = keyed(auth, devices, "bob")
    first = 1 << GENERATION_SHIFT
    for i in range(3):
        payload = bytes([0xFC, i]) + b"opus"
        packet = alice.seal("ops", payload)
        assert header(packet) == (make_kid(1, 0), first + i)  # alice is sender 0, epoch 1
        assert bob.open("ops", packet) == Heard("alice", 1, payload)
    packet = bob.seal("ops", b"roger")
    assert header(packet) == (make_kid(1, 1), first)
    assert alice.open("ops", packet) == Heard("bob", 1, b"roger")
    assert alice.suite("ops") == bob.suite("ops") == SFRAME_DEFAULT_SUITE
    assert alice.state("ops") == "encrypted, epoch 1, 2 members, sender 0"
    assert bob.state("ops") == "encrypted, epoch 1, 2 members, sender 1"
    key = alice.key("ops")
    assert key is not None and key.roster == ((0, "alice"), (1, "bob")) and key.epoch == 1


def test_an_empty_payload_round_trips(auth: Authority, devices: dict[str, IdentityKey]) -> None:
    alice, bob = keyed(auth, devices, "alice"), keyed(auth, devices, "bob")
    assert bob.open("ops", alice.seal("ops", b"")) == Heard("alice", 1, b"")


def test_each_room_has_its_own_key(auth: Authority, devices: dict[str, IdentityKey]) -> None:
    rooms = ("ops", "yard")
    alice = keyed(auth, devices, "alice", rooms=rooms)
    bob = keyed(auth, devices, "bob", rooms=rooms)
    for room in rooms:
        assert_talk(alice, bob, 1, room)
    packet = alice.seal("yard", b"for the yard")
    with pytest.raises(sframe.AuthenticationFailed):  # same KID, another room's secret
        bob.open("ops", packet)
    assert bob.open("yard", packet) == Heard("alice", 1, b"for the yard")


# --- locked or not ----------------------------------------------------------------------------


@pytest.mark.parametrize("with_authority", [True, False])
def test_a_clear_room_is_never_locked(
    auth: Authority, devices: dict[str, IdentityKey], with_authority: bool
) -> None:
    keyring = ring(auth if with_authority else None, devices, "alice", rooms=())
    assert keyring.why_locked("ops") is None
    assert keyring.locked(("ops", "yard")) == ()
    assert keyring.state("ops") == "clear" and keyring.suite("ops") is None
    keyring.set_encrypted("ops", True)
    assert keyring.why_locked("ops") is not None
    keyring.set_encrypted("ops", False)  # made clear again
    assert keyring.why_locked("ops") is None and keyring.locked(("ops",)) == ()


def test_an_encrypted_room_is_locked_until_its_key_comes(
    auth: Authority, devices: dict[str, IdentityKey]
) -> None:
    alice = ring(auth, devices, "alice")
    assert alice.why_locked("ops") == WAITING
    assert alice.locked(("ops", "yard")) == (("ops", WAITING),)
    assert alice.state("ops") == WAITING and alice.key("ops") is None
    for call in (
        lambda: alice.suite("ops"),
        lambda: alice.seal("ops", b"x"),
        lambda: alice.open("ops", b"\x10\x00x"),
    ):
        with pytest.raises(NoRoomKey, match="waiting for its room key"):
            call()
    key = alice.accept("ops", sealed_for(auth, "ops", "alice"))
    assert key.room == "ops" and key.epoch == 1 and key.sender_index == 0
    assert alice.why_locked("ops") is None and alice.locked(("ops", "yard")) == ()
    assert alice.key("ops") == key


def test_without_a_key_authority_an_encrypted_room_stays_locked(
    auth: Authority, devices: dict[str, IdentityKey]
) -> None:
    """Paired with a link that named no key authority: no bundle can be checked, so none is
    taken, however good."""
    alice = ring(None, devices, "alice")
    assert alice.why_locked("ops") == NO_AUTHORITY
    with pytest.raises(KeyRefused) as refused:
        alice.accept("ops", sealed_for(auth, "ops", "alice"))
    assert refused.value.reason == NO_AUTHORITY
    assert alice.why_locked("ops") == NO_AUTHORITY and alice.state("ops") == NO_AUTHORITY
    assert alice.locked(("ops", "yard")) == (("ops", NO_AUTHORITY),)
    with pytest.raises(NoRoomKey):
        alice.seal("ops", b"x")


def test_generation_must_be_in_range(devices: dict[str, IdentityKey]) -> None:
    for bad in (0, -1, MAX_GENERATION + 1):
        with pytest.raises(E2eeError, match="out of range"):
            Keyring(devices["alice"], None, "alice", bad)
    Keyring(devices["alice"], None, "alice", MAX_GENERATION)


# --- refusals ---------------------------------------------------------------------------------


class Scene:
    """ops at epoch 2 (one rotation), alice and bob holding it; beside it what a hostile or
    confused server might pass on instead."""

    def __init__(self, tmp_path: Path, auth: Authority, devices: dict[str, IdentityKey]) -> None:
        self.auth = auth
        self.devices = devices
        self.epoch_1 = sealed_for(auth, "ops", "alice")
        # A restored copy of the key file, rotated on its own: epoch 2 with another secret,
        # signed by the real authority.
        shutil.copy(auth.path, tmp_path / "fork.json")
        self.fork = Authority.load(tmp_path / "fork.json")
        auth.rotate("ops")
        self.fork.rotate("ops")
        self.alice = keyed(auth, devices, "alice")
        self.bob = keyed(auth, devices, "bob")
        self.held = self.alice.key("ops")
        assert self.held is not None and self.held.epoch == 2
        # The malicious server: an authority key and an epoch secret of its own, wrapped for
        # alice's real identity key.
        self.server_key = AuthorityKey.generate()
        self.server_secret = new_epoch_secret()
        self.server_bundle = seal_bundle(
            self.server_key,
            RoomKey(
                room="ops",
                epoch=3,
                sender_index=0,
                roster=((0, "alice"), (1, "bob")),
                epoch_secret=self.server_secret,
            ),
            "alice",
            devices["alice"].public,
        )

    def bundle(self, kind: str) -> tuple[str, str]:
        """(sealed key text, the reason it is refused) for alice's ops."""
        match kind:
            case "another authority":
                return bundle_to_text(self.server_bundle), REFUSED_SIGNATURE
            case "another authority, naming the real one":
                body = self.server_bundle.replace(
                    self.server_key.public.to_text().encode(),
                    self.auth.public_key.to_text().encode(),
                )
                return bundle_to_text(body), REFUSED_SIGNATURE
            case "another device":
                return sealed_for(self.auth, "ops", "bob"), REFUSED_OTHER_DEVICE
            case "another room":
                return sealed_for(self.auth, "yard", "alice"), (
                    "sealed for room 'yard', delivered for 'ops'"
                )
            case "an older epoch":
                return self.epoch_1, "epoch 1 is older than epoch 2, accepted before"
            case "another secret for the same epoch":
                return sealed_for(self.fork, "ops", "alice"), "a second, different key for epoch 2"
            case "not a bundle":
                return "not a room key!", REFUSED_MALFORMED
        raise AssertionError(kind)


@pytest.fixture
def scene(tmp_path: Path, auth: Authority, devices: dict[str, IdentityKey]) -> Scene:
    return Scene(tmp_path, auth, devices)


REFUSALS = [
    "another authority",
    "another authority, naming the real one",
    "another device",
    "another room",
    "an older epoch",
    "another secret for the same epoch",
    "not a bundle",
]


@pytest.mark.parametrize("kind", REFUSALS)
def test_a_refused_key_leaves_the_key_held_working(scene: Scene, kind: str) -> None:
    text, reason = scene.bundle(kind)
    with pytest.raises(KeyRefused) as refused:
        scene.alice.accept("ops", text)
    assert refused.value.reason == reason
    assert scene.alice.key("ops") == scene.held
    assert scene.alice.why_locked("ops") is None
    assert scene.alice.state("ops") == "encrypted, epoch 2, 2 members, sender 0"
    assert_talk(scene.alice, scene.bob, 2)
    assert_talk(scene.bob, scene.alice, 2)


@pytest.mark.parametrize(
    "kind", ["another authority", "another device", "another room", "not a bundle"]
)
def test_a_refused_key_says_why_the_room_stays_locked(scene: Scene, kind: str) -> None:
    text, reason = scene.bundle(kind)
    restarted = ring(scene.auth, scene.devices, "alice", generation=2)  # alice, restarted
    with pytest.raises(KeyRefused):
        restarted.accept("ops", text)
    why = f"room key refused: {reason}"
    assert restarted.why_locked("ops") == why and restarted.state("ops") == why
    assert restarted.locked(("ops", "yard")) == (("ops", why),)
    with pytest.raises(NoRoomKey, match="room key refused"):
        restarted.seal("ops", b"x")
    restarted.accept("ops", sealed_for(scene.auth, "ops", "alice"))  # the real key comes
    assert restarted.why_locked("ops") is None
    assert_talk(restarted, scene.bob, 2)


def test_the_malicious_servers_own_epoch_secret_opens_nothing(scene: Scene) -> None:
    """A server that wrapped an epoch secret of its own for alice is refused by the signature;
    packets it seals with that secret (under a KID alice holds or a new one) open nowhere."""
    with pytest.raises(KeyRefused, match="not signed by this room's key authority"):
        scene.alice.accept("ops", bundle_to_text(scene.server_bundle))
    for epoch, error in ((2, sframe.AuthenticationFailed), (3, sframe.UnknownKey)):
        forger = sframe.Sender(
            sframe.CipherSuite(SFRAME_DEFAULT_SUITE),
            make_kid(epoch, 0),
            sender_base_key(scene.server_secret, 0),
            first_counter=1 << 50,
        )
        packet = forger.encrypt(b"forged speech", b"ops")
        for listener in (scene.alice, scene.bob):
            with pytest.raises(error):
                listener.open("ops", packet)
    assert_talk(scene.alice, scene.bob, 2)  # the forgeries moved no replay window


def test_the_same_key_again_changes_nothing(
    auth: Authority, devices: dict[str, IdentityKey]
) -> None:
    """A reconnection brings the same key (sealed anew): the counters go on and the replay
    window stays."""
    alice, bob = keyed(auth, devices, "alice"), keyed(auth, devices, "bob")
    heard = alice.seal("ops", b"once")
    assert bob.open("ops", heard).payload == b"once"
    key = bob.key("ops")
    assert bob.accept("ops", sealed_for(auth, "ops", "bob")) == key
    with pytest.raises(sframe.ReplayedPacket):
        bob.open("ops", heard)
    assert alice.accept("ops", sealed_for(auth, "ops", "alice")) == alice.key("ops")
    assert header(alice.seal("ops", b"next"))[1] == (1 << GENERATION_SHIFT) + 1


# --- rotation ---------------------------------------------------------------------------------


def test_after_a_removal_the_remaining_members_talk_and_the_removed_one_hears_nothing(
    auth: Authority, devices: dict[str, IdentityKey]
) -> None:
    approve(auth, "ops", "carol", devices["carol"])
    alice, bob, carol = (keyed(auth, devices, name) for name in NAMES)
    assert alice.state("ops") == "encrypted, epoch 1, 3 members, sender 0"
    in_flight = carol.seal("ops", b"carol, just before")
    bob_epoch_1 = bob.seal("ops", b"bob, just before")

    bundles = dict(auth.remove("ops", "carol"))
    assert sorted(bundles) == ["alice", "bob"]  # nothing of epoch 2 for carol
    for member in (alice, bob):
        member.accept("ops", bundle_to_text(bundles[member.name]))
    with pytest.raises(KeyRefused) as refused:  # alice's epoch 2, passed to carol
        carol.accept("ops", bundle_to_text(bundles["alice"]))
    assert refused.value.reason == REFUSED_OTHER_DEVICE

    assert alice.state("ops") == "encrypted, epoch 2, 2 members, sender 0"
    assert_talk(alice, bob, 2)
    assert_talk(bob, alice, 2)
    new = alice.seal("ops", b"after carol left")
    assert header(new) == (make_kid(2, 0), (1 << GENERATION_SHIFT) + 1)
    with pytest.raises(sframe.UnknownKey):  # carol still holds epoch 1 only
        carol.open("ops", new)
    with pytest.raises(sframe.UnknownKey):
        carol.open("ops", bob.seal("ops", b"after carol left"))
    # Packets in flight across the rotation still open, named by the epoch they were sealed in,
    # from the members who remain; the removed member is not heard under its old key either.
    assert alice.open("ops", bob_epoch_1) == Heard("bob", 1, b"bob, just before")
    with pytest.raises(sframe.UnknownKey):
        bob.open("ops", in_flight)

    # One rotation later epoch 1 is gone: only the current and the previous epoch open.
    late = carol.seal("ops", b"carol, much later")
    rotated = dict(auth.rotate("ops"))
    for member in (alice, bob):
        member.accept("ops", bundle_to_text(rotated[member.name]))
    with pytest.raises(sframe.UnknownKey):
        bob.open("ops", late)
    assert_talk(alice, bob, 3)
    assert bob.open("ops", new) == Heard("alice", 2, b"after carol left")  # previous: still


def test_a_packet_heard_before_a_rotation_cannot_be_replayed_after_it(
    auth: Authority, devices: dict[str, IdentityKey]
) -> None:
    alice, bob = keyed(auth, devices, "alice"), keyed(auth, devices, "bob")
    heard = alice.seal("ops", b"heard once")
    assert bob.open("ops", heard).payload == b"heard once"
    not_yet = alice.seal("ops", b"still in flight")
    rotated = dict(auth.rotate("ops"))
    bob.accept("ops", bundle_to_text(rotated["bob"]))
    with pytest.raises(sframe.ReplayedPacket):
        bob.open("ops", heard)
    assert bob.open("ops", not_yet) == Heard("alice", 1, b"still in flight")
    with pytest.raises(sframe.ReplayedPacket):
        bob.open("ops", not_yet)


def test_a_member_approved_later_is_heard_once_the_key_is_sealed_again(
    tmp_path: Path, devices: dict[str, IdentityKey]
) -> None:
    """A join does not rotate: the others get the same epoch sealed again
    (:meth:`Authority.bundles`), its roster naming the newcomer; their keyrings take it and hear
    the newcomer by name, their own counters going on. An older issue passed on again (a
    shorter roster) changes nothing."""
    auth = Authority.create(tmp_path / "authority.json")
    auth.add_room("ops")
    approve(auth, "ops", "alice", devices["alice"])
    first_issue = sealed_for(auth, "ops", "alice")
    alice = keyed(auth, devices, "alice")
    alice.seal("ops", b"alone")  # counter: first
    approve(auth, "ops", "bob", devices["bob"])
    bob = keyed(auth, devices, "bob")
    assert_talk(alice, bob, 1)

    alice.accept("ops", sealed_for(auth, "ops", "alice"))  # the re-issue
    assert alice.state("ops") == "encrypted, epoch 1, 2 members, sender 0"
    assert_talk(bob, alice, 1)
    assert header(alice.seal("ops", b"on"))[1] == (1 << GENERATION_SHIFT) + 2
    alice.accept("ops", first_issue)  # stale: alice alone
    assert alice.state("ops") == "encrypted, epoch 1, 2 members, sender 0"
    assert_talk(bob, alice, 1)


# --- counters ---------------------------------------------------------------------------------


def test_two_generations_never_share_a_kid_and_counter(
    auth: Authority, devices: dict[str, IdentityKey]
) -> None:
    """Two runs of one device (the generation is new each start): the same key, the same KID,
    counters that never meet."""
    runs = [keyed(auth, devices, "alice", generation=g) for g in (1, 2)]
    seen: dict[tuple[int, int], int] = {}
    for generation, run in zip((1, 2), runs, strict=True):
        for _ in range(50):
            kid, ctr = header(run.seal("ops", b"x"))
            assert kid == make_kid(1, 0) and ctr >> GENERATION_SHIFT == generation
            assert (kid, ctr) not in seen, f"generation {generation} repeats {seen[(kid, ctr)]}"
            seen[(kid, ctr)] = generation
    assert len(seen) == 100


def test_the_last_generation_still_fits_the_64_bit_counter(
    auth: Authority, devices: dict[str, IdentityKey]
) -> None:
    alice = keyed(auth, devices, "alice", generation=MAX_GENERATION)
    bob = keyed(auth, devices, "bob")
    packet = alice.seal("ops", b"late in life")
    assert header(packet)[1] == MAX_GENERATION << GENERATION_SHIFT < 2**64
    assert bob.open("ops", packet).payload == b"late in life"


def test_a_key_forgotten_and_accepted_again_continues_its_counter(
    auth: Authority, devices: dict[str, IdentityKey]
) -> None:
    alice, bob = keyed(auth, devices, "alice"), keyed(auth, devices, "bob")
    last = [header(alice.seal("ops", b"x"))[1] for _ in range(5)][-1]
    text = sealed_for(auth, "ops", "alice")
    alice.forget()
    assert alice.key("ops") is None and alice.encrypted == {"ops"}  # keyed: encrypted for good
    alice.set_encrypted("ops", True)
    assert alice.why_locked("ops") == WAITING
    alice.accept("ops", text)
    packet = alice.seal("ops", b"after")
    assert header(packet) == (make_kid(1, 0), last + 1)
    assert bob.open("ops", packet) == Heard("alice", 1, b"after")


# --- packets bound to their room, and not to be tampered with or replayed ------------------------


def test_a_packet_sealed_for_one_room_does_not_open_in_another_with_the_same_keys(
    devices: dict[str, IdentityKey],
) -> None:
    """Both rooms share every key (an authority that reused a secret): the room name, the SFrame
    metadata, still tells them apart."""
    authority = AuthorityKey.generate()
    secret = new_epoch_secret()
    roster = ((0, "alice"), (1, "bob"))
    rings = {}
    for index, name in enumerate(("alice", "bob")):
        keyring = Keyring(devices[name], authority.public, name, 1)
        for room in ("ops", "yard"):
            key = RoomKey(
                room=room, epoch=7, sender_index=index, roster=roster, epoch_secret=secret
            )
            keyring.set_encrypted(room, True)
            keyring.accept(
                room, bundle_to_text(seal_bundle(authority, key, name, devices[name].public))
            )
        rings[name] = keyring
    alice, bob = rings["alice"], rings["bob"]
    packet = alice.seal("ops", b"for ops only")
    other = alice.seal("yard", b"for yard")
    assert header(packet)[0] == header(other)[0] == make_kid(7, 0)  # the same KID, same key
    with pytest.raises(sframe.AuthenticationFailed):
        bob.open("yard", packet)
    with pytest.raises(sframe.AuthenticationFailed):
        bob.open("ops", other)
    assert bob.open("ops", packet) == Heard("alice", 7, b"for ops only")
    assert bob.open("yard", other) == Heard("alice", 7, b"for yard")


def flip(packet: bytes, at: int) -> bytes:
    return packet[:at] + bytes([packet[at] ^ 0x01]) + packet[at + 1 :]


def test_tampered_and_replayed_packets_do_not_open(
    auth: Authority, devices: dict[str, IdentityKey]
) -> None:
    alice, bob = keyed(auth, devices, "alice"), keyed(auth, devices, "bob")
    packet = alice.seal("ops", b"the real frame")
    _, _, start = sframe.decode_header(packet)
    forgeries = {
        "a bit of the ciphertext": flip(packet, start),
        "a bit of the tag": flip(packet, len(packet) - 1),
        "the KID": flip(packet, 1),
        "the counter": flip(packet, start - 1),
        "cut short": packet[: start + 3],
        "nothing": b"",
        "a byte more": packet + b"\x00",
    }
    for what, forged in forgeries.items():
        with pytest.raises(sframe.SFrameError):
            bob.open("ops", forged)
            pytest.fail(f"{what}: opened")
    # None of them moved the replay window: the real packet opens, once.
    assert bob.open("ops", packet) == Heard("alice", 1, b"the real frame")
    with pytest.raises(sframe.ReplayedPacket):
        bob.open("ops", packet)
    later = [alice.seal("ops", bytes([i])) for i in range(3)]
    assert bob.open("ops", later[2]).payload == b"\x02"
    assert bob.open("ops", later[0]).payload == b"\x00"  # late, but within the window: once
    with pytest.raises(sframe.ReplayedPacket):
        bob.open("ops", later[0])


# --------------------------------------------------------------------------- what the server says


def test_an_older_epoch_is_refused_after_a_restart_too(
    auth: Authority, devices: dict[str, IdentityKey]
) -> None:
    """A server that kept epoch 1 (which a removed member holds) and hands it to a device that
    restarted: the floor the device persisted refuses it."""
    epoch_1 = sealed_for(auth, "ops", "alice")
    auth.rotate("ops")
    alice = keyed(auth, devices, "alice")
    assert alice.floors == {"ops": 2}
    restarted = Keyring(devices["alice"], auth.public_key, "alice", 2, floors=dict(alice.floors))
    with pytest.raises(KeyRefused) as refused:
        restarted.accept("ops", epoch_1)
    assert refused.value.reason == "epoch 1 is older than epoch 2, accepted before"
    assert restarted.why_locked("ops") == f"room key refused: {refused.value.reason}"
    restarted.accept("ops", sealed_for(auth, "ops", "alice"))
    assert restarted.why_locked("ops") is None


def test_a_room_once_keyed_stays_encrypted_whatever_the_server_says(
    auth: Authority, devices: dict[str, IdentityKey]
) -> None:
    """A server announcing an encrypted room clear (to get clear audio out of the device) is
    refused: the room is locked, nothing is sealed or sent in clear; after a restart too."""
    alice = keyed(auth, devices, "alice")
    assert alice.set_encrypted("ops", False) is False
    assert "ops" in alice.encrypted
    assert alice.why_locked("ops") == DOWNGRADE
    with pytest.raises(NoRoomKey):
        alice.seal("ops", b"clear?")
    restarted = Keyring(devices["alice"], auth.public_key, "alice", 2, floors=dict(alice.floors))
    assert "ops" in restarted.encrypted  # before the server says anything
    assert restarted.set_encrypted("yard", False) is True  # never keyed: the server's word
    restarted.accept("ops", sealed_for(auth, "ops", "alice"))
    assert restarted.why_locked("ops") is None
