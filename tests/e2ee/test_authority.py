"""pttd.e2ee.authority: the room key authority, its operations and its key file."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pttd.e2ee.authority import (
    CREATE_COMMAND,
    Authority,
    AuthorityError,
    EpochRecord,
    FingerprintMismatch,
    MemberInfo,
)
from pttd.e2ee.keys import (
    REFUSED_OTHER_DEVICE,
    IdentityKey,
    KeyRefused,
    RoomKey,
    b64url_encode,
    open_bundle,
    sender_base_key,
)
from pttd.errors import PttdError


class Clock:
    """A clock the test moves: 1000.0, 1001.0, … one second per reading."""

    def __init__(self) -> None:
        self.now = 999.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "authority.json"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def auth(path: Path, clock: Clock) -> Authority:
    authority = Authority.create(path, clock=clock)
    authority.add_room("ops")
    return authority


@pytest.fixture(scope="module")
def devices() -> dict[str, IdentityKey]:
    return {name: IdentityKey.generate() for name in ("alice", "bob", "carol", "dave")}


def approve(
    auth: Authority, room: str, name: str, identity: IdentityKey
) -> list[tuple[str, bytes]]:
    """Approve ``identity`` as the admin would: with the digits read off the device."""
    return auth.approve(room, name, identity.public, identity.public.fingerprint.digits)


def opened(
    auth: Authority, bundles: list[tuple[str, bytes]], devices: dict[str, IdentityKey]
) -> dict[str, RoomKey]:
    """Each bundle opened by its member's device, as the device would."""
    return {
        name: open_bundle(bundle, auth.public_key, devices[name], name) for name, bundle in bundles
    }


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- creating and loading ---------------------------------------------------------------------


@pytest.fixture
def umask() -> Iterator[Callable[[int], int]]:
    """Set the process's umask for one test (put back after)."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


def test_create_writes_a_0600_file_that_loads_back(path: Path, umask: Callable[[int], int]) -> None:
    umask(0)
    authority = Authority.create(path)
    assert mode_of(path) == 0o600
    data = json.loads(path.read_text())
    assert data["format"] == "pttd key authority" and data["version"] == 1
    assert data["public_key"] == authority.public_key.to_text() and data["rooms"] == {}
    assert len(data["signing_key"]) == 43
    loaded = Authority.load(path)
    assert loaded.public_key == authority.public_key
    assert loaded.rooms() == []
    assert data["signing_key"] not in repr(loaded)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_create_never_overwrites(path: Path) -> None:
    path.write_bytes(b"precious")
    with pytest.raises(AuthorityError) as caught:
        Authority.create(path)
    assert str(caught.value) == (
        f"{path}: a file is already there; a key authority is never written over "
        "(its private key may be the only copy)"
    )
    assert path.read_bytes() == b"precious"
    with pytest.raises(AuthorityError, match="does not exist"):
        Authority.create(path.parent / "no-such-dir" / "a.json")


def test_a_missing_file_says_how_to_make_one(path: Path) -> None:
    with pytest.raises(AuthorityError) as caught:
        Authority.load(path)
    assert str(caught.value) == (
        f"{path}: no key authority file there; create one with `{CREATE_COMMAND} {path}`"
    )
    assert isinstance(caught.value, PttdError)


def _load_as_nobody(path: Path) -> str:
    """The error Authority.load gives user ``nobody``, who may not read ``path`` (in a child
    process: the tests run as root here, and root may read anything)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        message = "loaded"
        try:
            os.close(read_fd)
            os.setgid(65534)
            os.setuid(65534)
            Authority.load(path)
        except AuthorityError as e:
            message = str(e)
        except BaseException as e:
            message = f"unexpected {type(e).__name__}: {e}"
        finally:
            os.write(write_fd, message.encode())
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(pid, 0)
    return message


