"""``pttd server …`` as an admin runs it: real processes against one SQLite file."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from channel_client import Client

from pttd.server.registry import Registry
from pttd.wire import messages as p

PTTD = [sys.executable, "-m", "pttd.cli"]


def pttd(
    *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*PTTD, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


class RunningServer:
    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc = proc
        self.url = url


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "server.db"
    pttd("server", "room", "add", "ops", "--db", str(path))
    pttd("server", "room", "add", "yard", "--db", str(path))
    return path


def start_server(db: Path, *extra: str) -> RunningServer:
    proc = subprocess.Popen(
        [*PTTD, "server", "run", "--port", "0", "--db", str(db), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line.startswith("pttd-server listening on "), (line, proc.stderr and proc.stderr.read())
    return RunningServer(proc, line.rsplit(" ", 1)[1])


@pytest.fixture
def server(db: Path) -> Iterator[RunningServer]:
    running = start_server(db)
    yield running
    if running.proc.poll() is None:
        running.proc.terminate()
        running.proc.communicate(timeout=10)


def test_rooms_add_list_remove(db: Path) -> None:
    assert pttd("server", "room", "list", "--db", str(db)).stdout.split() == ["ops", "yard"]
    pttd("server", "room", "remove", "yard", "--db", str(db))
    assert pttd("server", "room", "list", "--db", str(db)).stdout.split() == ["ops"]
    dup = pttd("server", "room", "add", "ops", "--db", str(db), check=False)
    assert dup.returncode != 0 and "ops" in dup.stderr and "Traceback" not in dup.stderr


def test_bad_arguments_are_named(db: Path, tmp_path: Path) -> None:
    missing = pttd(
        "server",
        "user",
        "add",
        "ann",
        "--room",
        "nowhere",
        "--db",
        str(db),
        stdin="pw\n",
        check=False,
    )
    assert missing.returncode == 1 and "nowhere" in missing.stderr
    broken = tmp_path / "broken.db"
    broken.write_bytes(os.urandom(4096))
    bad = pttd("server", "room", "list", "--db", str(broken), check=False)
    assert bad.returncode == 1 and str(broken) in bad.stderr and "Traceback" not in bad.stderr


URL = "ws://127.0.0.1:8080"


def test_only_the_first_room_add_creates_a_registry(tmp_path: Path) -> None:
    """A mistyped --db is refused, saying how to create a registry; nothing is created."""
    typo = tmp_path / "typo.db"
    for argv in (
        ("room", "list"),
        ("room", "remove", "ops"),
        ("device", "list"),
        ("device", "revoke", "radio-a"),
        ("pair-code", "--room", "ops", "--url", URL),
        ("run", "--port", "0"),
    ):
        done = pttd("server", *argv, "--db", str(typo), check=False)
        assert done.returncode == 1, argv
        assert done.stderr == (
            f"pttd: no registry at {typo}: check --db (or $PTTD_DB), or create one with "
            f"'pttd server room add NAME --db {typo}'\n"
        ), argv
    refused = pttd("server", "user", "add", "ann", "--room", "ops", "--db", str(typo), check=False)
    assert refused.returncode == 1 and "no registry" in refused.stderr
    assert not typo.exists()
    created = pttd("server", "room", "add", "ops", "--db", str(typo))
    assert created.stderr == f"created a new registry at {typo}\n"
    assert created.stdout == "room ops added\n"
    assert pttd("server", "room", "list", "--db", str(typo)).stdout == "ops\n"


def test_pair_code_needs_the_servers_address(db: Path) -> None:
    """Without --url the link would name no server: refused, saying what to give."""
    env = {k: v for k, v in os.environ.items() if k != "PTTD_SERVER_URL"}
    done = subprocess.run(
        [*PTTD, "server", "pair-code", "--room", "ops", "--json", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert "--url" in done.stderr and "PTTD_SERVER_URL" in done.stderr
    bad = pttd("server", "pair-code", "--room", "ops", "--url", "radio.example", check=False)
    assert bad.returncode == 2 and "is not a server address" in bad.stderr
    with_env = subprocess.run(
        [*PTTD, "server", "pair-code", "--room", "ops", "--json", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**env, "PTTD_SERVER_URL": "wss://radio.example"},
    )
    assert "server=wss%3A%2F%2Fradio.example" in json.loads(with_env.stdout)["link"]


def test_pair_code_json_and_qr(db: Path) -> None:
    out = json.loads(
        pttd(
            "server",
            "pair-code",
            "--room",
            "ops",
            "--json",
            "--ttl",
            "60",
            "--url",
            URL,
            "--db",
            str(db),
        ).stdout
    )
    assert set(out) >= {"code", "rooms", "expires_at", "link"}
    assert out["rooms"] == ["ops"]
    assert out["link"].startswith("pttd://pair?server=ws%3A%2F%2F127.0.0.1%3A8080&code=")
    human = pttd(
        "server", "pair-code", "--room", "ops", "--url", "wss://radio.example:443", "--db", str(db)
    ).stdout
    assert "pttd://pair?server=wss%3A%2F%2Fradio.example%3A443&code=" in human
    assert "█" in human or "▀" in human  # the terminal QR code


def test_password_from_stdin_logs_on_and_server_prints_ready_line(
    db: Path, server: RunningServer
) -> None:
    assert server.url.startswith("ws://127.0.0.1:")
    pttd("server", "user", "add", "ann", "--room", "ops", "--db", str(db), stdin="s3cret\n")

    async def logon() -> p.Response:
        client = await Client.connect(server.url)
        try:
            return await client.logon(("ops",), username="ann", password="s3cret")
        finally:
            await client.close()

    assert asyncio.run(logon()).success


def test_pair_then_revoke_while_server_runs(db: Path, server: RunningServer) -> None:
    code = json.loads(
        pttd("server", "pair-code", "--room", "ops", "--json", "--url", URL, "--db", str(db)).stdout
    )

    async def scenario() -> tuple[p.Response, int | None]:
        client = await Client.connect(server.url)
        try:
            paired = await client.request(lambda seq: p.Pair(code["code"], "van-7", seq=seq))
            assert paired.auth_token
            assert (await client.logon(("ops",), auth_token=paired.auth_token)).success
            devices = json.loads(pttd("server", "device", "list", "--json", "--db", str(db)).stdout)
            assert [(d["name"], d["revoked"]) for d in devices] == [("van-7", False)]
            await asyncio.to_thread(pttd, "server", "device", "revoke", "van-7", "--db", str(db))
            await client.wait_for(p.OnError)  # the server drops the revoked device by itself
            await client.closed.wait()
            return paired, client.ws.close_code
        finally:
            await client.close()

    paired, close_code = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert close_code == 1008
    devices = json.loads(pttd("server", "device", "list", "--json", "--db", str(db)).stdout)
    assert devices[0]["revoked"] is True
    server.proc.terminate()
    _, log = server.proc.communicate(timeout=10)
    assert "van-7" in log  # the server did log the pairing and the revocation …
    assert paired.auth_token not in log  # … but never the credential or the code
    assert code["code"] not in log and code["code"].replace("-", "") not in log


def test_sigterm_stops_the_server_cleanly(db: Path) -> None:
    running = start_server(db)
    running.proc.send_signal(signal.SIGTERM)
    assert running.proc.wait(10) == 0


def test_wss_with_certificate(db: Path, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(cert_file)
    cert.private_key_pem.write_to_path(key_file)
    running = start_server(db, "--tls-cert", str(cert_file), "--tls-key", str(key_file))
    try:
        assert running.url.startswith("wss://127.0.0.1:")

        async def handshake(context: ssl.SSLContext) -> None:
            client = await Client.connect(running.url, ssl=context)
            try:
                answer = await client.logon(("ops",), username="x", password="y")
                assert answer.error == p.NOT_AUTHORIZED
            finally:
                await client.close()

        trusting = ssl.create_default_context()
        ca.configure_trust(trusting)
        asyncio.run(handshake(trusting))
        with pytest.raises(ssl.SSLCertVerificationError):  # verification is on by default
            asyncio.run(handshake(ssl.create_default_context()))
    finally:
        running.proc.terminate()
        running.proc.wait(10)


def test_emergency_grants_and_look_alike_names(db: Path) -> None:
    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return pttd("server", *args, "--db", str(db), stdin=stdin, check=False)

    added = run("user", "add", "alice", "--room", "ops", "--emergency", stdin="pw\n")
    assert added.stdout == "user alice added to ops (emergency priority)\n", added.stderr
    assert run("user", "add", "bob", "--room", "ops", stdin="pw\n").returncode == 0
    # A look-alike of a user's name: one line naming who holds it, nothing added.
    clash = run("user", "add", "\u0430lice", "--room", "ops", stdin="pw\n")
    assert clash.returncode == 1
    assert clash.stderr == "pttd: user name '\u0430lice' is taken: it looks like user 'alice'\n"
    code = run("pair-code", "--room", "ops", "--emergency", "--json", "--url", URL)
    assert json.loads(code.stdout)["emergency"] is True
    assert run("user", "grant-emergency", "bob").stdout == (
        "user bob may now talk with emergency priority\n"
    )
    assert run("user", "revoke-emergency", "alice").stdout == (
        "user alice may no longer talk with emergency priority\n"
    )
    users = json.loads(run("user", "list", "--json").stdout)
    assert [(u["name"], u["emergency"]) for u in users] == [("alice", False), ("bob", True)]
    assert run("user", "list").stdout.split("\n")[1].endswith("rooms=ops emergency")
    ghost = run("device", "grant-emergency", "ghost")
    assert (ghost.returncode, ghost.stderr) == (1, "pttd: no device named 'ghost'\n")
    for argv, said in (
        (("user", "grant-emergency"), "pttd: user grant-emergency needs a NAME\n"),
        (
            ("user", "add", "carol"),
            "pttd: user add needs at least one --room (an --admin may have none)\n",
        ),
        (
            ("user", "list", "--emergency"),
            "pttd: --room, --emergency and --admin go with 'user add' only\n",
        ),
        (("user", "grant-admin", "ghost"), "pttd: no user named 'ghost'\n"),
        (("user", "remove", "ghost"), "pttd: no user named 'ghost'\n"),
    ):
        done = run(*argv)
        assert (done.returncode, done.stderr) == (1, said), argv


def test_web_console_admins_passwords_and_removal(tmp_path: Path) -> None:
    db = tmp_path / "server.db"

    def run(*argv: str, password: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pttd.cli", "server", *argv, "--db", str(db)],
            input=password + "\n",
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert run("room", "add", "ops").returncode == 0
    boss = run("user", "add", "boss", "--admin", password="boss-pw")
    assert boss.stdout == "user boss added to no room (admin)\n"
    assert run("user", "add", "ann", "--room", "ops", password="ann-pw").returncode == 0
    assert run("user", "grant-admin", "ann").stdout == (
        "user ann is now an admin of the web console\n"
    )
    assert run("user", "revoke-admin", "boss").stdout == (
        "user boss is no longer an admin of the web console\n"
    )
    users = json.loads(run("user", "list", "--json").stdout)
    assert [(u["name"], u["admin"]) for u in users] == [("ann", True), ("boss", False)]
    assert run("user", "password", "ann", password="new-pw").stdout == (
        "user ann has a new password\n"
    )
    with Registry(db) as reg:
        assert reg.check_password("ann", "new-pw") is not None
        assert reg.check_password("ann", "ann-pw") is None
    assert run("user", "remove", "boss").stdout == "user boss removed\n"
    assert [u["name"] for u in json.loads(run("user", "list", "--json").stdout)] == ["ann"]


def test_run_serves_the_web_console_when_asked(db: Path) -> None:
    running = start_server(db, "--web-port", "0")
    try:
        assert running.proc.stdout is not None
        line = running.proc.stdout.readline().strip()
        assert line.startswith("web console on http://127.0.0.1:"), line
        with urllib.request.urlopen(f"{line.rsplit(' ', 1)[1]}api/config", timeout=10) as r:
            assert json.load(r)["ws_url"] == running.url
    finally:
        running.proc.terminate()
        running.proc.communicate(timeout=10)
    lone = pttd("server", "run", "--key-file", "k.json", "--db", str(db), check=False)
    assert (lone.returncode, lone.stderr) == (
        1,
        "pttd: --key-file goes with --web-port (it is for the web console's admins)\n",
    )
