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
from typing import TextIO

from pttd.errors import PttdError
from pttd.redact import setup_logging
from pttd.server.app import MAX_PACKET_RATE, ServerSettings, run_server
from pttd.server.registry import Registry

DEFAULT_DB = os.environ.get("PTTD_DB", "pttd-server.db")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    server = sub.add_parser("server", help="the room server and its registry")
    ssub = server.add_subparsers(dest="server_command", required=True, metavar="COMMAND")

    def db_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--db", default=DEFAULT_DB, type=Path, help="registry file (SQLite)")

    run = ssub.add_parser("run", help="serve rooms until stopped")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8080, help="0: the OS picks")
    run.add_argument("--tls-cert", type=Path)
    run.add_argument("--tls-key", type=Path)
    run.add_argument("--max-talk-time", type=float, default=60.0, metavar="SECONDS")
    run.add_argument(
        "--max-packet-rate",
        type=float,
        default=MAX_PACKET_RATE,
        metavar="PER_S",
        help="audio packets per second one client may send before it is cut off (0: no limit)",
    )
    run.add_argument("--log-level", default="INFO")
    db_arg(run)
    run.set_defaults(func=cmd_run)

    room = ssub.add_parser("room", help="add, list or remove rooms")
    room.add_argument("action", choices=("add", "list", "remove"))
    room.add_argument("name", nargs="?")
    db_arg(room)
    room.set_defaults(func=cmd_room)

    user = ssub.add_parser("user", help="add a named user (password from stdin)")
    user.add_argument("action", choices=("add",))
    user.add_argument("name")
    user.add_argument("--room", action="append", required=True, help="repeat for more rooms")
    db_arg(user)
    user.set_defaults(func=cmd_user)

    code = ssub.add_parser("pair-code", help="make a one-time pairing code for a device")
    code.add_argument("--room", action="append", required=True, help="repeat for more rooms")
    code.add_argument("--ttl", type=float, default=600.0, metavar="SECONDS")
    code.add_argument(
        "--url",
        default=os.environ.get("PTTD_SERVER_URL"),
        help="the server's address as devices reach it, put in the pairing link "
        "(default: $PTTD_SERVER_URL)",
    )
    code.add_argument("--json", action="store_true")
    db_arg(code)
    code.set_defaults(func=cmd_pair_code)

    device = ssub.add_parser("device", help="list or revoke paired devices")
    device.add_argument("action", choices=("list", "revoke"))
    device.add_argument("name", nargs="?")
    device.add_argument("--json", action="store_true")
    db_arg(device)
    device.set_defaults(func=cmd_device)


def cmd_run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level.upper())
    if (args.tls_cert is None) != (args.tls_key is None):
        raise PttdError("--tls-cert and --tls-key go together")
    settings = ServerSettings(
        host=args.host,
        port=args.port,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        max_talk_time=args.max_talk_time,
        max_packet_rate=args.max_packet_rate,
    )

    def ready(url: str) -> None:
        print(f"pttd-server listening on {url}", flush=True)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with Registry(args.db) as registry:
            await run_server(registry, settings, ready)

    with contextlib.suppress(asyncio.CancelledError):
        asyncio.run(main())
    return 0


def cmd_room(args: argparse.Namespace) -> int:
    with Registry(args.db) as reg:
        if args.action == "list":
            for name in reg.list_rooms():
                print(name)
            return 0
        if not args.name:
            raise PttdError(f"room {args.action} needs a NAME")
        if args.action == "add":
            reg.add_room(args.name)
            print(f"room {args.name} added")
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


def cmd_user(args: argparse.Namespace) -> int:
    password = read_password(sys.stdin)
    with Registry(args.db) as reg:
        reg.add_user(args.name, password, args.room)
    print(f"user {args.name} added to {', '.join(args.room)}")
    return 0


def pairing_link(code: str, server_url: str | None) -> str:
    """The ``pttd://pair?…`` link a device console accepts (the QR code holds it)."""
    query = {"code": code}
    if server_url:
        query = {"server": server_url, "code": code}
    return "pttd://pair?" + urllib.parse.urlencode(query)


def cmd_pair_code(args: argparse.Namespace) -> int:
    with Registry(args.db) as reg:
        pc = reg.create_pair_code(args.room, ttl=args.ttl)
    link = pairing_link(pc.code, args.url)
    if args.json:
        out = {"code": pc.code, "rooms": list(pc.rooms), "expires_at": pc.expires_at, "link": link}
        print(json.dumps(out))
        return 0
    expires = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(pc.expires_at))
    print(f"pairing code: {pc.code}")
    print(f"rooms:        {', '.join(pc.rooms)}")
    print(f"expires:      {expires} (single use)")
    print(f"link:         {link}")
    if not args.url:
        print(
            "(no --url or $PTTD_SERVER_URL: the link carries no server; pair with "
            "'pair SERVER_URL CODE' on the device console)"
        )
    import segno  # noqa: PLC0415 - only this command needs it

    segno.make(link, error="m").terminal(out=sys.stdout, compact=True)
    return 0


def cmd_device(args: argparse.Namespace) -> int:
    with Registry(args.db) as reg:
        if args.action == "revoke":
            if not args.name:
                raise PttdError("device revoke needs a NAME")
            reg.revoke_device(args.name)
            print(f"device {args.name} revoked")
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
        print(f"{d.name:24} {state:8} rooms={','.join(d.rooms)} last_seen={seen}")
    return 0