def test_an_unreadable_file_says_permission_denied(tmp_path: Path) -> None:
    if os.geteuid() == 0:  # a directory nobody may pass through (pytest's are 0700), not list
        directory = Path(tempfile.mkdtemp(prefix="pttd-authority-"))
        directory.chmod(0o711)
    else:
        directory = tmp_path
    path = directory / "authority.json"
    try:
        Authority.create(path)
        expected = (
            f"{path}: cannot read the key authority file: permission denied "
            "(run this as the user who owns it)"
        )
        if os.geteuid() == 0:
            assert _load_as_nobody(path) == expected
            assert _load_as_nobody(path.parent / "none.json").startswith(
                f"{path.parent / 'none.json'}: no key"
            )
        else:
            path.chmod(0o000)
            with pytest.raises(AuthorityError) as caught:
                Authority.load(path)
            assert str(caught.value) == expected
    finally:
        if directory != tmp_path:
            shutil.rmtree(directory)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o666])
def test_a_file_others_may_read_is_refused(path: Path, mode: int) -> None:
    Authority.create(path)
    path.chmod(mode)
    with pytest.raises(AuthorityError) as caught:
        Authority.load(path)
    assert str(caught.value) == (
        f"{path}: other users may read or change it (mode {mode:04o}) but a private key file "
        f"must be 0600: chmod 600 {path}"
    )
    path.chmod(0o600)
    Authority.load(path)


def test_a_directory_is_not_a_key_file(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir(mode=0o700)
    with pytest.raises(AuthorityError) as caught:
        Authority.load(tmp_path / "d")
    assert str(caught.value) == f"{tmp_path / 'd'}: not a regular file, so not a key authority file"


def _edit(path: Path, change: Callable[[dict[str, object]], object]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    path.chmod(0o600)


def _room(data: dict[str, object]) -> dict[str, object]:
    rooms = data["rooms"]
    assert isinstance(rooms, dict)
    room = rooms["ops"]
    assert isinstance(room, dict)
    return room


def _member(data: dict[str, object], name: str) -> dict[str, object]:
    members = _room(data)["members"]
    assert isinstance(members, dict)
    member = members[name]
    assert isinstance(member, dict)
    return member


CORRUPTIONS: list[tuple[str, Callable[[dict[str, object]], object], str]] = [
    ("format", lambda d: d.pop("format"), 'no "format": "pttd key authority"'),
    ("version", lambda d: d.update(version=2), "format version 2, this pttd reads version 1"),
    (
        "signing key",
        lambda d: d.update(signing_key="abc"),
        "signing_key is not 32 bytes of base64url",
    ),
    (
        "public key",
        lambda d: d.update(public_key=b64url_encode(bytes(32))),
        "public_key is not the signing key's public key",
    ),
    ("rooms", lambda d: d.update(rooms=[]), "rooms is missing or not an object"),
    (
        "epoch secret",
        lambda d: _room(d).pop("epoch_secret"),
        "rooms['ops'].epoch_secret is missing or not a string",
    ),
    (
        "short epoch secret",
        lambda d: _room(d).update(epoch_secret=b64url_encode(bytes(16))),
        "rooms['ops'].epoch_secret is not 32 bytes of base64url",
    ),
    (
        "epoch",
        lambda d: _room(d).update(epoch="2"),
        "rooms['ops'].epoch is missing or not an integer",
    ),
    (
        "epoch 0",
        lambda d: _room(d).update(epoch=0),
        "rooms['ops'].epoch 0 is not between 1 and 4294967295",
    ),
    (
        "history",
        lambda d: _room(d).update(epoch=5),
        "rooms['ops'].history does not end with the current epoch 5",
    ),
    (
        "index",
        lambda d: _member(d, "bob").update(index=0),
        "rooms['ops'].members['bob'].index 0 is used twice or not below next_index",
    ),
    (
        "fingerprint",
        lambda d: _member(d, "bob").update(fingerprint="0" * 40),
        "rooms['ops'].members['bob'].fingerprint is not the fingerprint of its public_key",
    ),
    (
        "member key",
        lambda d: _member(d, "bob").update(public_key="AAAA"),
        "rooms['ops'].members['bob'].public_key: an identity public key is 1217 bytes, not 3",
    ),
    (
        "approved_at",
        lambda d: _member(d, "bob").update(approved_at=True),
        "rooms['ops'].members['bob'].approved_at is missing or not a number",
    ),
]


@pytest.mark.parametrize(
    ("what", "change", "message"), CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS]
)
def test_a_file_with_wrong_fields_names_what_is_wrong(
    auth: Authority,
    path: Path,
    devices: dict[str, IdentityKey],
    what: str,
    change: Callable[[dict[str, object]], object],
    message: str,
) -> None:
    approve(auth, "ops", "alice", devices["alice"])
    approve(auth, "ops", "bob", devices["bob"])
    Authority.load(path)  # as written, it loads
    _edit(path, change)
    with pytest.raises(AuthorityError) as caught:
        Authority.load(path)
    assert str(caught.value) == f"{path}: not a usable key authority file: {message}", what
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not JSON (Expecting value at line 1 column 1)"),
        (
            b'{"format": "pttd key authority",\n oops}',
            "not JSON (Expecting property name enclosed in double quotes at line 2 column 2)",
        ),
        (b"\xff\xfe{}", "not UTF-8 text"),
        (b"[]", 'no "format": "pttd key authority"'),
    ],
)
def test_a_file_that_is_not_json_says_so(path: Path, content: bytes, message: str) -> None:
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(AuthorityError) as caught:
        Authority.load(path)
    assert str(caught.value) == f"{path}: not a usable key authority file: {message}"


