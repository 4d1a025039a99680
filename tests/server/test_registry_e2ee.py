"""The registry as the key authority's mailbox (schema 3), on real SQLite files: encrypted rooms,
identity keys, sealed room keys, the authority's public key, and a schema-2 file carried over."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pttd import kdf
from pttd.errors import InvalidArgument, NotFound
from pttd.server.registry import SCHEMA_VERSION, MemberInfo, Registry
from pttd.server.session import Principal
from pttd.wire.messages import MAX_ROOM_KEY


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "registry.sqlite3"


@pytest.fixture
def reg(db_path: Path) -> Iterator[Registry]:
    """ops (clear) and board (encrypted); ann and bob in both, carol in ops; the device van in
    board."""
    with Registry(db_path) as r:
        r.add_room("ops")
        r.add_room("board", encrypted=True)
        r.add_user("ann", "pw", ["ops", "board"])
        r.add_user("bob", "pw", ["ops", "board"])
        r.add_user("carol", "pw", ["ops"])
        code = r.create_pair_code(["board"])
        r.redeem_pair_code(code.code, "van")
        yield r


def user(reg: Registry, name: str) -> Principal:
    principal = reg.check_password(name, "pw")
    assert principal is not None
    return principal


def device(reg: Registry, name: str) -> Principal:
    with contextlib.closing(sqlite3.connect(reg.path)) as db:
        row = db.execute("SELECT token_hash FROM devices WHERE name = ?", (name,)).fetchone()
    current = reg.current([Principal("device", name, frozenset(), credential=row[0])])
    principal = next(iter(current.values()))
    assert principal is not None
    return principal


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


# --- rooms -------------------------------------------------------------------------------------


def test_encrypted_rooms_are_marked_and_principals_carry_their_own(reg: Registry) -> None:
    assert reg.list_rooms() == ["board", "ops"]  # listed as ever
    assert reg.encrypted_rooms() == {"board"}
    assert user(reg, "ann").encrypted == frozenset({"board"})
    assert user(reg, "carol").encrypted == frozenset()  # board is not hers
    assert device(reg, "van").encrypted == frozenset({"board"})
    reg.set_encrypted("ops", True)
    assert reg.encrypted_rooms() == {"board", "ops"}
    assert user(reg, "carol").encrypted == frozenset({"ops"})
    reg.set_encrypted("board", False)
    reg.set_encrypted("board", False)  # again: nothing changes
    assert reg.encrypted_rooms() == {"ops"}
    with pytest.raises(NotFound, match="no room named 'nowhere'"):
        reg.set_encrypted("nowhere", True)


# --- identity keys -----------------------------------------------------------------------------


def test_set_identity_key_says_whether_it_is_new_and_members_show_it(
    reg: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    assert [(m.kind, m.name, m.identity_key) for m in reg.members()] == [
        ("user", "ann", None),
        ("user", "bob", None),
        ("user", "carol", None),
        ("device", "van", None),
    ]
    with caplog.at_level(logging.INFO, logger="pttd.server.registry"):
        assert reg.set_identity_key("user", "ann", "a2V5LTE") is True  # new
        assert reg.set_identity_key("user", "ann", "a2V5LTE") is False  # the same
        assert reg.set_identity_key("user", "ann", "a2V5LTI") is True  # changed
        assert reg.set_identity_key("device", "van", "dmFuLWtleQ") is True
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        "user ann has a new identity key",
        "user ann has a changed identity key",
        "device van has a new identity key",
    ]
    assert reg.members() == [
        MemberInfo("user", "ann", ("board", "ops"), "a2V5LTI"),
        MemberInfo("user", "bob", ("board", "ops"), None),
        MemberInfo("user", "carol", ("ops",), None),
        MemberInfo("device", "van", ("board",), "dmFuLWtleQ"),
    ]
    with pytest.raises(NotFound, match="no user named 'ghost'"):
        reg.set_identity_key("user", "ghost", "a2V5")
    with pytest.raises(NotFound, match="no device named 'ann'"):  # kinds are not mixed up
        reg.set_identity_key("device", "ann", "a2V5")
    # An identity key is the authority's business, not the server's: principals do not change.
    ann = user(reg, "ann")
    reg.set_identity_key("user", "ann", "a2V5LTM")
    assert reg.current([ann]) == {ann: ann}


def test_a_changed_identity_key_drops_the_room_keys_sealed_for_the_earlier_one(
    reg: Registry,
) -> None:
    reg.set_identity_key("user", "ann", "a2V5LTE")
    reg.set_identity_key("user", "bob", "Ym9iLTE")
    reg.publish_room_keys("board", [("ann", 1, "YW5uLTE"), ("bob", 1, "Ym9iLTE")])
    assert reg.set_identity_key("user", "ann", "a2V5LTE") is False  # the same key: kept
    assert reg.room_key_epochs("board") == {"ann": 1, "bob": 1}
    assert reg.set_identity_key("user", "ann", "a2V5LTI") is True  # a browser's new key
    assert reg.room_key_epochs("board") == {"bob": 1}
    assert dict(user(reg, "ann").room_keys) == {}
    assert dict(user(reg, "bob").room_keys) == {"board": "Ym9iLTE"}


def test_members_leave_out_revoked_devices_and_a_repaired_name_starts_without_a_key(
    reg: Registry,
) -> None:
    reg.set_identity_key("device", "van", "b2xkLXZhbg")
    reg.revoke_device("van")
    assert [m.name for m in reg.members()] == ["ann", "bob", "carol"]
    code = reg.create_pair_code(["ops"])
    assert reg.redeem_pair_code(code.code, "van").device_name == "van"
    assert reg.members()[-1] == MemberInfo("device", "van", ("ops",), None)


# --- room keys ---------------------------------------------------------------------------------


def test_published_keys_replace_a_members_older_one_and_a_rotation_replaces_them_all(
    reg: Registry,
) -> None:
    reg.publish_room_keys("board", [("ann", 1, "YW5uLTE"), ("bob", 1, "Ym9iLTE")])
    assert reg.room_key_epochs("board") == {"ann": 1, "bob": 1}
    assert user(reg, "ann").room_keys == (("board", "YW5uLTE"),)
    reg.publish_room_keys("board", [("ann", 2, "YW5uLTI")])  # ann approved again: hers only
    assert reg.room_key_epochs("board") == {"ann": 2, "bob": 1}
    assert (user(reg, "ann").room_keys, user(reg, "bob").room_keys) == (
        (("board", "YW5uLTI"),),
        (("board", "Ym9iLTE"),),
    )
    reg.publish_room_keys("board", [("ann", 3, "YW5uLTM"), ("van", 3, "dmFuLTM")], only=True)
    assert reg.room_key_epochs("board") == {"ann": 3, "van": 3}  # bob is out of the rotation
    assert user(reg, "bob").room_keys == ()
    assert device(reg, "van").room_keys == (("board", "dmFuLTM"),)
    reg.publish_room_keys("board", [], only=True)  # nobody holds the room's key any more
    assert reg.room_key_epochs("board") == {}
    with pytest.raises(NotFound, match="no room named 'nowhere'"):
        reg.publish_room_keys("nowhere", [("ann", 1, "YQ")])
    assert reg.room_key_epochs("nowhere") == {}


def test_a_principal_holds_only_its_keys_for_its_encrypted_rooms(reg: Registry) -> None:
    reg.add_room("yard", encrypted=True)
    reg.publish_room_keys("board", [("ann", 1, "YW5u"), ("carol", 1, "Y2Fyb2w")])
    reg.publish_room_keys("ops", [("ann", 1, "b3Bz")])  # ops is clear
    reg.publish_room_keys("yard", [("ann", 1, "eWFyZA")])  # ann is not in yard
    ann, carol = user(reg, "ann"), user(reg, "carol")
    assert ann.room_keys == (("board", "YW5u"),)
    assert ann.encrypted == frozenset({"board"})
    assert carol.room_keys == () and carol.encrypted == frozenset()  # not in board
    assert user(reg, "bob").room_keys == ()  # nothing sealed for bob
    # Every way to log on hands out the same principal.
    refresh = reg.issue_refresh_token(ann)
    assert refresh is not None
    assert reg.check_refresh_token(refresh) == ann
    code = reg.create_pair_code(["board", "ops"])
    token = reg.redeem_pair_code(code.code, "truck").auth_token
    reg.publish_room_keys("board", [("truck", 4, "dHJ1Y2s")])
    truck = reg.check_device_token(token)
    assert truck is not None
    assert (truck.encrypted, truck.room_keys) == (frozenset({"board"}), (("board", "dHJ1Y2s"),))


def test_a_room_made_clear_loses_its_keys_and_made_encrypted_again_has_none(
    reg: Registry,
) -> None:
    reg.add_room("yard", encrypted=True)
    reg.publish_room_keys("board", [("ann", 1, "YW5u"), ("bob", 1, "Ym9i")])
    reg.publish_room_keys("yard", [("ann", 1, "eWFyZA")])
    reg.set_encrypted("board", False)
    assert reg.room_key_epochs("board") == {}
    assert reg.room_key_epochs("yard") == {"ann": 1}  # other rooms keep theirs
    assert user(reg, "ann").room_keys == () and user(reg, "ann").encrypted == frozenset()
    reg.set_encrypted("board", True)
    assert reg.room_key_epochs("board") == {}
    assert user(reg, "ann").room_keys == () and user(reg, "ann").encrypted == {"board"}


def test_a_removed_room_takes_its_keys_along(reg: Registry) -> None:
    reg.publish_room_keys("board", [("ann", 1, "YW5u")])
    reg.remove_room("board")
    with contextlib.closing(sqlite3.connect(reg.path)) as db:
        assert db.execute("SELECT count(*) FROM room_keys").fetchone()[0] == 0


def test_revoking_or_unpairing_a_device_drops_its_keys_and_only_its(reg: Registry) -> None:
    reg.add_room("yard", encrypted=True)
    for name in ("truck", "gate"):
        reg.redeem_pair_code(reg.create_pair_code(["board", "yard"]).code, name)
    reg.publish_room_keys("board", [("van", 1, "dmFu"), ("truck", 1, "dHJ1"), ("ann", 1, "YW5u")])
    reg.publish_room_keys("yard", [("truck", 1, "eXQ"), ("gate", 1, "eWc")])
    reg.revoke_device("truck")
    assert reg.room_key_epochs("board") == {"van": 1, "ann": 1}
    assert reg.room_key_epochs("yard") == {"gate": 1}
    reg.unpair_device("gate")
    assert reg.room_key_epochs("yard") == {}
    assert reg.room_key_epochs("board") == {"van": 1, "ann": 1}


def test_revoking_a_revoked_device_again_spares_a_user_who_took_its_name(reg: Registry) -> None:
    """A revoked device's name is free: a user may take it, and the room keys under that name
    are then the user's. An admin who revokes the old device a second time must not take them."""
    reg.revoke_device("van")
    reg.add_user("van", "pw", ["board"])
    reg.publish_room_keys("board", [("van", 2, "dXNlci12YW4")])
    reg.revoke_device("van")  # `pttd server device revoke van`, once more
    assert reg.room_key_epochs("board") == {"van": 2}
    assert user(reg, "van").room_keys == (("board", "dXNlci12YW4"),)
    with pytest.raises(NotFound, match="no device named 'ghost'"):
        reg.revoke_device("ghost")


