"""The room server's registry, on real SQLite files."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pttd.errors import (
    AlreadyExists,
    InvalidArgument,
    InvalidName,
    NotFound,
    PairingError,
    RegistryError,
)
from pttd.server.registry import (
    CODE_ALPHABET,
    MAX_REFRESH_FAMILIES,
    SCHEMA_VERSION,
    DeviceInfo,
    Principal,
    Registry,
)
from pttd.wire.messages import REASON_EXPIRED_CODE, REASON_INVALID_CODE, REASON_USED_CODE


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "registry.sqlite3"


@pytest.fixture
def reg(db_path: Path) -> Iterator[Registry]:
    with Registry(db_path) as r:
        yield r


def pair(reg: Registry, name: str = "radio", rooms: tuple[str, ...] = ("ops",)) -> str:
    """Pair a device; return its auth token."""
    for room in rooms:
        if not reg.has_room(room):
            reg.add_room(room)
    code = reg.create_pair_code(rooms)
    return reg.redeem_pair_code(code.code, name).auth_token


# --- opening ---------------------------------------------------------------------------------


def test_new_file_gets_schema_wal_and_private_mode(db_path: Path) -> None:
    Registry(db_path).close()
    assert db_path.stat().st_mode & 0o777 == 0o600
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()
    with Registry(db_path) as again:  # reopening an existing registry is fine
        assert again.list_rooms() == []


def test_corrupt_file_gives_registry_error_naming_the_path(db_path: Path) -> None:
    db_path.write_bytes(os.urandom(8192))
    with pytest.raises(RegistryError, match=str(db_path)) as info:
        Registry(db_path)
    assert not isinstance(info.value, sqlite3.Error)


def test_foreign_sqlite_database_is_refused(db_path: Path) -> None:
    with sqlite3.connect(db_path) as raw:
        raw.execute("CREATE TABLE other (x)")
    raw.close()
    with pytest.raises(RegistryError, match="not a pttd registry"):
        Registry(db_path)


def test_newer_schema_is_refused(db_path: Path) -> None:
    Registry(db_path).close()
    with sqlite3.connect(db_path) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(RegistryError, match="newer"):
        Registry(db_path)


def test_closed_registry_raises_registry_error(db_path: Path) -> None:
    r = Registry(db_path)
    r.close()
    with pytest.raises(RegistryError):
        r.list_rooms()


# --- rooms -----------------------------------------------------------------------------------


def test_rooms_add_list_remove(reg: Registry) -> None:
    reg.add_room("ops")
    reg.add_room("Alpha team")
    reg.add_room("équipe ☂")
    assert reg.list_rooms() == sorted(["ops", "Alpha team", "équipe ☂"])
    assert reg.has_room("ops")
    assert not reg.has_room("nope")
    reg.remove_room("ops")
    assert reg.list_rooms() == ["Alpha team", "équipe ☂"]
    assert not reg.has_room("ops")


def test_room_duplicate_and_unknown(reg: Registry) -> None:
    reg.add_room("ops")
    with pytest.raises(AlreadyExists, match="ops"):
        reg.add_room("ops")
    with pytest.raises(NotFound, match="nope"):
        reg.remove_room("nope")


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "empty"),
        ("x" * 65, "longer than 64"),
        (" ops", "leading or trailing space"),
        ("ops ", "leading or trailing space"),
        ("ops\n", "control"),
        ("o\tps", "control"),
        ("o\x00ps", "control"),
    ],
)
def test_bad_room_names(reg: Registry, name: str, problem: str) -> None:
    with pytest.raises(InvalidName, match=problem):
        reg.add_room(name)
    with pytest.raises(ValueError, match=problem):  # also a ValueError
        reg.add_room(name)
    assert reg.list_rooms() == []


def test_room_name_of_64_characters_is_fine(reg: Registry) -> None:
    reg.add_room("x" * 64)
    assert reg.has_room("x" * 64)


def test_removing_a_room_takes_it_off_users_devices_and_codes(reg: Registry) -> None:
    for room in ("ops", "logistics"):
        reg.add_room(room)
    reg.add_user("ann", "pw", ["ops", "logistics"])
    token = pair(reg, "radio", ("ops", "logistics"))
    code = reg.create_pair_code(["ops", "logistics"])
    reg.remove_room("ops")
    assert reg.check_password("ann", "pw") == Principal("user", "ann", frozenset({"logistics"}))
    device = reg.check_device_token(token)
    assert device is not None
    assert device.rooms == {"logistics"}
    assert reg.list_devices()[0].rooms == ("logistics",)
    assert reg.redeem_pair_code(code.code, "radio2").rooms == ("logistics",)


# --- users -----------------------------------------------------------------------------------


def test_user_password_right_wrong_unknown(reg: Registry) -> None:
    reg.add_room("ops")
    reg.add_room("logistics")
    reg.add_user("ann", "s3cret", ["ops", "logistics", "ops"])
    assert reg.check_password("ann", "s3cret") == Principal(
        "user", "ann", frozenset({"ops", "logistics"})
    )
    assert reg.check_password("ann", "S3cret") is None
    assert reg.check_password("ann", "") is None
    assert reg.check_password("bob", "s3cret") is None


def test_add_user_errors(reg: Registry) -> None:
    reg.add_room("ops")
    reg.add_user("ann", "pw", ["ops"])
    with pytest.raises(AlreadyExists):
        reg.add_user("ann", "other", ["ops"])
    with pytest.raises(NotFound, match="nope"):
        reg.add_user("bob", "pw", ["ops", "nope"])
    assert reg.check_password("bob", "pw") is None  # nothing half-created
    with pytest.raises(InvalidArgument, match="empty"):
        reg.add_user("bob", "", ["ops"])
    with pytest.raises(InvalidName):
        reg.add_user(" bob", "pw", ["ops"])


def test_user_with_no_rooms(reg: Registry) -> None:
    reg.add_user("ann", "pw", [])
    assert reg.check_password("ann", "pw") == Principal("user", "ann", frozenset())


# --- pairing ---------------------------------------------------------------------------------


def test_pairing_full_cycle(reg: Registry) -> None:
    reg.add_room("ops")
    reg.add_room("logistics")
    before = time.time()
    code = reg.create_pair_code(["ops", "logistics"], ttl=600)
    assert code.rooms == ("logistics", "ops")
    assert before + 600 <= code.expires_at <= time.time() + 600
    groups = code.code.split("-")
    assert [len(g) for g in groups] == [4, 4, 4]
    assert all(c in CODE_ALPHABET for c in "".join(groups))
    assert code.code not in repr(code)

    pairing = reg.redeem_pair_code(code.code, "radio")
    assert pairing.device_name == "radio"
    assert pairing.rooms == ("logistics", "ops")
    assert len(pairing.auth_token) >= 43
    assert pairing.auth_token not in repr(pairing)

    principal = reg.check_device_token(pairing.auth_token)
    token_hash = hashlib.sha256(pairing.auth_token.encode()).hexdigest()
    assert principal == Principal("device", "radio", frozenset({"ops", "logistics"}), token_hash)
    assert reg.check_device_token("not a token") is None

    [info] = reg.list_devices()
    assert isinstance(info, DeviceInfo)
    assert info.name == "radio"
    assert info.rooms == ("logistics", "ops")
    assert not info.revoked
    assert info.paired_at >= before
    assert info.last_seen is not None
    assert info.last_seen >= info.paired_at
    assert not reg.is_revoked("radio")


def test_last_seen_is_none_until_first_logon(reg: Registry) -> None:
    token = pair(reg)
    assert reg.list_devices()[0].last_seen is None
    reg.check_device_token(token)
    assert reg.list_devices()[0].last_seen is not None


def test_pair_code_needs_known_rooms(reg: Registry) -> None:
    reg.add_room("ops")
    with pytest.raises(NotFound, match="nope"):
        reg.create_pair_code(["ops", "nope"])
    with pytest.raises(InvalidArgument, match="at least one room"):
        reg.create_pair_code([])


def test_codes_are_different(reg: Registry) -> None:
    reg.add_room("ops")
    codes = {reg.create_pair_code(["ops"]).code for _ in range(50)}
    assert len(codes) == 50


def test_wrong_code(reg: Registry) -> None:
    reg.add_room("ops")
    reg.create_pair_code(["ops"])
    for wrong in ("0000-0000-0000", "", "not a code at all", "x" * 1000):
        with pytest.raises(PairingError) as info:
            reg.redeem_pair_code(wrong, "radio")
        assert info.value.reason == REASON_INVALID_CODE
    assert reg.list_devices() == []


def test_expired_code(reg: Registry) -> None:
    reg.add_room("ops")
    code = reg.create_pair_code(["ops"], ttl=600, now=1000.0)
    with pytest.raises(PairingError) as info:
        reg.redeem_pair_code(code.code, "radio", now=1600.0)
    assert info.value.reason == REASON_EXPIRED_CODE
    assert isinstance(info.value, PermissionError)
    # Just before expiry, it still works.
    assert reg.redeem_pair_code(code.code, "radio", now=1599.0).device_name == "radio"


def test_used_code(reg: Registry) -> None:
    reg.add_room("ops")
    code = reg.create_pair_code(["ops"])
    reg.redeem_pair_code(code.code, "radio")
    with pytest.raises(PairingError) as info:
        reg.redeem_pair_code(code.code, "other")
    assert info.value.reason == REASON_USED_CODE
    assert [d.name for d in reg.list_devices()] == ["radio"]


def test_old_codes_are_purged_eventually(reg: Registry) -> None:
    reg.add_room("ops")
    code = reg.create_pair_code(["ops"], ttl=600, now=1000.0)
    with pytest.raises(PairingError) as info:
        reg.redeem_pair_code(code.code, "radio", now=1000.0 + 600 + 3600)
    assert info.value.reason == REASON_EXPIRED_CODE
    with pytest.raises(PairingError) as info:
        reg.redeem_pair_code(code.code, "radio", now=1000.0 + 600 + 2 * 86400)
    assert info.value.reason == REASON_INVALID_CODE


@pytest.mark.parametrize(
    "spell",
    [
        str.lower,
        lambda c: c.replace("-", ""),
        lambda c: c.replace("-", " "),
        lambda c: " " + c.lower().replace("-", "") + " ",
        lambda c: "-".join(c.replace("-", "")),
    ],
)
def test_code_normalisation(reg: Registry, spell: Callable[[str], str]) -> None:
    reg.add_room("ops")
    code = reg.create_pair_code(["ops"])
    typed = spell(code.code)
    assert typed != code.code
    assert reg.redeem_pair_code(typed, "radio").device_name == "radio"


def test_code_crockford_look_alikes(reg: Registry) -> None:
    reg.add_room("ops")
    # Draw codes until one has a 0 or a 1, then type it with O or l.
    for _ in range(200):
        code = reg.create_pair_code(["ops"]).code
        if "0" in code or "1" in code:
            break
    typed = code.replace("0", "o").replace("1", "l")
    assert reg.redeem_pair_code(typed, "radio").device_name == "radio"


def test_bad_device_name_does_not_use_up_the_code(reg: Registry) -> None:
    reg.add_room("ops")
    code = reg.create_pair_code(["ops"])
    with pytest.raises(InvalidName):
        reg.redeem_pair_code(code.code, "")
    assert reg.redeem_pair_code(code.code, "radio").device_name == "radio"


def test_concurrent_redeem_one_registry(reg: Registry) -> None:
    reg.add_room("ops")
    code = reg.create_pair_code(["ops"])
    assert _race(code.code, [reg, reg]) == (1, [REASON_USED_CODE])


def test_concurrent_redeem_two_connections(db_path: Path) -> None:
    with Registry(db_path) as a, Registry(db_path) as b:
        a.add_room("ops")
        code = a.create_pair_code(["ops"])
        assert _race(code.code, [a, b]) == (1, [REASON_USED_CODE])
        assert len(a.list_devices()) == 1


def _race(code: str, regs: list[Registry]) -> tuple[int, list[str]]:
    barrier = threading.Barrier(len(regs))
    successes: list[str] = []
    reasons: list[str] = []
    lock = threading.Lock()

    def redeem(r: Registry, i: int) -> None:
        barrier.wait()
        try:
            pairing = r.redeem_pair_code(code, f"radio{i}")
        except PairingError as exc:
            with lock:
                reasons.append(exc.reason)
        else:
            with lock:
                successes.append(pairing.device_name)

    threads = [threading.Thread(target=redeem, args=(r, i)) for i, r in enumerate(regs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return len(successes), reasons


def test_device_name_collision_gets_a_suffix(reg: Registry) -> None:
    tokens = [pair(reg, "radio") for _ in range(3)]
    assert [d.name for d in reg.list_devices()] == ["radio", "radio-2", "radio-3"]
    names = [reg.check_device_token(t) for t in tokens]
    assert [p.name for p in names if p] == ["radio", "radio-2", "radio-3"]


def test_suffixed_long_name_stays_within_limit(reg: Registry) -> None:
    pair(reg, "x" * 64)
    pair(reg, "x" * 64)
    assert [d.name for d in reg.list_devices()] == ["x" * 62 + "-2", "x" * 64]


def test_revoked_name_is_reused(reg: Registry) -> None:
    old = pair(reg, "radio")
    reg.revoke_device("radio")
    new = pair(reg, "radio")
    assert [(d.name, d.revoked) for d in reg.list_devices()] == [("radio", False)]
    assert reg.check_device_token(old) is None
    assert reg.check_device_token(new) is not None
    assert reg.revoked_devices() == set()


# --- revoke and unpair -----------------------------------------------------------------------


def test_revoke(reg: Registry) -> None:
    token = pair(reg, "radio")
    other = pair(reg, "other")
    principal = reg.check_device_token(token)
    assert principal is not None
    refresh = reg.issue_refresh_token(principal)
    assert reg.check_refresh_token(refresh) == principal

    reg.revoke_device("radio")
    assert reg.check_device_token(token) is None
    assert reg.check_refresh_token(refresh) is None
    assert reg.is_revoked("radio")
    assert not reg.is_revoked("other")
    assert reg.revoked_devices() == {"radio"}
    assert reg.check_device_token(other) is not None
    assert {d.name: d.revoked for d in reg.list_devices()} == {"radio": True, "other": False}
    with pytest.raises(NotFound):
        reg.issue_refresh_token(principal)
    with pytest.raises(NotFound, match="nope"):
        reg.revoke_device("nope")


def test_unpair(reg: Registry) -> None:
    token = pair(reg, "radio")
    principal = reg.check_device_token(token)
    assert principal is not None
    refresh = reg.issue_refresh_token(principal)
    reg.unpair_device("radio")
    assert reg.list_devices() == []
    assert reg.check_device_token(token) is None
    assert reg.check_refresh_token(refresh) is None
    assert reg.is_revoked("radio")  # gone counts as no longer good
    assert reg.revoked_devices() == set()
    with pytest.raises(NotFound):
        reg.unpair_device("radio")


# --- refresh tokens --------------------------------------------------------------------------


def test_refresh_token_valid_and_expired(reg: Registry) -> None:
    reg.add_room("ops")
    reg.add_user("ann", "pw", ["ops"])
    ann = reg.check_password("ann", "pw")
    assert ann is not None
    token = reg.issue_refresh_token(ann, ttl=100, now=1000.0)
    assert reg.check_refresh_token(token, now=1099.0) == ann
    assert reg.check_refresh_token(token, now=1100.0) is None
    assert reg.check_refresh_token("nope") is None
    short = reg.issue_refresh_token(ann, ttl=-1)  # with the real clock
    assert reg.check_refresh_token(short) is None
    long = reg.issue_refresh_token(ann)
    assert reg.check_refresh_token(long) == ann
    assert long != token


def test_refresh_token_rooms_follow_owner(reg: Registry) -> None:
    for room in ("ops", "logistics"):
        reg.add_room(room)
    reg.add_user("ann", "pw", ["ops", "logistics"])
    ann = reg.check_password("ann", "pw")
    assert ann is not None
    user_token = reg.issue_refresh_token(ann)
    device = reg.check_device_token(pair(reg, "radio", ("ops", "logistics")))
    assert device is not None
    device_token = reg.issue_refresh_token(device)

    reg.remove_room("ops")
    assert reg.check_refresh_token(user_token) == Principal("user", "ann", frozenset({"logistics"}))
    assert reg.check_refresh_token(device_token) == Principal(
        "device", "radio", frozenset({"logistics"}), device.credential
    )
    assert device.credential  # the device's token, by its hash


def test_current_follows_the_credential_not_the_name(reg: Registry) -> None:
    """What the server checks live connections against: a device revoked and paired again
    under its name has a new credential; the old one is no longer good."""
    old = reg.check_device_token(pair(reg, "radio", ("ops", "logistics")))
    reg.add_user("ann", "pw", ["logistics"])
    ann = reg.check_password("ann", "pw")
    assert ann is not None and old is not None
    assert reg.current([ann, old]) == {ann: ann, old: old}
    reg.remove_room("ops")
    assert reg.current([old])[old] == Principal(
        "device", "radio", frozenset({"logistics"}), old.credential
    )
    reg.revoke_device("radio")
    assert reg.current([old]) == {old: None}
    new = reg.check_device_token(pair(reg, "radio", ("logistics",)))
    assert new is not None and new.name == "radio" and new.credential != old.credential
    assert reg.current([old, new]) == {old: None, new: new}


def test_refresh_token_for_unknown_owner(reg: Registry) -> None:
    with pytest.raises(NotFound):
        reg.issue_refresh_token(Principal("user", "ghost", frozenset()))
    with pytest.raises(NotFound):
        reg.issue_refresh_token(Principal("device", "ghost", frozenset()))


# --- refresh tokens: rotation, reuse, bound -----------------------------------------------------


def logged_on(reg: Registry, name: str = "ann") -> Principal:
    """A user's principal as a password logon gives it (made once)."""
    if not reg.has_room("ops"):
        reg.add_room("ops")
    if name not in {u.name for u in reg.list_users()}:
        reg.add_user(name, "pw", ["ops"])
    principal = reg.check_password(name, "pw")
    assert principal is not None
    return principal