# --- rooms and members ------------------------------------------------------------------------


def test_add_room_starts_epoch_one_with_no_members(auth: Authority, path: Path) -> None:
    assert auth.rooms() == ["ops"]
    assert auth.epoch("ops") == 1 and auth.suite("ops") == 1
    assert auth.members("ops") == [] and auth.bundles("ops") == []
    assert auth.history("ops") == [EpochRecord(1, "room created", 1001.0)]
    auth.add_room("night", suite=4)
    assert auth.rooms() == ["night", "ops"] and auth.suite("night") == 4
    loaded = Authority.load(path)
    assert loaded.rooms() == ["night", "ops"] and loaded.suite("night") == 4
    with pytest.raises(AuthorityError) as caught:
        auth.add_room("ops")
    assert str(caught.value) == "room 'ops' already has room keys (epoch 1); nothing was changed"
    with pytest.raises(AuthorityError, match="SFrame suite 0 is not between 1 and 65535"):
        auth.add_room("x", suite=0)
    with pytest.raises(AuthorityError, match="room 'bad\\\\n' contains a control"):
        auth.add_room("bad\n")
    with pytest.raises(AuthorityError) as caught:
        auth.epoch("nope")
    assert str(caught.value) == f"no room 'nope' in the key authority file {path}"


def test_approve_wraps_the_current_epoch_for_the_new_member(
    auth: Authority, path: Path, devices: dict[str, IdentityKey]
) -> None:
    bundles = approve(auth, "ops", "alice", devices["alice"])
    assert [name for name, _ in bundles] == ["alice"]
    alice = opened(auth, bundles, devices)["alice"]
    assert (alice.room, alice.epoch, alice.suite, alice.sender_index) == ("ops", 1, 1, 0)
    assert alice.roster == ((0, "alice"),)
    secret = alice.epoch_secret

    bundles = approve(auth, "ops", "bob", devices["bob"])
    assert [name for name, _ in bundles] == ["bob"]  # only the newcomer: no rotation on a join
    bob = opened(auth, bundles, devices)["bob"]
    assert bob.epoch == 1 and bob.sender_index == 1 and bob.epoch_secret == secret
    assert bob.roster == ((0, "alice"), (1, "bob"))
    assert auth.epoch("ops") == 1

    # a re-issue gives everyone the roster with the newcomer, same epoch and secret
    everyone = opened(auth, auth.bundles("ops"), devices)
    assert everyone["alice"].roster == everyone["bob"].roster == ((0, "alice"), (1, "bob"))
    assert {k.epoch_secret for k in everyone.values()} == {secret}

    members = auth.members("ops")
    assert members == [
        MemberInfo("alice", 0, devices["alice"].public.fingerprint.digits, 1002.0),
        MemberInfo("bob", 1, devices["bob"].public.fingerprint.digits, 1003.0),
    ]
    assert Authority.load(path).members("ops") == members
    member = json.loads(path.read_text())["rooms"]["ops"]["members"]["bob"]
    assert member == {
        "index": 1,
        "public_key": devices["bob"].public.to_text(),
        "fingerprint": devices["bob"].public.fingerprint.digits,
        "approved_at": 1003.0,
    }


