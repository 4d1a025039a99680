"""The device's link to the room server: pair() and its failures, TLS, and ServerLink's behaviour.

Every server here is real: the room server on 127.0.0.1 (plain or wss with a trustme CA), a port
nobody listens on, a TCP server that never answers, an HTTP server that is not a websocket one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trustme
from device_harness import ROOM, TIMEOUT, Rig, device_config, eventually, make_device

from pttd.errors import LinkError, PairingFailed, PttdError
from pttd.radio.link import LinkEvent, LinkSettings, Outage, ServerLink, duration, pair
from pttd.radio.machine import (
    CredentialRefused,
    Link,
    LinkConnecting,
    LinkDown,
    LinkUp,
    StreamGranted,
    StreamRefused,
)
from pttd.radio.store import Credential, Store
from pttd.server.app import ServerSettings
from pttd.wire import messages as p

CODEC = p.CodecHeader(48000, 1, 20)


async def pair_fails(url: str, code: str, settings: LinkSettings | None = None) -> PairingFailed:
    with pytest.raises(PairingFailed) as caught:
        await pair(url, code, "gate-3", settings or LinkSettings())
    failure = caught.value
    assert isinstance(failure, LinkError) and isinstance(failure, PttdError)
    if code:
        assert code not in str(failure)  # codes never reach a message
    return failure


# --------------------------------------------------------------------------- pairing


async def test_pairing_gives_a_credential_that_logs_on(rig: Rig) -> None:
    code = rig.registry.create_pair_code([ROOM, "ops"])
    credential = await pair(rig.url, code.code, "gate-3", LinkSettings())
    assert credential.server_url == rig.url
    assert credential.device_name == "gate-3"
    assert credential.rooms == (ROOM, "ops")
    assert credential.auth_token and credential.paired_at > 0
    assert credential.auth_token not in repr(credential)
    assert rig.registry.check_device_token(credential.auth_token) is not None


async def test_a_second_device_of_the_same_name_knows_its_new_name(rig: Rig) -> None:
    first = await rig.credential("gate-3")
    second = await rig.credential("gate-3")
    assert sorted(d.name for d in rig.registry.list_devices()) == ["gate-3", "gate-3-2"]
    assert (first.device_name, second.device_name) == ("gate-3", "gate-3-2")


async def test_a_wrong_code(rig: Rig) -> None:
    failure = await pair_fails(rig.url, "AAAA-BBBB-CCCC")
    assert failure.reason == p.REASON_INVALID_CODE
    assert str(failure) == "wrong pairing code"


async def test_an_expired_code(rig: Rig) -> None:
    code = rig.registry.create_pair_code([ROOM], ttl=60, now=time.time() - 120)
    failure = await pair_fails(rig.url, code.code)
    assert failure.reason == p.REASON_EXPIRED_CODE
    assert "expired" in str(failure) and "new one" in str(failure)


async def test_a_used_code(rig: Rig) -> None:
    code = rig.registry.create_pair_code([ROOM])
    await pair(rig.url, code.code, "gate-3", LinkSettings())
    failure = await pair_fails(rig.url, code.code)
    assert failure.reason == p.REASON_USED_CODE
    assert "already used" in str(failure)


async def test_too_many_wrong_codes_are_rate_limited(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ServerSettings(host="127.0.0.1", port=0, auth_failures=2))
    await rig.start_server()
    try:
        for _ in range(2):
            assert (await pair_fails(rig.url, "AAAA-BBBB-CCCC")).reason == p.REASON_INVALID_CODE
        good = rig.registry.create_pair_code([ROOM])
        failure = await pair_fails(rig.url, good.code)  # even a good code, for a while
        assert failure.reason == p.REASON_RATE_LIMITED
        assert "too many wrong codes" in str(failure)
    finally:
        await rig.close()


def closed_port() -> int:
    """A port on 127.0.0.1 that nobody listens on (it was bound a moment ago, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_an_unreachable_server() -> None:
    failure = await pair_fails(f"ws://127.0.0.1:{closed_port()}", "AAAA-BBBB-CCCC")
    assert failure.reason == "unreachable"
    assert "cannot reach the server" in str(failure)


@contextlib.asynccontextmanager
async def tcp_server(
    answer: bytes | None,
) -> AsyncIterator[str]:
    """A TCP server on 127.0.0.1 that sends ``answer`` to whatever it is told (None: says
    nothing, ever); yields its ws:// address."""
    writers: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.readuntil(b"\r\n\r\n")
        if answer is not None:
            writer.write(answer)
            await writer.drain()
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        for writer in writers:
            writer.close()
        server.close()


async def test_a_server_that_is_not_a_websocket_server() -> None:
    http = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    async with tcp_server(http) as url:
        failure = await pair_fails(url, "AAAA-BBBB-CCCC")
    assert failure.reason == "unreachable"
    assert "not a pttd server" in str(failure)


async def test_a_server_that_never_answers() -> None:
    async with tcp_server(None) as url:
        failure = await pair_fails(url, "AAAA-BBBB-CCCC", LinkSettings(open_timeout=0.5))
    assert failure.reason == "unreachable"
    assert "no answer" in str(failure)


async def test_a_bad_address() -> None:
    failure = await pair_fails("http://127.0.0.1:1", "AAAA-BBBB-CCCC")
    assert failure.reason == "unreachable"
    assert "not a websocket address" in str(failure)


# --------------------------------------------------------------------------- TLS


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_files(tmp_path: Path, ca: trustme.CA) -> Iterator[tuple[Path, Path, Path]]:
    """(certificate chain, key, CA certificate) for a server at 127.0.0.1."""
    cert = ca.issue_cert("127.0.0.1", "localhost")
    chain, key, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    for blob in cert.cert_chain_pems:
        with chain.open("ab") as out:
            out.write(blob.bytes())
    cert.private_key_pem.write_to_path(key)
    ca.cert_pem.write_to_path(ca_file)
    yield chain, key, ca_file


@pytest.fixture
async def tls_rig(tmp_path: Path, tls_files: tuple[Path, Path, Path]) -> AsyncIterator[Rig]:
    chain, key, _ = tls_files
    settings = ServerSettings(host="127.0.0.1", port=0, tls_cert=chain, tls_key=key)
    (tmp_path / "server").mkdir()
    rig = Rig(tmp_path / "server", settings)
    await rig.start_server()
    try:
        yield rig
    finally:
        await rig.close()


def wss(rig: Rig) -> str:
    assert rig.server is not None
    assert rig.server.url.startswith("wss://")
    return rig.server.url


async def test_tls_with_an_untrusted_certificate_fails_as_tls(tls_rig: Rig) -> None:
    code = tls_rig.registry.create_pair_code([ROOM])
    failure = await pair_fails(wss(tls_rig), code.code)
    assert failure.reason == "tls"
    assert "not trusted" in str(failure)
    # Nothing was redeemed: the code still works once the CA is configured.
    assert tls_rig.registry.list_devices() == []


async def test_tls_with_the_ca_file_configured_pairs(
    tls_rig: Rig, tls_files: tuple[Path, Path, Path]
) -> None:
    _, _, ca_file = tls_files
    code = tls_rig.registry.create_pair_code([ROOM])
    credential = await pair(wss(tls_rig), code.code, "gate-3", LinkSettings(ca_file=str(ca_file)))
    assert credential.server_url == wss(tls_rig)
    assert [d.name for d in tls_rig.registry.list_devices()] == ["gate-3"]


async def test_tls_verification_off_pairs_and_says_so(
    tls_rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    code = tls_rig.registry.create_pair_code([ROOM])
    await pair(wss(tls_rig), code.code, "gate-3", LinkSettings(tls_verify=False))
    assert any("verification is OFF" in r.getMessage() for r in caplog.records)


async def test_a_device_over_wss_with_the_ca_file_comes_online(
    tls_rig: Rig, tls_files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, _, ca_file = tls_files
    code = tls_rig.registry.create_pair_code([ROOM])
    settings = LinkSettings(ca_file=str(ca_file))
    credential = await pair(wss(tls_rig), code.code, "gate-3", settings)
    state = tmp_path / "state"
    Store(state).save_credential(credential)
    base = device_config("gate-3", wss(tls_rig), state)
    config = dataclasses.replace(
        base, server=dataclasses.replace(base.server, ca_file=str(ca_file))
    )
    device = make_device(config)
    tls_rig.devices.append(device)
    await device.start()
    await device.online()
    device.button.press()
    await device.transmitting()
    device.button.release()
    await device.idle()


async def test_a_device_over_wss_without_the_ca_keeps_trying_and_says_why(
    tls_rig: Rig, tls_files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, _, ca_file = tls_files
    code = tls_rig.registry.create_pair_code([ROOM])
    credential = await pair(wss(tls_rig), code.code, "gate-3", LinkSettings(ca_file=str(ca_file)))
    state = tmp_path / "state"
    Store(state).save_credential(credential)
    device = make_device(device_config("gate-3", wss(tls_rig), state))  # no ca_file
    tls_rig.devices.append(device)
    await device.start()
    await eventually(lambda: "not trusted" in device.device.link.last_error)
    assert device.machine.link is Link.CONNECTING  # still trying: the admin may fix the CA
    assert "not trusted" in device.device.status().last_error


# --------------------------------------------------------------------------- ServerLink


class Events:
    """A ServerLink handler that records events and lets a test wait for one."""

    def __init__(self) -> None:
        self.seen: list[LinkEvent] = []
        self._changed = asyncio.Event()

    def __call__(self, event: LinkEvent) -> None:
        self.seen.append(event)
        self._changed.set()

    def of(self, kind: type[object]) -> list[LinkEvent]:
        return [e for e in self.seen if isinstance(e, kind)]

    async def wait(self, kind: type[object], count: int = 1) -> None:
        async with asyncio.timeout(TIMEOUT):
            while len(self.of(kind)) < count:
                self._changed.clear()
                await self._changed.wait()


@contextlib.asynccontextmanager
async def running(link: ServerLink) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(link.run())
    try:
        yield task
    finally:
        await link.close()
        async with asyncio.timeout(TIMEOUT):
            await task


async def test_link_logs_on_is_granted_the_floor_and_reports_a_busy_room(rig: Rig) -> None:
    first, second = Events(), Events()
    a = ServerLink(lambda: credentials["a"], first, CODEC)
    b = ServerLink(lambda: credentials["b"], second, CODEC)
    credentials: dict[str, Credential | None] = {
        "a": await rig.credential("a", (ROOM, "ops")),
        "b": await rig.credential("b"),
    }
    async with running(a), running(b):
        await first.wait(LinkUp)
        await second.wait(LinkUp)
        up = first.of(LinkUp)[0]
        assert isinstance(up, LinkUp) and up.rooms == (ROOM, "ops")
        assert isinstance(first.seen[0], LinkConnecting)
        assert a.online and a.connects == 1

        a.start_stream(7, ROOM, "normal")
        await first.wait(StreamGranted)
        granted = first.of(StreamGranted)[0]
        assert isinstance(granted, StreamGranted) and granted.request == 7
        await second.wait(p.OnStreamStart)
        a.send_audio(granted.stream_id, b"\xf8\xff\xfe")
        await second.wait(p.AudioPacket)

        b.start_stream(1, ROOM, "normal")
        await second.wait(StreamRefused)
        refused = second.of(StreamRefused)[0]
        assert isinstance(refused, StreamRefused)
        assert (refused.request, refused.reason, refused.talker) == (1, "busy", "a")

        a.stop_stream(granted.stream_id, ROOM)
        await second.wait(p.OnStreamStop)


async def test_link_start_stream_while_offline_is_refused_at_once() -> None:
    events = Events()
    link = ServerLink(lambda: None, events, CODEC)
    link.start_stream(3, ROOM, "normal")
    assert len(events.seen) == 1
    refused = events.seen[0]
    assert isinstance(refused, StreamRefused) and (refused.request, refused.reason) == (
        3,
        "offline",
    )


async def test_link_without_a_credential_waits_and_wakes_when_one_is_stored(rig: Rig) -> None:
    events = Events()
    credential: list[Credential] = []
    link = ServerLink(lambda: credential[0] if credential else None, events, CODEC)
    async with running(link):
        await eventually(lambda: link.paused)
        assert events.seen == []  # no credential: not even trying, until woken
        credential.append(await rig.credential("gate-3"))
        link.wake()
        await events.wait(LinkUp)


async def test_link_retries_until_the_server_is_there_and_wake_skips_the_wait(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    await rig.start_server()
    credential = await rig.credential("gate-3")
    await rig.stop_server()  # the port is remembered: the same server comes back on it
    events = Events()
    # A back-off far longer than the test: only wake() can bring the retry forward.
    settings = LinkSettings(backoff_initial=600.0, backoff_max=600.0)
    link = ServerLink(lambda: credential, events, CODEC, settings)
    try:
        async with running(link):
            await events.wait(LinkConnecting)
            await eventually(lambda: "cannot reach the server" in link.last_error)
            await rig.start_server()
            link.wake()
            await events.wait(LinkUp)
            await rig.stop_server()
            await events.wait(LinkDown)
            down = events.of(LinkDown)[0]
            assert isinstance(down, LinkDown) and "connection closed" in down.reason
    finally:
        await rig.close()


async def test_link_with_a_revoked_credential_stops_trying(rig: Rig) -> None:
    credential = await rig.credential("gate-3")
    rig.registry.revoke_device(credential.device_name)
    events = Events()
    link = ServerLink(lambda: credential, events, CODEC, LinkSettings(backoff_initial=0.01))
    async with running(link):
        await events.wait(CredentialRefused)
        # The core decided: refused for good, no retry; the link waits for wake() alone.
        assert link.core.result == "refused" and link.core.retry_delay() is None
        await eventually(lambda: link.paused)
        assert len(events.of(LinkConnecting)) == 1 and link.connects == 0
        assert "not authorized" in link.last_error


# --------------------------------------------------------------------------- what an outage logs


REASON = "cannot reach the server: Connect call failed"


def test_an_outage_says_the_first_failure_then_sums_up_at_a_falling_rate() -> None:
    outage = Outage()
    assert outage.failed(100.0, REASON) == REASON
    assert [outage.failed(100.0 + t, REASON) for t in (0.2, 0.6, 1.4, 3.0, 7.0)] == [None] * 5
    assert outage.failed(110.5, REASON) == (
        f"still no connection after 10 s: 7 attempts in the last 10 s failed ({REASON})"
    )
    # The next summary is 30 s after that one, then 60 s, then every 5 min.
    assert outage.failed(140.0, REASON) is None
    assert outage.failed(141.0, REASON) == (
        f"still no connection after 41 s: 2 attempts in the last 30 s failed ({REASON})"
    )
    assert outage.failed(200.0, REASON) is None
    assert outage.failed(201.0, REASON) is not None
    for start in (501.0, 801.0):
        assert outage.failed(start - 1, REASON) is None
        line = outage.failed(start, REASON)
        assert line is not None and "2 attempts in the last 5 min failed" in line
    assert outage.online(812.0) == "back after 11 min 52 s (15 attempts failed)"
    assert outage.online(813.0) is None  # said once


def test_a_new_kind_of_failure_is_said_at_once_and_a_loss_starts_the_clock() -> None:
    outage = Outage()
    assert outage.lost(50.0, "connection closed (1001)") == (
        "connection lost: connection closed (1001)"
    )
    assert outage.failed(50.2, REASON) == REASON  # why it does not come back
    assert outage.failed(51.0, REASON) is None
    assert outage.failed(52.0, "no answer from the server") == "no answer from the server"
    assert outage.failed(53.0, REASON) is None  # alternating kinds are not said again
    assert outage.failed(54.0, "no answer from the server") is None
    assert outage.online(54.5) == "back after 4.5 s (5 attempts failed)"
    # A fresh outage says its first failure again.
    assert outage.failed(60.0, REASON) == REASON
    assert outage.online(60.5) == "back after 0.5 s (1 attempt failed)"
    outage.lost(70.0, "connection closed (1001)")
    assert outage.online(70.2) == "back after 0.2 s"  # at the first attempt


def test_an_ended_outage_says_nothing_when_the_link_comes_up() -> None:
    outage = Outage()
    assert outage.online(1.0) is None
    outage.failed(2.0, REASON)
    outage.end()  # the credential was given up
    assert outage.online(3.0) is None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.04, "0.0 s"), (4.25, "4.2 s"), (42.4, "42 s"), (60, "1 min"), (200, "3 min 20 s"),
     (3600, "1 h"), (7500, "2 h 5 min")],
)  # fmt: skip
def test_durations(seconds: float, text: str) -> None:
    assert duration(seconds) == text