def refresh_logon(reg: Registry, token: str) -> str | None:
    """A logon with a refresh token, as the server makes it: check, then issue."""
    principal = reg.check_refresh_token(token)
    return None if principal is None else reg.issue_refresh_token(principal)


def refresh_rows(db_path: Path) -> int:
    with contextlib.closing(sqlite3.connect(db_path)) as raw:
        count: int = raw.execute("SELECT count(*) FROM refresh_tokens").fetchone()[0]
    return count


def test_a_refresh_logon_uses_the_token_up_and_hands_its_successor(
    reg: Registry, db_path: Path
) -> None:
    first = reg.issue_refresh_token(logged_on(reg))
    assert first is not None
    second = refresh_logon(reg, first)
    third = refresh_logon(reg, second or "")
    assert second and third and len({first, second, third}) == 3
    assert first.split(".")[0] == second.split(".")[0] == third.split(".")[0]  # one family
    assert refresh_rows(db_path) == 1  # used tokens leave nothing behind
    assert reg.check_refresh_token(third) == Principal("user", "ann", frozenset({"ops"}))


def test_a_used_token_presented_again_revokes_its_family(
    reg: Registry, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ann = logged_on(reg)
    stolen = reg.issue_refresh_token(ann)
    other = reg.issue_refresh_token(ann)  # another client of ann's: another family
    assert stolen and other
    current = refresh_logon(reg, stolen)  # the thief (or the owner) uses it first
    assert current
    with caplog.at_level("WARNING"):
        assert reg.check_refresh_token(stolen) is None  # the other one comes back with it
    assert reg.check_refresh_token(current) is None  # the whole family is revoked
    assert refresh_logon(reg, other)  # ann's other client is not touched
    assert refresh_rows(db_path) == 1
    assert "used refresh token of user ann was presented again" in caplog.text
    assert stolen not in caplog.text and current not in caplog.text


def test_two_logons_racing_with_one_token_revoke_its_family(reg: Registry) -> None:
    token = reg.issue_refresh_token(logged_on(reg))
    assert token
    first, second = reg.check_refresh_token(token), reg.check_refresh_token(token)
    assert first is not None and second is not None  # both checked before either completes
    successor = reg.issue_refresh_token(first)
    assert successor
    assert reg.issue_refresh_token(second) is None  # the second is a reuse: no token …
    assert reg.check_refresh_token(successor) is None  # … and the family is gone


def test_a_refresh_logon_that_does_not_complete_leaves_the_token_good(reg: Registry) -> None:
    token = reg.issue_refresh_token(logged_on(reg))
    assert token and reg.check_refresh_token(token) is not None  # e.g. a room not granted
    assert refresh_logon(reg, token)


def test_forged_and_expired_tokens_of_a_family(reg: Registry) -> None:
    ann = logged_on(reg)
    token = reg.issue_refresh_token(ann, ttl=100, now=1000.0)
    assert token
    family = token.split(".")[0]
    assert reg.check_refresh_token(f"{family}.", now=1200.0) is None  # expired: no verdict
    assert reg.check_refresh_token("x.y") is None and reg.check_refresh_token("") is None
    assert reg.check_refresh_token(token, now=1050.0) is not None
    assert reg.check_refresh_token(f"{family}.guess", now=1050.0) is None  # a reuse …
    assert reg.check_refresh_token(token, now=1050.0) is None  # … revokes the family


def test_many_logons_leave_a_bounded_number_of_rows(reg: Registry, db_path: Path) -> None:
    """What a client hammering logons did to schema 1 (a row per logon, kept 7 days)."""
    ann = logged_on(reg)
    radio = reg.check_device_token(pair(reg, "radio"))
    assert radio is not None
    chain = reg.issue_refresh_token(ann)
    before = refresh_rows(db_path)
    for _ in range(250):
        assert reg.issue_refresh_token(ann)  # password logons: a new family each
        assert reg.issue_refresh_token(radio)  # device-token logons too
        chain = refresh_logon(reg, chain or "")  # refresh logons: rotation in place
        assert chain
    after = refresh_rows(db_path)
    assert (before, after) == (1, 2 * MAX_REFRESH_FAMILIES)
    assert reg.check_refresh_token(chain) is not None  # the most recently used stays
    assert os.path.getsize(db_path) < 200_000


def test_the_least_recently_used_family_goes_first(reg: Registry) -> None:
    ann = logged_on(reg)
    tokens = [reg.issue_refresh_token(ann, now=1000.0 + i) for i in range(MAX_REFRESH_FAMILIES)]
    used = reg.check_refresh_token(tokens[0] or "", now=2000.0)
    assert used is not None
    oldest = reg.issue_refresh_token(used, now=2000.0)
    assert oldest  # used last: now the most recent
    assert reg.issue_refresh_token(ann, now=3000.0)  # one too many: tokens[1] goes
    assert reg.check_refresh_token(tokens[1] or "", now=3000.0) is None
    assert reg.check_refresh_token(oldest, now=3000.0) is not None


# --- names that look alike ---------------------------------------------------------------------


def test_a_device_cannot_take_a_users_name_or_a_look_alike(reg: Registry) -> None:
    reg.add_room("ops")
    reg.add_user("alice", "pw", ["ops"])
    for wanted in ("alice", "Alice", "\u0430lice", "ａｌｉｃｅ", "ALIC\u0395"):
        pair(reg, wanted)
    names = sorted(d.name for d in reg.list_devices())
    assert names == sorted(
        ["alice-2", "Alice-3", "\u0430lice-4", "ａｌｉｃｅ-5", "ALIC\u0395-6"]
    ), names
    assert reg.check_password("alice", "pw") is not None  # the user is untouched


def test_user_add_refuses_a_look_alike_of_a_user_or_an_active_device(reg: Registry) -> None:
    reg.add_room("ops")
    reg.add_user("alice", "pw", ["ops"])
    pair(reg, "truck-7")
    with pytest.raises(AlreadyExists, match=r"^user 'alice' already exists$"):
        reg.add_user("alice", "pw", ["ops"])
    with pytest.raises(AlreadyExists, match="looks like user 'alice'"):
        reg.add_user("\u0430lice", "pw", ["ops"])  # Cyrillic а
    with pytest.raises(AlreadyExists, match="looks like device 'truck-7'"):
        reg.add_user("TRUCK-7", "pw", ["ops"])
    reg.revoke_device("truck-7")  # a revoked device's name is free
    reg.add_user("TRUCK-7", "pw", ["ops"])
    assert [u.name for u in reg.list_users()] == ["TRUCK-7", "alice"]
    pair(reg, "truck-7")  # … and the user holds it now
    assert [(d.name, d.revoked) for d in reg.list_devices()] == [
        ("truck-7", True),
        ("truck-7-2", False),
    ]


def test_devices_are_unique_after_folding_too(reg: Registry) -> None:
    for wanted in ("gate-1", "GATE-1", "gate-l", "gate-\uff11"):  # the last: a full-width 1
        pair(reg, wanted)
    assert sorted(d.name for d in reg.list_devices()) == sorted(
        ["gate-1", "GATE-1-2", "gate-l-3", "gate-\uff11-4"]
    )


# --- emergency grants ------------------------------------------------------------------------


def test_emergency_is_granted_to_users_and_devices_and_followed_live(reg: Registry) -> None:
    reg.add_room("ops")
    reg.add_user("ann", "pw", ["ops"], emergency=True)
    reg.add_user("bob", "pw", ["ops"])
    ann, bob = reg.check_password("ann", "pw"), reg.check_password("bob", "pw")
    assert ann is not None and ann.emergency and bob is not None and not bob.emergency
    code = reg.create_pair_code(["ops"], emergency=True)
    assert code.emergency and "emergency=True" in repr(code) and code.code not in repr(code)
    sos = reg.check_device_token(reg.redeem_pair_code(code.code, "sos").auth_token)
    plain = reg.check_device_token(pair(reg, "plain"))
    assert sos is not None and sos.emergency and plain is not None and not plain.emergency
    assert [(d.name, d.emergency) for d in reg.list_devices()] == [("plain", False), ("sos", True)]
    refresh = reg.issue_refresh_token(ann)
    assert refresh and (reg.check_refresh_token(refresh) or bob).emergency

    reg.set_emergency("user", "bob", True)
    reg.set_emergency("device", "sos", False)
    now = reg.current([ann, bob, sos, plain])
    assert [x.emergency if x else None for x in now.values()] == [True, True, False, False]
    assert [(u.name, u.emergency) for u in reg.list_users()] == [("ann", True), ("bob", True)]
    with pytest.raises(NotFound, match="no device named 'ghost'"):
        reg.set_emergency("device", "ghost", True)


# --- several connections and processes -------------------------------------------------------


def test_data_version_changes_on_another_connections_commit(db_path: Path) -> None:
    with Registry(db_path) as server, Registry(db_path) as admin:
        v0 = server.data_version()
        assert server.data_version() == v0  # stable while nothing happens
        admin.add_room("ops")
        v1 = server.data_version()
        assert v1 != v0
        token = pair(admin, "radio")
        assert server.check_device_token(token) is not None
        v2 = server.data_version()
        admin.revoke_device("radio")
        assert server.data_version() != v2
        assert server.revoked_devices() == {"radio"}


def test_two_registries_see_each_others_changes(db_path: Path) -> None:
    with Registry(db_path) as a, Registry(db_path) as b:
        a.add_room("ops")
        assert b.list_rooms() == ["ops"]
        b.add_user("ann", "pw", ["ops"])
        assert a.check_password("ann", "pw") is not None
        with pytest.raises(AlreadyExists):
            b.add_room("ops")
        token = pair(b, "radio")
        assert a.check_device_token(token) is not None
        a.revoke_device("radio")
        assert b.is_revoked("radio")
        assert b.check_device_token(token) is None


def test_threads_share_one_registry(reg: Registry) -> None:
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for j in range(20):
                reg.add_room(f"room-{i}-{j}")
                reg.list_rooms()
                reg.data_version()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert errors == []
    assert len(reg.list_rooms()) == 80


# --- secrets at rest -------------------------------------------------------------------------


def test_db_dump_holds_no_clear_secret(db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    password = "correct horse battery staple 42"
    with Registry(db_path) as reg:
        reg.add_room("ops")
        reg.add_user("ann", password, ["ops"])
        unused = reg.create_pair_code(["ops"]).code
        used = reg.create_pair_code(["ops"]).code
        pairing = reg.redeem_pair_code(used.lower(), "radio")
        device = reg.check_device_token(pairing.auth_token)
        assert device is not None
        device_refresh = reg.issue_refresh_token(device)
        ann = reg.check_password("ann", password)
        assert ann is not None
        user_refresh = reg.issue_refresh_token(ann)

        secrets_ = [password, pairing.auth_token, device_refresh, user_refresh]
        for code in (unused, used):
            bare = code.replace("-", "")
            secrets_ += [code, code.lower(), bare, bare.lower(), code.replace("-", " ")]
        secrets_ += [s[: len(s) // 2] for s in (pairing.auth_token, device_refresh, user_refresh)]

        # The raw bytes while the server runs (recent writes live in the WAL)...
        raw = b"".join(
            p.read_bytes()
            for p in (db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm"))
            if p.exists()
        )
        # ... and a logical dump.
        with sqlite3.connect(db_path) as dump_conn:
            dump = "\n".join(dump_conn.iterdump())
        dump_conn.close()
    after_close = db_path.read_bytes()  # checkpointed into the main file

    assert "ann" in dump
    assert "radio" in dump  # the dump is real
    for secret in secrets_:
        for encoding in ("utf-8", "utf-16-le", "utf-16-be"):
            assert secret.encode(encoding) not in raw, secret
            assert secret.encode(encoding) not in after_close, secret
        assert secret not in dump, secret
        assert secret.lower() not in dump.lower(), secret
        assert secret not in caplog.text, secret
    assert "scrypt$16384$8$1$" in dump  # the KDF parameters travel with the hash
