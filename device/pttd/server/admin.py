"""``pttd server …``: run the room server and administer its registry.

Admin commands open the same SQLite file as the running server (WAL lets both work at once);
the server notices revocations within ``registry_poll`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import signal
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Literal, TextIO

from pttd import cliargs
from pttd.e2ee.keys import AuthorityPublicKey
from pttd.errors import PttdError
from pttd.redact import setup_logging
from pttd.server.app import MAX_PACKET_RATE, RoomServer, ServerSettings, run_server
from pttd.server.registry import DEFAULT_DB, Registry, open_registry
from pttd.server.web import pairing_link

HELP = argparse.ArgumentDefaultsHelpFormatter
# `user|device grant-emergency|revoke-emergency NAME`: the action and whether it grants.
GRANTS = {"grant-emergency": True, "revoke-emergency": False}
# `user grant-admin|revoke-admin NAME`: web console admins.
ADMIN_GRANTS = {"grant-admin": True, "revoke-admin": False}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    server = sub.add_parser("server", help="the room server and its registry")
    ssub = server.add_subparsers(dest="server_command", required=True, metavar="COMMAND")

    def db_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--db",
            default=DEFAULT_DB,
            type=Path,
            help="registry file (SQLite; default from $PTTD_DB when set)",
        )

    run = ssub.add_parser("run", help="serve rooms until stopped", formatter_class=HELP)
    run.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: all)")
    run.add_argument("--port", type=cliargs.port, default=8080, help="TCP port (0: the OS picks)")
    run.add_argument(
        "--tls-cert",
        type=cliargs.readable_file,
        metavar="PEM",
        help="certificate chain for wss:// (with --tls-key)",
    )
    run.add_argument("--tls-key", type=cliargs.readable_file, metavar="PEM", help="its private key")
    run.add_argument(
        "--max-talk-time",
        type=cliargs.positive_float,
        default=60.0,
        metavar="SECONDS",
        help="how long one talker may hold the floor",
    )
    run.add_argument(
        "--max-packet-rate",
        type=cliargs.non_negative_float,
        default=MAX_PACKET_RATE,
        metavar="PER_S",
        help="audio packets per second one client may send before it is cut off (0: no limit)",
    )
    run.add_argument(
        "--web-port",
        type=cliargs.port,
        metavar="PORT",
        help="serve the web console (dispatchers and admins) on this TCP port, same host and "
        "TLS as the rooms (0: the OS picks; default: no web console)",
    )
    run.add_argument(
        "--key-file",
        type=Path,
        metavar="FILE",
        help="the room key authority's key file: lets web console admins approve keys and "
        "rotate (this makes the server process a holder of the authority; see README)",
    )
    cliargs.add_log_level(run, "INFO")
    db_arg(run)
    run.set_defaults(func=cmd_run)

    room = ssub.add_parser(
        "room", help="add, list or remove rooms (the first 'room add' creates the registry)"
    )
    room.add_argument("action", choices=("add", "list", "remove", "encrypt"))
    room.add_argument("name", nargs="?")
    room.add_argument(
        "--encrypted",
        action="store_true",
        help="add: end-to-end encrypted (SFrame only; keys from 'pttd keys')",
    )
    db_arg(room)
    room.set_defaults(func=cmd_room)

    user = ssub.add_parser(
        "user",
        help="add (password from stdin), list, remove named users, set a new password; grant or "
        "revoke emergency priority or the web console's admin rights",
    )
    user.add_argument(
        "action", choices=("add", "list", "remove", "password", *GRANTS, *ADMIN_GRANTS)
    )
    user.add_argument("name", nargs="?")
    user.add_argument("--room", action="append", help="add: a room (repeat for more rooms)")
    user.add_argument(
        "--emergency", action="store_true", help="add: may talk with emergency priority"
    )
    user.add_argument(
        "--admin", action="store_true", help="add: may administer the server in the web console"
    )
    user.add_argument("--json", action="store_true", help="print JSON (list)")
    db_arg(user)
    user.set_defaults(func=cmd_user)

    code = ssub.add_parser(
        "pair-code", help="make a one-time pairing code for a device", formatter_class=HELP
    )
    code.add_argument("--room", action="append", required=True, help="repeat for more rooms")
    code.add_argument(
        "--ttl",
        type=cliargs.positive_float,
        default=600.0,
        metavar="SECONDS",
        help="how long the code stays valid",
    )
    code.add_argument(
        "--url",
        type=server_url,
        default=os.environ.get("PTTD_SERVER_URL"),
        help="the server's address as devices reach it (ws://HOST:PORT or wss://HOST:PORT), "
        "put in the pairing link; default from $PTTD_SERVER_URL when set",
    )
    code.add_argument(
        "--emergency",
        action="store_true",
        help="the device may talk with emergency priority (pre-empt a normal talk)",
    )
    code.add_argument("--json", action="store_true", help="print one JSON object")
    db_arg(code)
    code.set_defaults(func=cmd_pair_code)

    device = ssub.add_parser(
        "device", help="list or revoke paired devices; grant or revoke emergency priority"
    )
    device.add_argument("action", choices=("list", "revoke", *GRANTS))
    device.add_argument("name", nargs="?")
    device.add_argument("--json", action="store_true", help="print JSON (list)")
    db_arg(device)
    device.set_defaults(func=cmd_device)


def server_url(value: str) -> str:
    """A room server's address as devices reach it: ``ws://`` or ``wss://`` with a host."""
    parts = urllib.parse.urlsplit(value)
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number or out of range
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r}: {exc}") from None
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a server address (ws://HOST:PORT or wss://HOST:PORT)"
        )
    return value