@pytest.mark.parametrize(
    ("sealed", "why"),
    [
        ("", "empty"),
        ("not base64url!", "base64url"),
        ("a+b/c", "base64url"),
        ("A" * (MAX_ROOM_KEY + 1), f"longer than {MAX_ROOM_KEY}"),
    ],
)
def test_a_sealed_key_the_wire_cannot_carry_is_refused_and_nothing_is_kept(
    reg: Registry, sealed: str, why: str
) -> None:
    """An ``on_room_key`` with it would be refused by every client as malformed: the member
    would never get its key, and the authority would not know."""
    reg.publish_room_keys("board", [("bob", 1, "Ym9i")])
    with pytest.raises(InvalidArgument, match=why):
        reg.publish_room_keys("board", [("ann", 2, "YW5u"), ("van", 2, sealed)], only=True)
    assert reg.room_key_epochs("board") == {"bob": 1}
    reg.publish_room_keys("board", [("ann", 2, "A" * MAX_ROOM_KEY)])  # the longest that goes
    assert reg.room_key_epochs("board") == {"bob": 1, "ann": 2}


# --- what the server follows live ----------------------------------------------------------------


def test_current_reports_changes_of_encrypted_rooms_and_room_keys(db_path: Path) -> None:
    with Registry(db_path) as server, Registry(db_path) as admin:
        admin.add_room("ops")
        admin.add_room("board", encrypted=True)
        admin.add_user("ann", "pw", ["ops", "board"])
        admin.redeem_pair_code(admin.create_pair_code(["ops"]).code, "van")
        ann, van = user(server, "ann"), device(server, "van")
        assert server.current([ann, van]) == {ann: ann, van: van}
        version = server.data_version()
        admin.publish_room_keys("board", [("ann", 1, "YW5uLTE")])
        assert server.data_version() != version  # the server's cue to look
        now = server.current([ann, van])
        assert now[van] is van
        new = now[ann]
        assert new is not None and new != ann
        assert (new.encrypted, new.room_keys) == (frozenset({"board"}), (("board", "YW5uLTE"),))
        assert (new.kind, new.name, new.rooms, new.credential) == (
            "user",
            "ann",
            frozenset({"ops", "board"}),
            "",
        )
        assert server.current([new]) == {new: new}
        admin.publish_room_keys("board", [("ann", 1, "YW5uLTE")])  # the very same key again
        assert server.current([new]) == {new: new}
        admin.set_encrypted("ops", True)
        turned = server.current([new, van])
        ann_now, van_now = turned[new], turned[van]
        assert ann_now == Principal(
            "user",
            "ann",
            frozenset({"ops", "board"}),
            encrypted=frozenset({"ops", "board"}),
            room_keys=(("board", "YW5uLTE"),),
        )
        assert van_now is not None and van_now.encrypted == frozenset({"ops"})
        assert van_now.credential == van.credential
        admin.set_encrypted("board", False)
        clear = server.current([ann_now])[ann_now]
        assert clear is not None
        assert (clear.encrypted, clear.room_keys) == (frozenset({"ops"}), ())


