"""The console's views at phone (390 px) and desktop width, with screenshots kept as artifacts of
the run; the admin view (rooms, users, devices with a live revocation, pairing codes with their
QR code, keys); and that users who are not admins never see admin controls."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from browser import screenshot
from channel_client import Client, pair_device
from playwright.async_api import Page, expect
from waits import TIMEOUT
from webpage import Pages, Tls
from websockets.asyncio.client import connect

from pttd.server.app import RoomServer
from pttd.server.registry import Registry

Login = Callable[..., Awaitable[None]]


async def no_horizontal_scroll(page: Page) -> None:
    width = await page.evaluate(
        "[document.documentElement.scrollWidth, document.body.scrollWidth, window.innerWidth]"
    )
    assert max(width[:2]) <= width[2], f"the page scrolls sideways: {width}"


async def device_online(server: RoomServer, registry: Registry, tls: Tls, name: str) -> Client:
    token = pair_device(registry, name, ("alpha",))
    ws = await connect(server.url, ssl=tls.client, compression=None, open_timeout=TIMEOUT)
    client = Client(ws, timeout=TIMEOUT)
    answer = await client.logon(("alpha",), auth_token=token)
    assert answer.success, answer
    return client


@pytest.mark.parametrize("phone", [True, False], ids=["phone", "desktop"])
async def test_every_view_fits_and_is_screenshot(
    pages: Pages,
    console_url: str,
    login: Login,
    server: RoomServer,
    registry: Registry,
    tls: Tls,
    channel_clients: Callable[..., Any],
    phone: bool,
) -> None:
    width = "phone" if phone else "desktop"
    radio = await device_online(server, registry, tls, "truck-7")
    page = await pages.open(console_url, phone=phone, fake_audio=True)
    await expect(page.locator("#login-view")).to_be_visible()
    await no_horizontal_scroll(page)
    await screenshot(page, f"console-login-{width}")

    await login(page, console_url, "alice")
    bob: Client = await channel_clients("bob", ("alpha",))
    answer = await bob.start("alpha")
    assert answer.success
    await expect(page.locator("#talker")).to_have_text("bob is talking")
    await expect(page.locator("#online-list .member-name")).to_have_text(
        ["alice", "bob", "truck-7"]
    )
    await no_horizontal_scroll(page)
    await screenshot(page, f"console-talk-{width}")

    await page.get_by_role("button", name="Admin").click()
    await expect(page.locator("#adm-devices [data-device=truck-7]")).to_be_visible()
    await no_horizontal_scroll(page)
    await screenshot(page, f"console-admin-{width}")
    await radio.close()


async def test_non_admin_never_sees_admin_controls(
    pages: Pages, console_url: str, login: Login
) -> None:
    page = await pages.open(fake_audio=True)
    await login(page, console_url, "bob")
    await expect(page.locator("#who-name")).to_have_text("bob")
    await expect(page.get_by_role("button", name="Admin")).to_be_hidden()
    assert await page.locator("#admin-view").evaluate("(e) => e.children.length") == 0
    for label in ("Revoke", "Add user", "Add room", "Make a pairing code"):
        await expect(page.get_by_role("button", name=label)).to_have_count(0)
    status = await page.evaluate("fetch('/api/admin/users').then((r) => r.status)")
    assert status == 403


async def test_admin_revokes_a_device_and_it_disappears_live(
    pages: Pages,
    console_url: str,
    login: Login,
    server: RoomServer,
    registry: Registry,
    tls: Tls,
) -> None:
    radio = await device_online(server, registry, tls, "truck-9")
    page = await pages.open(fake_audio=True)
    await login(page, console_url, "alice")
    online = page.locator("#online-list .member-name")
    await expect(online).to_have_text(["alice", "truck-9"])
    await page.get_by_role("button", name="Admin").click()
    row = page.locator("#adm-devices [data-device=truck-9]")
    await expect(row.locator("td").first).to_have_text("yes")  # online
    await row.get_by_role("button", name="Revoke truck-9").click()
    dialog = page.locator("#confirm")
    await expect(dialog).to_be_visible()
    await expect(page.locator("#confirm-cancel")).to_be_focused()  # the safe choice first
    await page.keyboard.press("Escape")  # cancelled: nothing happens
    await expect(dialog).to_be_hidden()
    assert not registry.is_revoked("truck-9")
    await row.get_by_role("button", name="Revoke truck-9").click()
    await page.locator("#confirm-ok").click()
    await expect(row.locator("td").nth(3)).to_have_text("yes")  # revoked
    await expect(row.get_by_role("button")).to_have_count(0)
    async with asyncio.timeout(TIMEOUT):
        await radio.closed.wait()
    await page.get_by_role("button", name="Talk").click()
    await expect(online).to_have_text(["alice"])  # gone without a reload
    await radio.close()


async def test_admin_rooms_users_and_pairing_code(
    pages: Pages, console_url: str, login: Login, registry: Registry
) -> None:
    page = await pages.open(fake_audio=True)
    await login(page, console_url, "alice")
    await page.get_by_role("button", name="Admin").click()
    admin = page.locator("#admin-view")

    await admin.get_by_label("New room name").fill("yard")
    await page.get_by_role("button", name="Add room").click()
    await expect(page.locator("#notice")).to_have_text("Room yard added.")
    assert "yard" in registry.list_rooms()
    await expect(page.locator("#adm-rooms th")).to_contain_text(["alpha", "beta", "yard"])

    await admin.get_by_label("New room name").fill("alpha")
    await page.get_by_role("button", name="Add room").click()
    await expect(page.locator("#alert")).not_to_be_empty()  # the server's one line, shown

    await admin.get_by_label("User name", exact=True).fill("erin")
    await admin.get_by_label("Password", exact=True).fill("erin-secret")
    await page.locator("#adm-user-rooms").get_by_label("yard").check()
    await page.get_by_role("button", name="Add user").click()
    await expect(page.locator("#notice")).to_have_text("User erin added.")
    await expect(page.locator("#adm-users tr", has_text="erin")).to_contain_text("yard")
    assert registry.check_password("erin", "erin-secret") is not None

    await page.locator("#adm-pair-rooms").get_by_label("alpha").check()
    await page.get_by_role("button", name="Make a pairing code").click()
    code = page.locator("#adm-pair-code")
    await expect(code).to_have_text(re.compile(r"^[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}$"))
    await expect(page.locator("#adm-pair-link")).to_contain_text("pttd://pair?")
    qr = page.locator("#adm-pair-qr")
    assert (await qr.get_attribute("src") or "").startswith("data:image/svg+xml;base64,")
    await qr.evaluate(  # it renders (a broken image has no natural width)
        "(img) => img.decode().then(() => img.naturalWidth)"
    )
    assert await qr.evaluate("(img) => img.naturalWidth") > 0
    code_text = await code.inner_text()
    assert registry.redeem_pair_code(code_text, "truck-new").rooms == ("alpha",)

    await page.get_by_role("button", name="Remove yard").click()
    await page.locator("#confirm-ok").click()
    await expect(page.locator("#notice")).to_have_text("Room yard removed.")
    assert "yard" not in registry.list_rooms()


async def test_admin_grants_emergency_and_removes_a_user(
    pages: Pages, console_url: str, login: Login, registry: Registry
) -> None:
    page = await pages.open(fake_audio=True)
    await login(page, console_url, "alice")
    await page.get_by_role("button", name="Admin").click()
    users = page.locator("#adm-users")
    await expect(users.get_by_role("button", name="Remove user alice")).to_have_count(0)  # self
    await users.get_by_role("button", name="Grant bob emergency priority").click()
    await expect(page.locator("#notice")).to_have_text("bob may now talk with emergency priority.")
    assert next(u for u in registry.list_users() if u.name == "bob").emergency
    await expect(
        users.get_by_role("button", name="Take emergency priority back from bob")
    ).to_be_visible()
    await users.get_by_role("button", name="Remove user carol").click()
    await page.locator("#confirm-ok").click()
    await expect(page.locator("#notice")).to_have_text("User carol removed.")
    assert [u.name for u in registry.list_users()] == ["alice", "bob"]
    await expect(users.locator("th")).to_have_text(["alice", "bob"])
