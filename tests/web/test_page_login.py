"""Logging in and out of the web console in a real chromium, against the room server's real web
console (https on 127.0.0.1): good and bad passwords, the rate limit's wait, keyboard only, the
CSRF token on every POST, and a session that survives a reload."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from playwright.async_api import Page, Request, expect
from webpage import PASSWORDS, Pages


async def focus_by_tab(page: Page, selector: str, most: int = 40) -> None:
    """Press Tab until ``selector`` has the focus (keyboard only); fail after ``most`` presses."""
    for _ in range(most):
        if await page.evaluate("(s) => document.activeElement?.matches(s) ?? false", selector):
            return
        await page.keyboard.press("Tab")
    raise AssertionError(f"{selector} never got the focus by Tab")


async def test_login_good_reload_and_logout(
    pages: Pages, console_url: str, login: Callable[..., Awaitable[None]]
) -> None:
    page = await pages.open(fake_audio=True)
    posts: list[Request] = []
    page.on("request", lambda r: posts.append(r) if r.method in ("POST", "DELETE") else None)
    await login(page, console_url, "alice")
    await expect(page.locator("#who-name")).to_have_text("alice (admin)")
    await expect(page.locator("#link-state")).to_have_text("online")
    await expect(page.locator("#room-list .room-label")).to_have_text(["alpha", "beta"])
    csrf = await page.evaluate("fetch('/api/session').then((r) => r.json()).then((s) => s.csrf)")
    assert any(r.url.endswith("/api/ticket") for r in posts)
    for request in posts:  # every POST but the login carries the session's CSRF token
        if not request.url.endswith("/api/login"):
            assert request.headers.get("x-csrf-token") == csrf, request.url

    await page.reload()  # the session cookie decides: still logged in
    await expect(page.locator("#talk-view")).to_be_visible()
    await expect(page.locator("#link-state")).to_have_text("online")

    await page.get_by_role("button", name="Log out").click()
    await expect(page.locator("#login-view")).to_be_visible()
    await expect(page.locator("#notice")).to_have_text("Logged out.")
    logout = next(r for r in posts if r.url.endswith("/api/logout"))
    assert logout.headers.get("x-csrf-token") == csrf
    await page.reload()
    await expect(page.locator("#login-view")).to_be_visible()
    await expect(page.locator("#talk-view")).to_be_hidden()


async def test_wrong_password_then_rate_limited_with_the_wait(
    pages: Pages, console_url: str
) -> None:
    page = await pages.open(console_url)
    error = page.locator("#login-error")
    await expect(error).to_have_attribute("aria-live", "assertive")
    await page.get_by_label("User name").fill("bob")
    for _ in range(5):
        await page.get_by_label("Password", exact=True).fill("not-the-password")
        await page.get_by_role("button", name="Log in").click()
        await expect(error).to_have_text("Wrong user name or password.")
        await page.evaluate("document.getElementById('login-error').textContent = ''")
    # The sixth within a minute is refused before the password is even checked: a 429 and
    # its Retry-After, shown as the wait. The right password does not get through either.
    await page.get_by_label("Password", exact=True).fill(PASSWORDS["bob"])
    await page.get_by_role("button", name="Log in").click()
    await expect(error).to_have_text(re.compile(r"^Too many attempts: try again in \d+ s\.$"))
    await expect(page.locator("#talk-view")).to_be_hidden()


async def test_empty_fields_are_said_not_sent(pages: Pages, console_url: str) -> None:
    page = await pages.open(console_url)
    await page.get_by_role("button", name="Log in").click()
    await expect(page.locator("#login-error")).to_have_text("Enter your user name.")
    await expect(page.get_by_label("User name")).to_be_focused()


async def test_keyboard_only_login_with_visible_focus(pages: Pages, console_url: str) -> None:
    page = await pages.open(console_url, fake_audio=True)
    await expect(page.locator("#login-view")).to_be_visible()
    await page.evaluate("document.activeElement?.blur()")
    await focus_by_tab(page, "#login-user")
    assert await page.evaluate("document.activeElement.matches(':focus-visible')")
    await page.keyboard.type("carol")
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.id") == "login-password"
    await page.keyboard.type(PASSWORDS["carol"])
    await page.keyboard.press("Enter")
    await expect(page.locator("#talk-view")).to_be_visible()
    await expect(page.locator("#who-name")).to_have_text("carol")
    # Log out with the keyboard too.
    await focus_by_tab(page, "#logout")
    await page.keyboard.press("Enter")
    await expect(page.locator("#login-view")).to_be_visible()