# --- the authority's public key ------------------------------------------------------------------


def test_the_authority_key_is_a_fact_kept_across_processes(db_path: Path) -> None:
    with Registry(db_path) as reg:
        assert reg.authority_key() is None
        reg.set_authority_key("YXV0aG9yaXR5LTE")
        reg.set_authority_key("YXV0aG9yaXR5LTI")  # a new authority replaces the old
    with Registry(db_path) as again, contextlib.closing(sqlite3.connect(db_path)) as db:
        assert again.authority_key() == "YXV0aG9yaXR5LTI"
        assert db.execute("SELECT name, value FROM facts").fetchall() == [
            ("authority", "YXV0aG9yaXR5LTI")
        ]


# --- nothing secret at rest ----------------------------------------------------------------------


def encodings(secret: bytes) -> list[bytes]:
    """The ways a key is usually written down."""
    return [
        secret,
        secret.hex().encode(),
        secret.hex().upper().encode(),
        base64.b64encode(secret),
        base64.b64encode(secret).rstrip(b"="),
        base64.urlsafe_b64encode(secret),
        base64.urlsafe_b64encode(secret).rstrip(b"="),
    ]


def test_the_registry_holds_public_keys_and_sealed_blobs_only(db_path: Path) -> None:
    """The authority seals a room key for ann (X25519, HKDF, AES-GCM, as a stand-in for the
    real sealing); the registry is given ann's and the authority's public keys and the sealed
    blob, and holds exactly those: no private key, no key-encryption key, no room key."""
    member, authority = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    raw = serialization.Encoding.Raw
    public, private = serialization.PublicFormat.Raw, serialization.PrivateFormat.Raw
    member_public = member.public_key().public_bytes(raw, public)
    authority_public = authority.public_key().public_bytes(raw, public)
    none = serialization.NoEncryption()
    kek = HKDF(hashes.SHA256(), 32, None, b"pttd test seal").derive(
        authority.exchange(member.public_key())
    )
    room_key, nonce = os.urandom(16), os.urandom(12)
    sealed = b64url(nonce + AESGCM(kek).encrypt(nonce, room_key, b"board"))
    secrets_ = [
        member.private_bytes(raw, private, none),
        authority.private_bytes(raw, private, none),
        kek,
        room_key,
    ]
    with Registry(db_path) as reg:
        reg.add_room("board", encrypted=True)
        reg.add_user("ann", "pw", ["board"])
        reg.set_identity_key("user", "ann", b64url(member_public))
        reg.set_authority_key(b64url(authority_public))
        reg.publish_room_keys("board", [("ann", 1, sealed)])
        on_disk = b"".join(
            p.read_bytes()
            for p in (db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm"))
            if p.exists()
        )
        with contextlib.closing(sqlite3.connect(db_path)) as db:
            dump = "\n".join(db.iterdump()).encode()
            kept = {
                "identity_key": db.execute("SELECT identity_key FROM users").fetchall(),
                "sealed": db.execute("SELECT sealed FROM room_keys").fetchall(),
                "facts": db.execute("SELECT value FROM facts").fetchall(),
            }
    after_close = db_path.read_bytes()
    assert kept == {
        "identity_key": [(b64url(member_public),)],
        "sealed": [(sealed,)],
        "facts": [(b64url(authority_public),)],
    }
    assert sealed.encode() in dump  # the dump is real
    for secret in secrets_:
        for written in encodings(secret):
            for where in (on_disk, dump, after_close):
                assert written not in where


# --- schema 2 ------------------------------------------------------------------------------------

# The schema pttd wrote as version 2, as it was (before end-to-end encryption).
SCHEMA_2 = """
CREATE TABLE rooms (
    name TEXT PRIMARY KEY
);
CREATE TABLE users (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created_at REAL NOT NULL,
    name_key TEXT NOT NULL,
    emergency INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX users_name_key ON users(name_key);
CREATE TABLE user_rooms (
    user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    room TEXT NOT NULL REFERENCES rooms(name) ON DELETE CASCADE,
    PRIMARY KEY (user, room)
);
CREATE TABLE devices (
    name TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    paired_at REAL NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0,
    last_seen REAL,
    name_key TEXT NOT NULL,
    emergency INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX devices_name_key ON devices(name_key);
CREATE TABLE device_rooms (
    device TEXT NOT NULL REFERENCES devices(name) ON DELETE CASCADE,
    room TEXT NOT NULL REFERENCES rooms(name) ON DELETE CASCADE,
    PRIMARY KEY (device, room)
);
CREATE TABLE refresh_tokens (
    family_hash TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    user TEXT REFERENCES users(name) ON DELETE CASCADE,
    device TEXT REFERENCES devices(name) ON DELETE CASCADE,
    issued_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    CHECK ((user IS NULL) <> (device IS NULL))
);
CREATE INDEX refresh_tokens_user ON refresh_tokens(user);
CREATE INDEX refresh_tokens_device ON refresh_tokens(device);
CREATE INDEX refresh_tokens_expiry ON refresh_tokens(expires_at);
CREATE TABLE pair_codes (
    code_hash TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    used_at REAL,
    device TEXT,
    emergency INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX pair_codes_expiry ON pair_codes(expires_at);
CREATE TABLE pair_code_rooms (
    code_hash TEXT NOT NULL REFERENCES pair_codes(code_hash) ON DELETE CASCADE,
    room TEXT NOT NULL REFERENCES rooms(name) ON DELETE CASCADE,
    PRIMARY KEY (code_hash, room)
);
"""


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def make_schema_2(path: Path, now: float) -> None:
    """A schema-2 registry as a server left it: rooms, a user granted emergency priority and
    one not, an active and a revoked device, refresh-token families, an unused pairing code."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.executescript(SCHEMA_2)
        db.execute("PRAGMA user_version = 2")
        db.execute("INSERT INTO rooms VALUES ('ops'), ('yard')")
        for name, emergency, rooms in (("alice", 1, ("ops", "yard")), ("bob", 0, ("ops",))):
            db.execute(
                "INSERT INTO users VALUES (?, ?, ?, ?, ?)",
                (name, kdf.hash_secret("pw"), now, name, emergency),
            )
            db.executemany("INSERT INTO user_rooms VALUES (?, ?)", [(name, r) for r in rooms])
        db.execute(
            "INSERT INTO devices VALUES ('radio', ?, ?, 0, ?, 'radio', 1)",
            (sha256("dev-token"), now, now + 5),
        )
        db.execute(
            "INSERT INTO devices VALUES ('old', ?, ?, 1, NULL, 'old', 0)",
            (sha256("old-token"), now),
        )
        db.execute("INSERT INTO device_rooms VALUES ('radio', 'yard'), ('old', 'ops')")
        db.executemany(
            "INSERT INTO refresh_tokens VALUES (?, ?, ?, ?, ?, ?)",
            [
                (sha256("famA"), sha256("famA.secretA"), "alice", None, now, now + 1000),
                (sha256("famR"), sha256("famR.secretR"), None, "radio", now, now + 1000),
            ],
        )
        code = sha256("C0DE")
        db.execute("INSERT INTO pair_codes VALUES (?, ?, ?, NULL, NULL, 1)", (code, now, now + 600))
        db.execute("INSERT INTO pair_code_rooms VALUES (?, 'yard')", (code,))


def layout(path: Path) -> tuple[dict[str, list[tuple[str, str, int, int, object]]], set[str]]:
    """Every table's columns (name, type, not null, primary key, default) and every index."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")]
        columns = {
            t: sorted((c[1], c[2], c[3], c[5], c[4]) for c in db.execute(f"PRAGMA table_info({t})"))
            for t in sorted(tables)
        }
        found = db.execute("SELECT name FROM sqlite_schema WHERE type = 'index'")
        return columns, {r[0] for r in found}


def test_a_schema_2_registry_is_carried_over_to_3_with_nothing_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = time.time()
    old = tmp_path / "old.db"
    make_schema_2(old, now)
    with caplog.at_level(logging.INFO), Registry(old) as reg:
        assert reg.list_rooms() == ["ops", "yard"] and reg.encrypted_rooms() == set()
        assert [(u.name, u.rooms, u.emergency) for u in reg.list_users()] == [
            ("alice", ("ops", "yard"), True),
            ("bob", ("ops",), False),
        ]
        assert reg.check_password("alice", "pw") == Principal(
            "user", "alice", frozenset({"ops", "yard"}), emergency=True
        )
        assert [(d.name, d.rooms, d.revoked, d.emergency) for d in reg.list_devices()] == [
            ("old", ("ops",), True, False),
            ("radio", ("yard",), False, True),
        ]
        radio = reg.check_device_token("dev-token")
        assert radio == Principal(
            "device", "radio", frozenset({"yard"}), sha256("dev-token"), emergency=True
        )
        assert reg.check_device_token("old-token") is None  # still revoked
        refreshed = reg.check_refresh_token("famA.secretA")
        assert refreshed is not None and refreshed.name == "alice"
        assert (reg.issue_refresh_token(refreshed) or "").startswith("famA.")  # same family
        assert reg.check_refresh_token("famR.secretR") == radio
        assert reg.members() == [
            MemberInfo("user", "alice", ("ops", "yard"), None),
            MemberInfo("user", "bob", ("ops",), None),
            MemberInfo("device", "radio", ("yard",), None),
        ]
        assert reg.authority_key() is None and reg.room_key_epochs("yard") == {}
        paired = reg.redeem_pair_code("C0DE", "van")
        assert paired.rooms == ("yard",)
        van = reg.check_device_token(paired.auth_token)
        assert van is not None and van.emergency  # the code's grant came along
        # And schema 3's own: the file is a full one now.
        reg.set_encrypted("yard", True)
        reg.publish_room_keys("yard", [("alice", 1, "YWxpY2U")])
        assert reg.set_identity_key("device", "radio", "cmFkaW8") is True
        alice = reg.check_password("alice", "pw")
        assert alice is not None and alice.room_keys == (("yard", "YWxpY2U"),)
    assert f"registry {old}: schema 2 upgraded to 3 (end-to-end encryption)" in caplog.text
    with contextlib.closing(sqlite3.connect(old)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    new = tmp_path / "new.db"
    Registry(new).close()
    assert layout(old) == layout(new)
    # Opened again: nothing to carry over, nothing said.
    caplog.clear()
    with caplog.at_level(logging.INFO), Registry(old) as again:
        assert again.encrypted_rooms() == {"yard"}
    assert "upgraded" not in caplog.text