def test_approve_accepts_the_digits_as_typed(
    auth: Authority, devices: dict[str, IdentityKey]
) -> None:
    digits = devices["alice"].public.fingerprint.digits
    typed = digits.replace(" ", "-")[:20] + "  " + digits.replace(" ", "")[17:]
    bundles = auth.approve("ops", "alice", devices["alice"].public, typed)
    assert [name for name, _ in bundles] == ["alice"]


def test_a_wrong_fingerprint_approves_nothing(
    auth: Authority, path: Path, devices: dict[str, IdentityKey]
) -> None:
    """The server hands over a key of its own for "bob"; the installer read bob's real digits
    off its console: the admin's approval is refused and the file is untouched."""
    approve(auth, "ops", "alice", devices["alice"])
    before = path.read_bytes()
    server_key = IdentityKey.generate()
    with pytest.raises(FingerprintMismatch) as caught:
        auth.approve("ops", "bob", server_key.public, devices["bob"].public.fingerprint.digits)
    assert str(caught.value) == (
        "the key the server has for 'bob' does not match the fingerprint read on the device; "
        "nothing was approved (check the digits, or pair the device again)"
    )
    assert isinstance(caught.value, AuthorityError)
    assert path.read_bytes() == before
    assert [m.name for m in auth.members("ops")] == ["alice"]
    assert [m.name for m in Authority.load(path).members("ops")] == ["alice"]

    digits = devices["bob"].public.fingerprint.digits
    typo = digits[:-1] + str((int(digits[-1]) + 1) % 10)
    with pytest.raises(FingerprintMismatch):
        auth.approve("ops", "bob", devices["bob"].public, typo)
    with pytest.raises(AuthorityError) as not_one:
        auth.approve("ops", "bob", devices["bob"].public, digits[:-2])
    assert str(not_one.value) == (
        "what was typed is not a fingerprint: a fingerprint is 40 digits in groups of 5; "
        "this has 38; nothing was approved"
    )
    assert not isinstance(not_one.value, FingerprintMismatch)
    assert path.read_bytes() == before


def test_approving_the_same_key_again_changes_nothing(
    auth: Authority, path: Path, devices: dict[str, IdentityKey]
) -> None:
    first = opened(auth, approve(auth, "ops", "alice", devices["alice"]), devices)["alice"]
    before = path.read_bytes()
    again = approve(auth, "ops", "alice", devices["alice"])
    assert opened(auth, again, devices)["alice"] == first
    assert path.read_bytes() == before and auth.epoch("ops") == 1
    with pytest.raises(AuthorityError) as caught:
        approve(auth, "ops", "alias", devices["alice"])
    assert str(caught.value) == (
        "this key is already approved in room 'ops' as 'alice'; remove that member first; "
        "nothing was approved"
    )


def test_remove_starts_an_epoch_the_removed_member_cannot_open(
    auth: Authority, path: Path, devices: dict[str, IdentityKey]
) -> None:
    for name in ("alice", "bob", "carol"):
        approve(auth, "ops", name, devices[name])
    old = opened(auth, auth.bundles("ops"), devices)["bob"]

    bundles = auth.remove("ops", "bob")
    assert [name for name, _ in bundles] == ["alice", "carol"]
    assert auth.epoch("ops") == 2
    new = opened(auth, bundles, devices)
    assert {k.epoch for k in new.values()} == {2}
    assert new["alice"].roster == new["carol"].roster == ((0, "alice"), (2, "carol"))
    secret = new["alice"].epoch_secret
    assert secret == new["carol"].epoch_secret and secret != old.epoch_secret

    # nothing is wrapped for bob: no bundle of the new epoch opens with his key
    for _, bundle in [*bundles, *auth.bundles("ops")]:
        with pytest.raises(KeyRefused) as caught:
            open_bundle(bundle, auth.public_key, devices["bob"])
        assert caught.value.reason == REFUSED_OTHER_DEVICE
    # and what bob still holds derives none of the new epoch's sender keys
    for index in (0, 1, 2):
        assert sender_base_key(old.epoch_secret, index) != sender_base_key(secret, index)

    assert auth.history("ops")[-1] == EpochRecord(2, "bob removed", 1005.0)
    data = path.read_text()
    assert b64url_encode(old.epoch_secret) not in data  # no old secret kept
    assert b64url_encode(secret) in data
    assert Authority.load(path).epoch("ops") == 2
    with pytest.raises(AuthorityError) as not_member:
        auth.remove("ops", "bob")
    assert str(not_member.value) == "'bob' is not a member of room 'ops'; nothing was changed"


