"""The room server's registry, on real SQLite files."""

from __future__ import annotations

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
