"""The web console's HTTP API against a real room server with TLS on 127.0.0.1: real aiohttp
client (its own cookie jar), real websocket clients for the rooms, a real registry and key file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from channel_client import Client, pair_device
from waits import eventually
from websockets.asyncio.client import connect

from pttd.e2ee.authority import Authority
from pttd.e2ee.keys import AuthorityPublicKey, IdentityKey
from pttd.server.app import RoomServer, ServerSettings
from pttd.server.registry import Registry
from pttd.server.web import COOKIE, CSRF_HEADER
from pttd.wire import messages as p

TIMEOUT = 10.0


@dataclass
class Web:
    server: RoomServer
    registry: Registry
    client_tls: ssl.SSLContext
    key_file: Path
    sessions: list[aiohttp.ClientSession]

    @property
    def base(self) -> str:
        assert self.server.web_url is not None
        return self.server.web_url.rstrip("/")

    def browser(self) -> aiohttp.ClientSession:
        """A fresh 'browser': its own cookie jar (which keeps cookies of an IP address)."""
        session = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            connector=aiohttp.TCPConnector(ssl=self.client_tls),
            timeout=aiohttp.ClientTimeout(total=TIMEOUT),
        )
        self.sessions.append(session)
        return session

    async def login(
        self, user: str, password: str | None = None
    ) -> tuple[aiohttp.ClientSession, str]:
        http = self.browser()
        async with http.post(
            f"{self.base}/api/login",
            json={"username": user, "password": password or f"{user}-secret"},
        ) as r:
            assert r.status == 200, await r.text()
            body = await r.json()
        return http, body["csrf"]

    async def ws(self, **creds: Any) -> Client:
        ws = await connect(self.server.url, ssl=self.client_tls, compression=None)
        return Client(ws, timeout=TIMEOUT)


@pytest.fixture
async def web(tmp_path: Path) -> AsyncIterator[Web]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(cert_file)
    cert.private_key_pem.write_to_path(key_file)
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)

    reg = Registry(tmp_path / "registry.db")
    reg.add_room("alpha")
    reg.add_room("secret", encrypted=True)
    reg.add_user("boss", "boss-secret", ["alpha"], admin=True)
    reg.add_user("alice", "alice-secret", ["alpha", "secret"])
    authority_file = tmp_path / "authority.json"
    authority = Authority.create(authority_file)
    reg.set_authority_key(authority.public_key.to_text())
    settings = ServerSettings(
        host="127.0.0.1",
        port=0,
        tls_cert=cert_file,
        tls_key=key_file,
        registry_poll=0.05,
        web_port=0,
        key_file=authority_file,
    )
    sessions: list[aiohttp.ClientSession] = []
    async with RoomServer(reg, settings) as server:
        yield Web(server, reg, client_tls, authority_file, sessions)
        for s in sessions:
            await s.close()
    reg.close()


Call = Callable[..., Awaitable[tuple[int, Any]]]


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    csrf: str | None = None,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    h = dict(headers or {})
    if csrf is not None:
        h[CSRF_HEADER] = csrf
    async with http.request(method, url, json=body, headers=h) as r:
        text = await r.text()
        return r.status, (json.loads(text) if text else None)


# --------------------------------------------------------------------------- logging in


async def test_login_sets_a_strict_cookie_and_the_page_gets_its_session(web: Web) -> None:
    http = web.browser()
    async with http.post(
        f"{web.base}/api/login", json={"username": "alice", "password": "alice-secret"}
    ) as r:
        assert r.status == 200
        cookie = r.headers["Set-Cookie"]
        body = await r.json()
        assert "Content-Security-Policy" in r.headers
        assert r.headers["Cache-Control"] == "no-store"
    assert cookie.startswith(f"{COOKIE}=")
    for flag in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/"):
        assert flag in cookie
    assert body["user"] == "alice" and body["admin"] is False
    assert body["rooms"] == ["alpha", "secret"] and body["encrypted"] == ["secret"]
    status, again = await call(http, "GET", f"{web.base}/api/session")
    assert status == 200 and again["csrf"] == body["csrf"]
    status, config = await call(http, "GET", f"{web.base}/api/config")
    assert status == 200 and config["ws_url"] == web.server.url
    authority = web.registry.authority_key()
    assert authority is not None and config["authority_key"] == authority
    assert config["authority_fingerprint"] == AuthorityPublicKey.from_text(authority).fingerprint


async def test_wrong_password_is_one_line_and_logins_are_rate_limited(web: Web) -> None:
    http = web.browser()
    for _ in range(5):
        status, body = await call(
            http, "POST", f"{web.base}/api/login", body={"username": "alice", "password": "no"}
        )
        assert (status, body) == (401, {"error": "wrong user name or password"})
    async with http.post(
        f"{web.base}/api/login", json={"username": "alice", "password": "alice-secret"}
    ) as r:
        assert r.status == 429  # even the right password waits now
        assert int(r.headers["Retry-After"]) > 0
        assert "too many failed logins" in (await r.json())["error"]
    status, _ = await call(http, "GET", f"{web.base}/api/session")
    assert status == 401


async def test_a_user_name_is_limited_across_addresses_but_not_locked_by_one(web: Web) -> None:
    def from_address(host: str) -> aiohttp.ClientSession:  # another machine: 127.0.0.x
        session = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            connector=aiohttp.TCPConnector(ssl=web.client_tls, local_addr=(host, 0)),
            timeout=aiohttp.ClientTimeout(total=TIMEOUT),
        )
        web.sessions.append(session)
        return session

    right = {"username": "alice", "password": "alice-secret"}
    wrong = {"username": "ALICE", "password": "x"}  # folded: the same name
    url = f"{web.base}/api/login"
    for _ in range(5):  # one address's worth of failures …
        assert (await call(from_address("127.0.0.2"), "POST", url, body=wrong))[0] == 401
    assert (await call(from_address("127.0.0.2"), "POST", url, body=right))[0] == 429
    # … blocks that address, not alice logging in from elsewhere
    assert (await call(from_address("127.0.0.3"), "POST", url, body=right))[0] == 200
    for host in ("127.0.0.4", "127.0.0.5", "127.0.0.6"):  # 20 in all, from four addresses
        for _ in range(5):
            assert (await call(from_address(host), "POST", url, body=wrong))[0] == 401
    status, body = await call(from_address("127.0.0.7"), "POST", url, body=right)
    assert status == 429 and "too many failed logins" in body["error"]


async def test_a_failed_login_logs_the_address_not_what_was_typed(
    web: Web, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="pttd.server.web"):
        status, _ = await call(
            web.browser(),
            "POST",
            f"{web.base}/api/login",
            body={"username": "my-secret-password", "password": "x"},
        )
    assert status == 401
    assert "my-secret-password" not in caplog.text
    assert "web console: failed login from 127.0.0.1" in caplog.text


async def test_a_new_password_or_a_new_user_of_the_name_ends_the_sessions(web: Web) -> None:
    http, _ = await web.login("boss")
    await asyncio.to_thread(web.registry.set_password, "boss", "new-secret")
    status, body = await call(http, "GET", f"{web.base}/api/session")
    assert (status, body) == (401, {"error": "not logged in"})
    http, _ = await web.login("boss", "new-secret")
    await asyncio.to_thread(web.registry.remove_user, "boss")
    await asyncio.to_thread(web.registry.add_user, "boss", "other", ["alpha"])
    status, _ = await call(http, "GET", f"{web.base}/api/session")
    assert status == 401  # the old cookie is not the new boss's


async def test_event_streams_are_bounded_per_session(web: Web) -> None:
    http, _ = await web.login("alice")
    opened = [await http.get(f"{web.base}/api/events") for _ in range(4)]
    try:
        assert [r.status for r in opened] == [200] * 4
        status, body = await call(http, "GET", f"{web.base}/api/events")
        assert (status, body) == (429, {"error": "too many event streams open"})
    finally:
        for r in opened:
            r.close()


async def test_the_page_may_reach_its_origin_and_the_rooms_only(web: Web) -> None:
    async with web.browser().get(f"{web.base}/api/config") as r:
        policy = r.headers["Content-Security-Policy"]
        config = await r.json()
    assert f"connect-src 'self' {web.server.url};" in policy
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert config["test_tap"] is False  # the page's recorder: tests only


async def test_key_file_changes_from_the_console_do_not_overwrite_each_other(web: Web) -> None:
    identity = IdentityKey.generate()
    await asyncio.to_thread(
        web.registry.set_identity_key, "user", "alice", identity.public.to_text()
    )
    http, csrf = await web.login("boss")
    status, _ = await call(
        http,
        "POST",
        f"{web.base}/api/admin/keys/approve",
        csrf,
        {"name": "alice", "fingerprint": identity.public.fingerprint.digits},
    )
    assert status == 200
    _, keys = await call(http, "GET", f"{web.base}/api/admin/keys")
    epoch = keys["epochs"]["secret"]
    answers = await asyncio.gather(
        *(
            call(http, "POST", f"{web.base}/api/admin/keys/rotate", csrf, {"room": "secret"})
            for _ in range(8)
        )
    )
    said = sorted(body["said"][0] for status, body in answers if status == 200)
    assert said == sorted(f"secret: epoch {epoch + k}" for k in range(1, 9))  # each once
    _, keys = await call(http, "GET", f"{web.base}/api/admin/keys")
    assert keys["epochs"]["secret"] == epoch + 8


async def test_garbage_requests_get_one_line_each(web: Web) -> None:
    http = web.browser()
    async with http.post(f"{web.base}/api/login", data=b"{not json") as r:
        assert r.status == 400 and (await r.json()) == {"error": "the request body is not JSON"}
    status, body = await call(http, "POST", f"{web.base}/api/login", body=[1, 2])
    assert status == 400 and "not a JSON object" in body["error"]
    status, body = await call(http, "POST", f"{web.base}/api/login", body={"username": 3})
    assert status == 400 and body["error"].startswith("username:")
    status, body = await call(http, "GET", f"{web.base}/api/nothing-here")
    assert status == 404 and set(body) == {"error"}
    async with http.post(f"{web.base}/api/login", data=b"x" * 200_000) as r:
        assert r.status == 413 and set(await r.json()) == {"error"}


async def test_logout_ends_the_session(web: Web) -> None:
    http, csrf = await web.login("alice")
    status, _ = await call(http, "POST", f"{web.base}/api/logout", csrf)
    assert status == 204
    status, body = await call(http, "GET", f"{web.base}/api/session")
    assert (status, body) == (401, {"error": "not logged in"})


async def test_a_removed_user_is_logged_out(web: Web) -> None:
    http, _ = await web.login("alice")
    await asyncio.to_thread(web.registry.remove_user, "alice")
    status, _ = await call(http, "GET", f"{web.base}/api/session")
    assert status == 401


# --------------------------------------------------------------------------- CSRF, rights


async def test_changes_need_the_csrf_token_and_the_page_origin(web: Web) -> None:
    http, csrf = await web.login("boss")
    url = f"{web.base}/api/admin/rooms"
    status, body = await call(http, "POST", url, None, {"name": "new"})
    assert (status, body) == (403, {"error": "bad CSRF token"})
    status, body = await call(http, "POST", url, "forged", {"name": "new"})
    assert status == 403
    status, body = await call(
        http, "POST", url, csrf, {"name": "new"}, {"Origin": "https://evil.example"}
    )
    assert (status, body) == (403, {"error": "cross-origin request refused"})
    status, body = await call(
        http,
        "POST",
        f"{web.base}/api/login",
        None,
        {"username": "boss", "password": "x"},
        {"Origin": "https://evil.example"},
    )
    assert status == 403
    assert "new" not in web.registry.list_rooms()
    status, _ = await call(http, "POST", url, csrf, {"name": "new"}, {"Origin": web.base})
    assert status == 201
    assert "new" in web.registry.list_rooms()


async def test_a_user_who_is_not_an_admin_cannot_administer(web: Web) -> None:
    http, csrf = await web.login("alice")
    for method, path, body in [
        ("GET", "/api/admin/rooms", None),
        ("GET", "/api/admin/users", None),
        ("GET", "/api/admin/devices", None),
        ("GET", "/api/admin/keys", None),
        ("POST", "/api/admin/rooms", {"name": "mine"}),
        ("DELETE", "/api/admin/rooms/alpha", None),
        ("POST", "/api/admin/users", {"name": "eve", "password": "p", "rooms": ["alpha"]}),
        ("POST", "/api/admin/pair-codes", {"rooms": ["alpha"]}),
        ("POST", "/api/admin/keys/approve", {"name": "alice", "fingerprint": "0" * 40}),
        ("POST", "/api/admin/keys/rotate", {"room": "secret"}),
    ]:
        status, answer = await call(http, method, f"{web.base}{path}", csrf, body)
        assert (status, answer) == (403, {"error": "admins only"}), path
    assert web.registry.list_rooms() == ["alpha", "secret"]
    assert [u.name for u in web.registry.list_users()] == ["alice", "boss"]


async def test_admin_manages_rooms_and_users(web: Web) -> None:
    http, csrf = await web.login("boss")
    b = web.base
    assert (await call(http, "POST", f"{b}/api/admin/rooms", csrf, {"name": "ops"}))[0] == 201
    status, body = await call(http, "POST", f"{b}/api/admin/rooms", csrf, {"name": "ops"})
    assert status == 409 and "ops" in body["error"]
    assert (await call(http, "POST", f"{b}/api/admin/rooms/ops/encrypt", csrf))[0] == 204
    status, rooms = await call(http, "GET", f"{b}/api/admin/rooms")
    assert {r["name"]: r["encrypted"] for r in rooms} == {
        "alpha": False,
        "ops": True,
        "secret": True,
    }
    status, _ = await call(
        http,
        "POST",
        f"{b}/api/admin/users",
        csrf,
        {"name": "dave", "password": "dave-secret", "rooms": ["ops"]},
    )
    assert status == 201
    status, body = await call(
        http,
        "POST",
        f"{b}/api/admin/users",
        csrf,
        {"name": "erin", "password": "x", "rooms": ["nowhere"]},
    )
    assert status == 404 and "nowhere" in body["error"]
    status, users = await call(http, "GET", f"{b}/api/admin/users")
    assert [(u["name"], u["rooms"], u["admin"]) for u in users] == [
        ("alice", ["alpha", "secret"], False),
        ("boss", ["alpha"], True),
        ("dave", ["ops"], False),
    ]
    assert (await call(http, "DELETE", f"{b}/api/admin/rooms/ops", csrf))[0] == 204
    assert (await call(http, "DELETE", f"{b}/api/admin/rooms/ops", csrf))[0] == 404
    _, dave = await web.login("dave")
    assert dave  # dave logs in, now in no room


# --------------------------------------------------------------------------- the rooms


async def test_a_ticket_logs_the_page_on_to_the_rooms(web: Web) -> None:
    http, csrf = await web.login("alice")
    status, ticket = await call(http, "POST", f"{web.base}/api/ticket", csrf)
    assert status == 200 and ticket["ws_url"] == web.server.url
    client = await web.ws()
    try:
        answer = await client.logon(("alpha",), refresh_token=ticket["refresh_token"])
        assert answer.success and answer.refresh_token  # the next one, for reconnects
    finally:
        await client.close()
    again = await web.ws()
    try:  # a ticket is used once
        answer = await again.logon(("alpha",), refresh_token=ticket["refresh_token"])
        assert not answer.success
    finally:
        await again.close()


async def test_events_show_presence_and_a_revoked_device_going_live(web: Web) -> None:
    token = pair_device(web.registry, "truck-1", ("alpha",))
    radio = await web.ws()
    answer = await radio.logon(("alpha",), auth_token=token)
    assert answer.success
    http, csrf = await web.login("boss")
    snapshots: list[dict[str, Any]] = []

    async def read_events() -> None:
        async with http.get(f"{web.base}/api/events") as r:
            assert r.headers["Content-Type"].startswith("text/event-stream")
            async for line in r.content:
                if line.startswith(b"data: "):
                    snapshots.append(json.loads(line[6:]))

    reader = asyncio.create_task(read_events())
    try:

        def alpha() -> dict[str, Any]:
            return next(r for r in snapshots[-1]["rooms"] if r["name"] == "alpha")

        await eventually(
            lambda: snapshots and {"kind": "device", "name": "truck-1"} in alpha()["online"],
            TIMEOUT,
            "the radio online in alpha",
        )
        assert any(d["name"] == "truck-1" and d["online"] for d in snapshots[-1]["devices"])
        await radio.start("alpha")
        await eventually(lambda: alpha()["talking"] == "truck-1", TIMEOUT, "talking shown")
        status, said = await call(
            http, "POST", f"{web.base}/api/admin/devices/truck-1/revoke", csrf
        )
        assert status == 200 and said["said"][0] == "device truck-1 revoked"
        await eventually(
            lambda: alpha()["online"] == [] and alpha()["talking"] is None,
            TIMEOUT,
            "the revoked radio gone from the room",
        )
        device = next(d for d in snapshots[-1]["devices"] if d["name"] == "truck-1")
        assert device["revoked"] and not device["online"]
        await asyncio.wait_for(radio.ws.wait_closed(), TIMEOUT)
    finally:
        reader.cancel()
        await radio.close()


async def test_events_of_a_user_show_only_their_rooms_and_no_devices(web: Web) -> None:
    http, _ = await web.login("alice")
    async with http.get(f"{web.base}/api/events") as r:
        line = b""
        while not line.startswith(b"data: "):
            line = await asyncio.wait_for(r.content.readline(), TIMEOUT)
    snapshot = json.loads(line[6:])
    assert [room["name"] for room in snapshot["rooms"]] == ["alpha", "secret"]
    assert "devices" not in snapshot


async def test_pairing_code_with_link_and_qr(web: Web) -> None:
    http, csrf = await web.login("boss")
    status, code = await call(
        http, "POST", f"{web.base}/api/admin/pair-codes", csrf, {"rooms": ["alpha", "secret"]}
    )
    assert status == 201
    assert code["link"].startswith("pttd://pair?server=wss")
    assert "authority=" in code["link"]  # an encrypted room: the device learns the authority
    assert code["qr_svg"].startswith('<svg xmlns="http://www.w3.org/2000/svg"')
    pairing = web.registry.redeem_pair_code(code["code"], "van-2")
    assert pairing.rooms == ("alpha", "secret")
    status, body = await call(
        http, "POST", f"{web.base}/api/admin/pair-codes", csrf, {"rooms": ["alpha"], "ttl": 1}
    )
    assert status == 400 and body["error"].startswith("ttl")


# --------------------------------------------------------------------------- keys


async def test_key_approval_by_fingerprint_and_rotation(web: Web) -> None:
    identity = IdentityKey.generate()
    # alice's page logs on with its identity key: the server keeps it for the authority.
    http_alice, csrf_alice = await web.login("alice")
    _, ticket = await call(http_alice, "POST", f"{web.base}/api/ticket", csrf_alice)
    page = await web.ws()
    try:
        answer = await page.logon(
            ("alpha", "secret"),
            refresh_token=ticket["refresh_token"],
            identity_key=identity.public.to_text(),
        )
        assert answer.success
        http, csrf = await web.login("boss")
        status, keys = await call(http, "GET", f"{web.base}/api/admin/keys")
        assert status == 200 and keys["enabled"] is True
        alice = next(m for m in keys["members"] if m["name"] == "alice")
        assert alice["fingerprint"] == str(identity.public.fingerprint)
        assert alice["approved"] is False and alice["rooms"] == ["secret"]
        before = web.key_file.read_bytes()
        wrong = "1" * 40
        status, body = await call(
            http,
            "POST",
            f"{web.base}/api/admin/keys/approve",
            csrf,
            {"name": "alice", "fingerprint": wrong},
        )
        assert status == 409 and "nothing was approved" in body["error"]
        assert web.key_file.read_bytes() == before
        status, body = await call(
            http,
            "POST",
            f"{web.base}/api/admin/keys/approve",
            csrf,
            {"name": "alice", "fingerprint": identity.public.fingerprint.digits},
        )
        assert status == 200 and body["said"][0].startswith("alice approved for secret")
        key = await page.next_of(p.OnRoomKey, TIMEOUT)
        assert key.channel == "secret"
        _, keys = await call(http, "GET", f"{web.base}/api/admin/keys")
        assert next(m for m in keys["members"] if m["name"] == "alice")["approved"] is True
        epoch = keys["epochs"]["secret"]
        status, body = await call(
            http, "POST", f"{web.base}/api/admin/keys/rotate", csrf, {"room": "secret"}
        )
        assert status == 200 and body["said"][0] == f"secret: epoch {epoch + 1}"
        await page.next_of(p.OnRoomKey, TIMEOUT)
    finally:
        await page.close()


async def test_without_the_key_file_approvals_say_where_to_approve(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "r.db")
    reg.add_room("alpha")
    reg.add_user("boss", "boss-secret", ["alpha"], admin=True)
    settings = ServerSettings(host="127.0.0.1", port=0, web_port=0)
    async with RoomServer(reg, settings) as server:
        assert server.web_url is not None and server.web_url.startswith("http://")
        async with aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            timeout=aiohttp.ClientTimeout(total=TIMEOUT),
        ) as http:
            base = server.web_url.rstrip("/")
            async with http.post(
                f"{base}/api/login", json={"username": "boss", "password": "boss-secret"}
            ) as r:
                csrf = (await r.json())["csrf"]
                # A client does not send a Secure cookie back over http (a browser does for
                # http://127.0.0.1, a "potentially trustworthy" origin): send it by hand.
                cookie = {"Cookie": f"{COOKIE}={r.cookies[COOKIE].value}"}
            status, keys = await call(http, "GET", f"{base}/api/admin/keys", headers=cookie)
            assert status == 200 and keys["enabled"] is False
            status, body = await call(
                http,
                "POST",
                f"{base}/api/admin/keys/approve",
                csrf,
                {"name": "boss", "fingerprint": "1" * 40},
                cookie,
            )
            assert status == 409 and "--key-file" in body["error"]
    reg.close()


async def test_admin_removes_users_sets_passwords_and_grants_emergency(web: Web) -> None:
    http, csrf = await web.login("boss")
    b = web.base
    alice, _ = await web.login("alice")
    status, body = await call(http, "POST", f"{b}/api/admin/users/alice/password", csrf, {})
    assert status == 400 and body["error"].startswith("password")
    status, _ = await call(
        http, "POST", f"{b}/api/admin/users/alice/password", csrf, {"password": "fresh-one"}
    )
    assert status == 204
    assert (await call(alice, "GET", f"{b}/api/session"))[0] == 401  # her old session ended
    await web.login("alice", "fresh-one")
    for kind, name in (("users", "alice"), ("devices", "van")):
        if kind == "devices":
            pair_device(web.registry, "van", ("alpha",))
        status, _ = await call(
            http, "POST", f"{b}/api/admin/{kind}/{name}/emergency", csrf, {"granted": True}
        )
        assert status == 204
    assert next(u for u in web.registry.list_users() if u.name == "alice").emergency
    assert next(d for d in web.registry.list_devices() if d.name == "van").emergency
    status, body = await call(http, "DELETE", f"{b}/api/admin/users/boss", csrf)
    assert status == 409 and "yourself" in body["error"]
    assert (await call(http, "DELETE", f"{b}/api/admin/users/alice", csrf))[0] == 204
    assert (await call(http, "DELETE", f"{b}/api/admin/users/alice", csrf))[0] == 404
    assert [u.name for u in web.registry.list_users()] == ["boss"]