def test_sender_indexes_are_never_reused(auth: Authority, devices: dict[str, IdentityKey]) -> None:
    approve(auth, "ops", "alice", devices["alice"])
    approve(auth, "ops", "bob", devices["bob"])
    auth.remove("ops", "bob")
    approve(auth, "ops", "carol", devices["carol"])
    approve(auth, "ops", "bob", devices["bob"])  # back again, same key: a new index
    auth.remove("ops", "alice")
    approve(auth, "ops", "alice", devices["alice"])
    assert [(m.name, m.index) for m in auth.members("ops")] == [
        ("carol", 2),
        ("bob", 3),
        ("alice", 4),
    ]
    keys = opened(auth, auth.bundles("ops"), devices)
    assert keys["alice"].roster == ((2, "carol"), (3, "bob"), (4, "alice"))
    assert keys["alice"].kid == 3 << 16 | 4
    assert json.loads(auth.path.read_text())["rooms"]["ops"]["next_index"] == 5


def test_a_key_change_rotates_and_the_old_key_gets_nothing(
    auth: Authority, path: Path, devices: dict[str, IdentityKey]
) -> None:
    approve(auth, "ops", "alice", devices["alice"])
    approve(auth, "ops", "bob", devices["bob"])
    old = opened(auth, auth.bundles("ops"), devices)["alice"]
    new_alice = IdentityKey.generate()
    bundles = auth.approve("ops", "alice", new_alice.public, str(new_alice.public.fingerprint))
    assert [name for name, _ in bundles] == ["bob", "alice"]  # everyone, in index order
    assert auth.epoch("ops") == 2
    assert auth.history("ops")[-1].reason == "alice's key changed"
    alice = open_bundle(dict(bundles)["alice"], auth.public_key, new_alice, "alice")
    assert alice.epoch == 2 and alice.sender_index == 2
    assert alice.epoch_secret != old.epoch_secret
    bob = open_bundle(dict(bundles)["bob"], auth.public_key, devices["bob"], "bob")
    assert bob.epoch_secret == alice.epoch_secret
    assert bob.roster == ((1, "bob"), (2, "alice"))
    for _, bundle in bundles:
        with pytest.raises(KeyRefused):
            open_bundle(bundle, auth.public_key, devices["alice"])
    assert Authority.load(path).members("ops")[1].fingerprint == new_alice.public.fingerprint.digits


def test_rotate_gives_everyone_a_new_epoch(
    auth: Authority, devices: dict[str, IdentityKey]
) -> None:
    approve(auth, "ops", "alice", devices["alice"])
    approve(auth, "ops", "bob", devices["bob"])
    seen: set[bytes] = set()
    for epoch in (2, 3, 4):
        keys = opened(auth, auth.rotate("ops"), devices)
        assert {k.epoch for k in keys.values()} == {epoch}
        assert len({k.epoch_secret for k in keys.values()}) == 1
        seen.add(keys["alice"].epoch_secret)
    assert len(seen) == 3
    assert [h.epoch for h in auth.history("ops")] == [1, 2, 3, 4]
    assert auth.history("ops")[-1].reason == "rotated by the admin"