def cmd_run(args: argparse.Namespace) -> int:
    if (args.tls_cert is None) != (args.tls_key is None):
        raise PttdError("--tls-cert and --tls-key go together")
    open_registry(args.db).close()  # refuse a mistyped --db before anything starts
    setup_logging(args.log_level)
    settings = ServerSettings(
        host=args.host,
        port=args.port,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        max_talk_time=args.max_talk_time,
        max_packet_rate=args.max_packet_rate,
        web_port=args.web_port,
        key_file=args.key_file,
    )
    if args.key_file is not None and args.web_port is None:
        raise PttdError("--key-file goes with --web-port (it is for the web console's admins)")

    def ready(server: RoomServer) -> None:
        print(f"pttd-server listening on {server.url}", flush=True)
        if server.web_url is not None:
            print(f"web console on {server.web_url}", flush=True)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with open_registry(args.db) as registry:
            await run_server(registry, settings, ready)

    with contextlib.suppress(asyncio.CancelledError):
        asyncio.run(main())
    return 0


def cmd_room(args: argparse.Namespace) -> int:
    if args.action != "list" and not args.name:
        raise PttdError(f"room {args.action} needs a NAME")
    if args.encrypted and args.action != "add":
        raise PttdError("--encrypted goes with 'room add' only ('room encrypt NAME' for a room)")
    with open_registry(args.db, create=args.action == "add") as reg:
        if args.action == "list":
            encrypted = reg.encrypted_rooms()
            for name in reg.list_rooms():
                print(f"{name} (encrypted)" if name in encrypted else name)
            return 0
        if args.action == "add":
            reg.add_room(args.name, encrypted=args.encrypted)
            print(f"room {args.name} added" + (" (end-to-end encrypted)" if args.encrypted else ""))
        elif args.action == "encrypt":
            reg.set_encrypted(args.name, True)
            print(
                f"room {args.name} is now end-to-end encrypted: approve its members with "
                "'pttd keys approve NAME FINGERPRINT'"
            )
        else:
            reg.remove_room(args.name)
            print(f"room {args.name} removed")
    return 0


def read_password(stdin: TextIO) -> str:
    if stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise PttdError("the passwords differ")
    else:
        password = stdin.readline().rstrip("\r\n")
    if not password:
        raise PttdError("empty password")
    return password


def set_grant(reg: Registry, kind: Literal["user", "device"], action: str, name: str) -> None:
    """``grant-emergency`` or ``revoke-emergency`` for a user or a device, said in one line."""
    granted = GRANTS[action]
    reg.set_emergency(kind, name, granted)
    if granted:
        print(f"{kind} {name} may now talk with emergency priority")
    else:
        print(f"{kind} {name} may no longer talk with emergency priority")


