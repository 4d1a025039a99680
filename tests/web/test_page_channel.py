"""channel.js, the page's Channel-API client, in a real chromium against the real room server
(TLS on 127.0.0.1), with Python protocol clients (tests/support/channel_client.py) on the other
side. The module is served by a tiny static site of the test's own, so these tests need nothing
of the web console's HTTP API.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from channel_client import Client
from playwright.async_api import Page
from webpage import PASSWORDS, UI_TIMEOUT_MS, Pages

from pttd.server.app import RoomServer
from pttd.server.registry import Registry
from pttd.wire import messages as p

# Loads channel.js, makes a ChannelClient and records everything it dispatches in window.log.
SETUP = """async ([wsUrl, token, channels]) => {
  const m = await import('/static/channel.js');
  window.m = m;
  window.log = [];
  const c = new m.ChannelClient(wsUrl);
  for (const name of [...m.EVENTS, 'close']) {
    c.addEventListener(name, (e) => window.log.push({name, ...e.detail}));
  }
  c.addEventListener('audio', (e) => window.log.push({
    name: 'audio', streamId: e.detail.streamId, packetId: e.detail.packetId,
    data: Array.from(e.detail.data)}));
  window.client = c;
  await c.connect();
  const answer = await c.logon({refreshToken: token, channels, identityKey: null});
  return {answer, kept: c.refreshToken};
}"""

REFUSAL = """(args) => client.startStream(...args).then(
  (id) => ({id}),
  (e) => ({name: e.name, error: e.error, reason: e.reason, talker: e.talker,
           message: e.message}))"""


def ticket(registry: Registry, user: str) -> str:
    principal = registry.check_password(user, PASSWORDS[user])
    assert principal is not None
    token = registry.issue_refresh_token(principal, 60)
    assert token is not None
    return token


async def open_client(
    pages: Pages, site: str, server: RoomServer, registry: Registry, user: str = "alice"
) -> tuple[Page, dict[str, Any]]:
    page = await pages.open(site)
    token = ticket(registry, user)
    rooms = ["alpha"] if user == "carol" else ["alpha", "beta"]
    got = await page.evaluate(SETUP, [server.url, token, rooms])
    assert got["answer"]["success"] is True
    assert got["kept"] and got["kept"] != token  # the next refresh token, kept in memory
    return page, got


async def seen(page: Page, predicate: str) -> Any:
    """Wait until an entry of window.log matches ``predicate`` (a JS function of one entry)."""
    handle = await page.wait_for_function(
        f"() => window.log.find({predicate})", timeout=UI_TIMEOUT_MS
    )
    return await handle.json_value()


async def test_logon_and_presence_and_a_radio_talk_heard(
    pages: Pages,
    static_site: str,
    server: RoomServer,
    registry: Registry,
    channel_clients: Callable[..., Any],
) -> None:
    page, _ = await open_client(pages, static_site, server, registry)
    await seen(page, "(e) => e.name === 'on_channel_status' && e.channel === 'beta'")
    bob: Client = await channel_clients("bob", ("alpha",))
    status = await seen(
        page,
        "(e) => e.name === 'on_channel_status' && e.channel === 'alpha' && e.users_online === 2",
    )
    assert status["status"] == "online"

    answer = await bob.start("alpha")
    assert answer.success and answer.stream_id is not None
    start = await seen(page, "(e) => e.name === 'on_stream_start'")
    assert (start["from"], start["channel"], start["stream_id"]) == (
        "bob",
        "alpha",
        answer.stream_id,
    )
    assert start["codec_header"] == "gLsBFA=="
    for i in range(3):
        await bob.send_audio(answer.stream_id, bytes([i + 1, 0xAA, 0x55]))
    third = await seen(page, "(e) => e.name === 'audio' && e.data[0] === 3")
    assert third == {
        "name": "audio",
        "streamId": answer.stream_id,
        "packetId": 2,
        "data": [3, 0xAA, 0x55],
    }
    assert (await bob.stop(answer.stream_id)).success
    stop = await seen(page, "(e) => e.name === 'on_stream_stop'")
    assert stop["stream_id"] == answer.stream_id and "reason" not in stop


async def test_page_talk_reaches_a_radio(
    pages: Pages,
    static_site: str,
    server: RoomServer,
    registry: Registry,
    channel_clients: Callable[..., Any],
) -> None:
    bob: Client = await channel_clients("bob", ("alpha",))
    page, _ = await open_client(pages, static_site, server, registry)
    stream_id = await page.evaluate(
        "client.startStream('alpha', {codecHeader: m.codecHeader(), priority: 'normal'})"
    )
    start = await bob.next_of(p.OnStreamStart)
    assert (start.stream_id, start.from_, start.channel) == (stream_id, "alice", "alpha")
    assert start.codec_header == p.CodecHeader(48000, 1, 20)
    assert start.packet_duration == 20
    sent = await page.evaluate(
        "(id) => [0, 1].map((n) => client.sendAudio(id, n, new Uint8Array([7, 8, 9 + n])))",
        stream_id,
    )
    assert sent == [True, True]
    packets = [await bob.next_of(p.AudioPacket) for _ in range(2)]
    assert [(x.stream_id, x.payload) for x in packets] == [
        (stream_id, b"\x07\x08\x09"),
        (stream_id, b"\x07\x08\x0a"),
    ]
    answer = await page.evaluate("(id) => client.stopStream(id)", stream_id)
    assert answer["success"] is True
    stop = await bob.next_of(p.OnStreamStop)
    assert stop.stream_id == stream_id and stop.reason is None


async def test_busy_and_not_allowed_refusals_carry_reason_and_talker(
    pages: Pages,
    static_site: str,
    server: RoomServer,
    registry: Registry,
    channel_clients: Callable[..., Any],
) -> None:
    bob: Client = await channel_clients("bob", ("alpha",))
    page, _ = await open_client(pages, static_site, server, registry, user="carol")
    held = await bob.start("alpha")
    assert held.success
    await seen(page, "(e) => e.name === 'on_stream_start'")
    busy = await page.evaluate(REFUSAL, ["alpha", {"codecHeader": "gLsBFA=="}])
    assert busy == {
        "name": "ChannelError",
        "error": "failed to start stream",
        "reason": "busy",
        "talker": "bob",
        "message": "failed to start stream: busy (bob is talking)",
    }
    # carol has no emergency grant: the server refuses, and says why.
    refused = await page.evaluate(
        REFUSAL, ["alpha", {"codecHeader": "gLsBFA==", "priority": "emergency"}]
    )
    assert (refused["error"], refused["reason"]) == ("failed to start stream", "not allowed")


async def test_server_ends_a_talk_and_says_why(
    pages: Pages,
    static_site: str,
    server: RoomServer,
    registry: Registry,
    channel_clients: Callable[..., Any],
) -> None:
    """alice (emergency grant) pre-empts carol's talk from a Python client; the page, carol,
    gets on_stream_stop with the reason for its own stream."""
    page, _ = await open_client(pages, static_site, server, registry, user="carol")
    stream_id = await page.evaluate("client.startStream('alpha', {codecHeader: m.codecHeader()})")
    alice: Client = await channel_clients("alice", ("alpha",))
    answer = await alice.start("alpha", priority="emergency")
    assert answer.success
    stop = await seen(page, f"(e) => e.name === 'on_stream_stop' && e.stream_id === {stream_id}")
    assert stop["reason"] == "preempted"


async def test_kept_refresh_token_logs_on_again_and_the_ticket_is_spent(
    pages: Pages, static_site: str, server: RoomServer, registry: Registry
) -> None:
    token = ticket(registry, "alice")
    page = await pages.open(static_site)
    first = await page.evaluate(SETUP, [server.url, token, ["alpha"]])
    kept = first["kept"]
    again = await page.evaluate(
        """async ([url, token]) => {
          const c = new m.ChannelClient(url);
          await c.connect();
          const answer = await c.logon({refreshToken: token, channels: ['alpha']});
          c.close();
          return {answer, next: c.refreshToken};
        }""",
        [server.url, kept],
    )
    assert again["answer"]["success"] is True and again["next"] not in (kept, token)
    # The ticket was used up by the first logon (refresh tokens are single use).
    spent = await page.evaluate(
        """async ([url, token]) => {
          const c = new m.ChannelClient(url);
          await c.connect();
          try { await c.logon({refreshToken: token, channels: ['alpha']}); return null; }
          catch (e) { return {error: e.error, reason: e.reason}; }
          finally { c.close(); }
        }""",
        [server.url, token],
    )
    assert spent == {"error": "not authorized", "reason": None}


async def test_link_reconnects_with_the_kept_token_then_with_a_fresh_ticket(
    pages: Pages, static_site: str, server: RoomServer, registry: Registry
) -> None:
    page = await pages.open(static_site)
    tickets: list[str] = []

    def new_ticket() -> dict[str, str]:
        tickets.append(ticket(registry, "alice"))
        return {"refresh_token": tickets[-1], "ws_url": server.url}

    await page.expose_function("newTicket", new_ticket)
    await page.evaluate(
        """async () => {
          const m = await import('/static/channel.js');
          window.states = [];
          const link = new m.ChannelLink({
            getTicket: () => window.newTicket(), channels: ['alpha']});
          link.addEventListener('state', (e) => window.states.push(e.detail.state));
          window.link = link;
          link.start();
        }"""
    )
    online = "(n) => window.states.filter((s) => s === 'online').length === n"
    await page.wait_for_function(online, arg=1, timeout=UI_TIMEOUT_MS)
    assert len(tickets) == 1
    # The connection drops: back on with the refresh token the logon answered, no new ticket.
    await page.evaluate("link.client.ws.close()")
    await page.wait_for_function(online, arg=2, timeout=UI_TIMEOUT_MS)
    assert len(tickets) == 1
    # A kept token that no longer works (say, the server's database was restored): a new ticket.
    await page.evaluate("link.client.refreshToken = 'x'.repeat(66); link.client.ws.close()")
    await page.wait_for_function(online, arg=3, timeout=UI_TIMEOUT_MS)
    assert len(tickets) == 2
    await page.evaluate("link.stop()")


async def test_codec_headers(pages: Pages, static_site: str) -> None:
    page = await pages.open(static_site)
    headers = await page.evaluate(
        """async () => {
          const m = await import('/static/channel.js');
          return [m.codecHeader(), m.codecHeader({suite: 1}), m.codecHeader({suite: 0x0102}),
                  Array.from(m.encodeAudio(22695, 0, new Uint8Array([0xfc, 0xff, 0xfe])))];
        }"""
    )
    assert headers[0] == "gLsBFA=="  # PROTOCOL.md: 48000 Hz, 1 frame, 20 ms
    assert headers[1] == "gLsBFAAB"  # … and SFrame suite 1 (big-endian)
    assert headers[2] == "gLsBFAEC"
    # PROTOCOL.md's example packet: stream 22695, packet 0, payload fc ff fe
    assert bytes(headers[3]) == bytes.fromhex("01000058a700000000fcfffe")