def test_remove_everywhere_leaves_every_room(
    auth: Authority, path: Path, devices: dict[str, IdentityKey]
) -> None:
    auth.add_room("night")
    auth.add_room("empty")
    for room in ("ops", "night"):
        approve(auth, room, "alice", devices["alice"])
        approve(auth, room, "dave", devices["dave"])
    approve(auth, "empty", "alice", devices["alice"])
    result = auth.remove_everywhere("dave")
    assert sorted(result) == ["night", "ops"]
    for room in ("night", "ops"):
        assert [name for name, _ in result[room]] == ["alice"]
        assert opened(auth, result[room], devices)["alice"].epoch == 2
        assert auth.epoch(room) == 2
    assert auth.epoch("empty") == 1
    loaded = Authority.load(path)
    assert [m.name for m in loaded.members("ops")] == ["alice"] and loaded.epoch("night") == 2
    before = path.read_bytes()
    assert auth.remove_everywhere("nobody") == {}
    assert path.read_bytes() == before


def test_loaded_authority_keeps_sealing_the_same_epoch(
    auth: Authority, path: Path, devices: dict[str, IdentityKey]
) -> None:
    approve(auth, "ops", "alice", devices["alice"])
    auth.rotate("ops")
    before = opened(auth, auth.bundles("ops"), devices)
    loaded = Authority.load(path)
    assert opened(loaded, loaded.bundles("ops"), devices) == before
    bundles = loaded.rotate("ops")
    assert opened(loaded, bundles, devices)["alice"].epoch == 3
    assert mode_of(path) == 0o600


# --- saving -----------------------------------------------------------------------------------


def test_a_failed_save_leaves_the_old_file_and_the_authority_as_they_were(
    auth: Authority, path: Path, devices: dict[str, IdentityKey], monkeypatch: pytest.MonkeyPatch
) -> None:
    approve(auth, "ops", "alice", devices["alice"])
    before = path.read_bytes()

    def no_space(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(AuthorityError) as caught:
        auth.rotate("ops")
    assert str(caught.value) == (
        f"{path}: could not save the key authority file (No space left on device); "
        "nothing was changed, the file is as it was"
    )
    with pytest.raises(AuthorityError):
        auth.remove("ops", "alice")
    with pytest.raises(AuthorityError):
        approve(auth, "ops", "bob", devices["bob"])
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # the temporary file is gone
    assert auth.epoch("ops") == 1 and [m.name for m in auth.members("ops")] == ["alice"]
    loaded = Authority.load(path)
    assert loaded.epoch("ops") == 1 and [m.name for m in loaded.members("ops")] == ["alice"]
    # and it goes on from where the file is: the next epoch is 2, not 4
    assert opened(auth, auth.rotate("ops"), devices)["alice"].epoch == 2
    assert Authority.load(path).epoch("ops") == 2


def test_a_write_error_midway_leaves_the_old_file(
    auth: Authority, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = path.read_bytes()
    real_write = os.write

    def half_then_fail(fd: int, data: bytes) -> int:
        if len(data) > 100:
            return real_write(fd, bytes(data)[:100])
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "write", half_then_fail)
    with pytest.raises(AuthorityError, match=r"\(Input/output error\); nothing was changed"):
        auth.add_room("night")
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert auth.rooms() == ["ops"] and Authority.load(path).rooms() == ["ops"]


def test_a_read_only_directory_fails_the_save_cleanly(auth: Authority, path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes into a read-only directory (the os.replace test covers root)")
    before = path.read_bytes()
    path.parent.chmod(0o500)
    try:
        with pytest.raises(AuthorityError, match="Permission denied"):
            auth.rotate("ops")
    finally:
        path.parent.chmod(0o700)
    assert path.read_bytes() == before and Authority.load(path).epoch("ops") == 1


def test_every_save_leaves_the_file_0600(
    auth: Authority, path: Path, devices: dict[str, IdentityKey], umask: Callable[[int], int]
) -> None:
    umask(0)
    approve(auth, "ops", "alice", devices["alice"])
    assert mode_of(path) == 0o600
    auth.rotate("ops")
    assert mode_of(path) == 0o600
    path.chmod(0o644)  # made readable by someone: the next save puts 0600 back
    auth.rotate("ops")
    assert mode_of(path) == 0o600
