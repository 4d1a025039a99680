"""``pttd keys …``: the room key authority's commands, run by the admin who holds its key file.

The key file (:mod:`pttd.e2ee.authority`, 0600) is apart from the server's registry and may live
on another machine than the server; these commands read the registry (``--db``) for what they
approve from (members, their rooms, the public keys they logged on with) and leave in it only what
the server may hold: the authority's public key and sealed room keys, which it passes on and can
neither open nor forge.

Every command that changes something ends with a sync: for each room of the authority, members
no longer entitled (revoked, unpaired, taken out of the room, the room made clear, or logged on
since with another key) are removed, which starts a new epoch wrapped only for those who remain,
and the current epoch is sealed anew for every member and published.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pttd.e2ee.authority import Authority, AuthorityError, FingerprintMismatch
from pttd.e2ee.keys import (
    E2eeError,
    Fingerprint,
    IdentityPublicKey,
    KeyFormatError,
    bundle_to_text,
)
from pttd.errors import PttdError
from pttd.server.registry import DEFAULT_DB, MemberInfo, Registry, open_registry

DEFAULT_KEY_FILE = os.environ.get("PTTD_KEY_FILE", "pttd-authority.json")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="the room key authority of encrypted rooms")
    ksub = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser, *, db: bool = True) -> None:
        p.add_argument(
            "--key-file",
            type=Path,
            default=Path(DEFAULT_KEY_FILE),
            help="the authority's key file (0600; default from $PTTD_KEY_FILE when set)",
        )
        if db:
            p.add_argument(
                "--db",
                type=Path,
                default=Path(DEFAULT_DB),
                help="the server's registry (default from $PTTD_DB when set)",
            )

    init = ksub.add_parser("init", help="make a new key authority (its key file) for a server")
    init.add_argument(
        "file", nargs="?", type=Path, help="the key file to make (the same as --key-file)"
    )
    common(init)
    init.set_defaults(func=cmd_init)

    publish = ksub.add_parser(
        "publish", help="record this authority's public key in the registry (for pairing links)"
    )
    common(publish)
    publish.set_defaults(func=cmd_publish)

    show = ksub.add_parser("show", help="the authority's public key, rooms, epochs and members")
    common(show, db=False)
    show.set_defaults(func=cmd_show)

    approve = ksub.add_parser(
        "approve",
        help="approve a device (or user) for its encrypted rooms, by the fingerprint read on it",
    )
    approve.add_argument("name")
    approve.add_argument(
        "fingerprint", nargs="+", help="the 40 digits its console shows ('keys'), or its QR text"
    )
    common(approve)
    approve.set_defaults(func=cmd_approve)

    remove = ksub.add_parser(
        "remove", help="take a member out of encrypted rooms (a new epoch without it)"
    )
    remove.add_argument("name")
    remove.add_argument("--room", action="append", help="only this room (repeat; default: all)")
    common(remove)
    remove.set_defaults(func=cmd_remove)

    revoke = ksub.add_parser(
        "revoke", help="revoke a device on the server and start new epochs without it"
    )
    revoke.add_argument("name")
    common(revoke)
    revoke.set_defaults(func=cmd_revoke)

    rotate = ksub.add_parser("rotate", help="start a new epoch (new room key) for rooms")
    rotate.add_argument("room", nargs="*", help="default: every room of the authority")
    common(rotate)
    rotate.set_defaults(func=cmd_rotate)

    sync = ksub.add_parser(
        "sync", help="drop members no longer entitled (new epochs), publish every room key"
    )
    common(sync)
    sync.set_defaults(func=cmd_sync)


# --------------------------------------------------------------------------- the commands


def cmd_init(args: argparse.Namespace) -> int:
    if args.file is not None:  # as a missing key file's message says: pttd keys init FILE
        args.key_file = args.file
    with open_registry(args.db) as reg:
        authority = Authority.create(args.key_file)
        reg.set_authority_key(authority.public_key.to_text())
    print(f"key authority created in {args.key_file} (keep it private, and backed up)")
    print(f"public key:   {authority.public_key.to_text()}")
    print(f"fingerprint:  {authority.public_key.fingerprint}")
    print(f"pairing links made with 'pttd server pair-code --db {args.db}' now carry this key")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    authority = Authority.load(args.key_file)
    with open_registry(args.db) as reg:
        reg.set_authority_key(authority.public_key.to_text())
    print(f"pairing links now carry the key authority {authority.public_key.fingerprint}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    authority = Authority.load(args.key_file)
    print(f"public key:   {authority.public_key.to_text()}")
    print(f"fingerprint:  {authority.public_key.fingerprint}")
    for room in authority.rooms():
        members = authority.members(room)
        print(f"room {room}: epoch {authority.epoch(room)}, {len(members)} members")
        for m in members:
            print(f"  {m.index:5} {m.name:24} {m.fingerprint}")
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    authority = Authority.load(args.key_file)
    with open_registry(args.db) as reg:
        for line in approve(authority, reg, args.name, " ".join(args.fingerprint)):
            print(line)
    return 0


def approve(authority: Authority, reg: Registry, name: str, typed: str) -> list[str]:
    """Approve ``name`` for each of its encrypted rooms if ``typed`` (read on the device) is the
    fingerprint of the key the server holds for it (FingerprintMismatch otherwise, and nothing is
    approved), then sync; what was done, in lines."""
    member = _member(reg, name)
    rooms = sorted(set(member.rooms) & reg.encrypted_rooms())
    if not rooms:
        raise PttdError(f"{name} is in no encrypted room: nothing to approve")
    public = _public_key(member)
    _check_fingerprint(name, public, typed)  # before a room is added: nothing changes on a miss
    for room in rooms:
        if room not in authority.rooms():
            authority.add_room(room)
        authority.approve(room, name, public, typed)
    said = [f"{name} approved for {', '.join(rooms)} (fingerprint {public.fingerprint})"]
    return said + sync(authority, reg)


def _check_fingerprint(name: str, public: IdentityPublicKey, typed: str) -> None:
    """What :meth:`Authority.approve` checks first, checked before anything is changed."""
    try:
        fingerprint = Fingerprint.parse(typed)
    except KeyFormatError as exc:
        raise AuthorityError(
            f"what was typed is not a fingerprint: {exc}; nothing was approved"
        ) from None
    if not fingerprint.matches(public.fingerprint):
        raise FingerprintMismatch(
            f"the key the server has for {name!r} does not match the fingerprint read on the "
            "device; nothing was approved (check the digits, or pair the device again)"
        )


def cmd_remove(args: argparse.Namespace) -> int:
    authority = Authority.load(args.key_file)
    rooms = args.room or [r for r in authority.rooms() if _is_member(authority, r, args.name)]
    for room in rooms:  # every room checked before any changes
        if not _is_member(authority, room, args.name):
            raise PttdError(f"{args.name} is not a member of {room}: nothing removed")
    with open_registry(args.db) as reg:
        for room in rooms:
            authority.remove(room, args.name)
            print(f"{args.name} removed from {room}: epoch {authority.epoch(room)} without it")
        _sync(authority, reg)
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    authority = Authority.load(args.key_file)
    with open_registry(args.db) as reg:
        reg.revoke_device(args.name)
        print(f"device {args.name} revoked")
        _sync(authority, reg)
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    authority = Authority.load(args.key_file)
    rooms = args.room or authority.rooms()
    unknown = sorted(set(rooms) - set(authority.rooms()))
    if unknown:
        raise PttdError(f"the authority has no room {', '.join(unknown)}")
    with open_registry(args.db) as reg:
        for room in rooms:
            authority.rotate(room)
            print(f"{room}: epoch {authority.epoch(room)}")
        _sync(authority, reg)
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    authority = Authority.load(args.key_file)
    with open_registry(args.db) as reg:
        _sync(authority, reg)
    return 0


# --------------------------------------------------------------------------- the sync


def sync(authority: Authority, reg: Registry) -> list[str]:
    """Bring the registry and the authority in step (see the module's docstring); what was done,
    in lines for the admin."""
    recorded = reg.authority_key()
    if recorded != authority.public_key.to_text():
        # The key pairing links carry comes from the registry: one that is not this authority's
        # would make new devices trust someone else's room keys.
        raise PttdError(
            "the registry's key authority is not this key file's: pairing links made now would "
            "make devices trust another authority; check the server, then run "
            "'pttd keys publish' if this key file is the right one"
            if recorded is not None
            else "the registry knows no key authority: run 'pttd keys publish' with this key file"
        )
    said: list[str] = []
    members = {m.name: m for m in reg.members()}
    encrypted = reg.encrypted_rooms()
    for room in authority.rooms():
        for approved in authority.members(room):
            why = _not_entitled(members.get(approved.name), room, encrypted, approved.fingerprint)
            if why is not None:
                authority.remove(room, approved.name)
                said.append(
                    f"{approved.name} removed from {room} ({why}): "
                    f"epoch {authority.epoch(room)} without it"
                )
        if room not in encrypted:
            continue  # a room made clear (or removed): nothing to publish
        sealed = [
            (name, authority.epoch(room), bundle_to_text(b)) for name, b in authority.bundles(room)
        ]
        reg.publish_room_keys(room, sealed, only=True)
        said.append(f"{room}: epoch {authority.epoch(room)} published for {len(sealed)} members")
    for m in members.values():
        waiting = [
            r
            for r in sorted(set(m.rooms) & encrypted)
            if not _is_member(authority, r, m.name) or not _same_key(authority, r, m)
        ]
        if waiting:
            state = "no identity key yet" if m.identity_key is None else "waiting for approval"
            said.append(f"{m.kind} {m.name}: {state} in {', '.join(waiting)}")
    return said


def _sync(authority: Authority, reg: Registry) -> None:
    for line in sync(authority, reg):
        print(line)


def _not_entitled(
    member: MemberInfo | None, room: str, encrypted: set[str], fingerprint: str
) -> str | None:
    if member is None:
        return "revoked or gone"
    if room not in member.rooms:
        return "no longer in the room"
    if room not in encrypted:
        return "the room is not encrypted any more"
    if member.identity_key is None or _fingerprint(member.identity_key) != fingerprint:
        return "it logged on with another key since"
    return None


def _fingerprint(key_text: str) -> str | None:
    try:
        return str(IdentityPublicKey.from_text(key_text).fingerprint)
    except KeyFormatError:
        return None


def _is_member(authority: Authority, room: str, name: str) -> bool:
    return room in authority.rooms() and any(m.name == name for m in authority.members(room))


def _same_key(authority: Authority, room: str, member: MemberInfo) -> bool:
    held = next(m for m in authority.members(room) if m.name == member.name)
    return member.identity_key is not None and _fingerprint(member.identity_key) == held.fingerprint


def _member(reg: Registry, name: str) -> MemberInfo:
    for m in reg.members():
        if m.name == name:
            return m
    raise PttdError(f"no user or active device named {name!r} in the registry")


def _public_key(member: MemberInfo) -> IdentityPublicKey:
    if member.identity_key is None:
        raise PttdError(
            f"{member.name} has not logged on with an identity key yet: let it log on "
            "(a device does right after pairing), then approve it"
        )
    try:
        return IdentityPublicKey.from_text(member.identity_key)
    except E2eeError as exc:
        raise PttdError(f"the key the server holds for {member.name} is unusable: {exc}") from None