def cmd_user(args: argparse.Namespace) -> int:
    if args.action != "list" and not args.name:
        raise PttdError(f"user {args.action} needs a NAME")
    if args.action != "add" and (args.room or args.emergency or args.admin):
        raise PttdError("--room, --emergency and --admin go with 'user add' only")
    if args.action == "add" and not args.room and not args.admin:
        raise PttdError("user add needs at least one --room (an --admin may have none)")
    with open_registry(args.db) as reg:
        if args.action in GRANTS:
            set_grant(reg, "user", args.action, args.name)
            return 0
        if args.action in ADMIN_GRANTS:
            reg.set_admin(args.name, ADMIN_GRANTS[args.action])
            now = "now" if ADMIN_GRANTS[args.action] else "no longer"
            print(f"user {args.name} is {now} an admin of the web console")
            return 0
        if args.action == "remove":
            reg.remove_user(args.name)
            print(f"user {args.name} removed")
            return 0
        if args.action == "password":
            reg.set_password(args.name, read_password(sys.stdin))
            print(f"user {args.name} has a new password")
            return 0
        if args.action == "list":
            users = reg.list_users()
        else:
            password = read_password(sys.stdin)
            rooms = args.room or []
            reg.add_user(args.name, password, rooms, emergency=args.emergency, admin=args.admin)
            grants = [
                grant
                for grant, on in (("emergency priority", args.emergency), ("admin", args.admin))
                if on
            ]
            extra = f" ({', '.join(grants)})" if grants else ""
            print(f"user {args.name} added to {', '.join(rooms) or 'no room'}{extra}")
            return 0
    if args.json:
        rows = [
            {"name": u.name, "rooms": list(u.rooms), "emergency": u.emergency, "admin": u.admin}
            for u in users
        ]
        print(json.dumps(rows))
        return 0
    if not users:
        print("no users")
    for u in users:
        emergency = " emergency" if u.emergency else ""
        admin = " admin" if u.admin else ""
        print(f"{u.name:24} rooms={','.join(u.rooms)}{emergency}{admin}")
    return 0


def cmd_pair_code(args: argparse.Namespace) -> int:
    if not args.url:
        raise PttdError(
            "pair-code needs the server's address as devices reach it: --url wss://HOST:PORT "
            "(or set $PTTD_SERVER_URL); the pairing link carries it"
        )
    with open_registry(args.db) as reg:
        authority = reg.authority_key()
        encrypted = sorted(set(args.room) & reg.encrypted_rooms())
        if encrypted and authority is None:
            raise PttdError(
                f"{', '.join(encrypted)} {'is' if len(encrypted) == 1 else 'are'} encrypted, "
                "but this server knows no key authority: "
                f"run 'pttd keys init --db {args.db}' first"
            )
        pc = reg.create_pair_code(args.room, ttl=args.ttl, emergency=args.emergency)
    link = pairing_link(pc.code, args.url, authority)
    if args.json:
        out = {
            "code": pc.code,
            "rooms": list(pc.rooms),
            "emergency": pc.emergency,
            "expires_at": pc.expires_at,
            "link": link,
        }
        print(json.dumps(out))
        return 0
    expires = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(pc.expires_at))
    print(f"pairing code: {pc.code}")
    print(f"rooms:        {', '.join(pc.rooms)}")
    if pc.emergency:
        print("emergency:    the device may talk with emergency priority")
    print(f"expires:      {expires} (single use)")
    if authority is not None:  # compare with 'pttd keys show' where the key file is
        print(f"key authority: {AuthorityPublicKey.from_text(authority).fingerprint}")
    print(f"link:         {link}")
    import segno  # noqa: PLC0415 - only this command needs it

    segno.make(link, error="m").terminal(out=sys.stdout, compact=True)
    return 0


def cmd_device(args: argparse.Namespace) -> int:
    if args.action != "list" and not args.name:
        raise PttdError(f"device {args.action} needs a NAME")
    with open_registry(args.db) as reg:
        if args.action in GRANTS:
            set_grant(reg, "device", args.action, args.name)
            return 0
        if args.action == "revoke":
            keyed = [
                r for r in sorted(reg.encrypted_rooms()) if args.name in reg.room_key_epochs(r)
            ]
            reg.revoke_device(args.name)
            print(f"device {args.name} revoked")
            if keyed:
                print(
                    f"it held the room keys of {', '.join(keyed)}: run 'pttd keys sync' with the "
                    "key authority's file to start new epochs without it"
                )
            return 0
        devices = reg.list_devices()
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "name": d.name,
                        "rooms": list(d.rooms),
                        "paired_at": d.paired_at,
                        "revoked": d.revoked,
                        "last_seen": d.last_seen,
                        "emergency": d.emergency,
                    }
                    for d in devices
                ]
            )
        )
        return 0
    if not devices:
        print("no devices")
    for d in devices:
        state = "revoked" if d.revoked else "active"
        seen = (
            time.strftime("%Y-%m-%d %H:%M", time.localtime(d.last_seen)) if d.last_seen else "never"
        )
        emergency = " emergency" if d.emergency else ""
        print(f"{d.name:24} {state:8} rooms={','.join(d.rooms)} last_seen={seen}{emergency}")
    return 0
