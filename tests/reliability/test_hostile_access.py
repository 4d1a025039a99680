"""Anyone on the internet can reach the server's port: nobody gets into a room, a stream or a
credential that is not theirs.

* pairing brute force is rate-limited per address, however many connections it uses;
* after real pairings over the wire and logons of every kind, the database holds no token, no
  code and no password in clear (the file, its WAL, and a full SQL dump are searched);
* a device revoked while it talks is cut off: the talk ends, its microphone closes, it shows
  unpaired and stops reconnecting, and its token and refresh tokens are refused;
* no client can put audio into a room it is not in or a stream it does not own;
* half-open connections (a slow-loris handshake) do not hold up anyone else;
* TLS is verified by default: a server whose CA the device was not given is refused, and the
  same server is accepted once the CA is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import sqlite3
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import trustme
from channel_client import Client, settle
from faultproxy import FaultProxy
from relkit import (
    FAST_LINK,
    PASSWORDS,
    code_spellings,
    fast_server_settings,
    hear_stream,
    pair_over_wire,
    radios_stopped,
    secret_fragments,
    start_radio,
    user_client,
)
from waits import eventually
from websockets.exceptions import ConnectionClosed

from pttd.errors import PairingFailed
from pttd.radio.link import pair
from pttd.radio.machine import Link, LinkConnecting
from pttd.server.app import RoomServer, ServerSettings
from pttd.server.registry import Registry
from pttd.wire import messages as p

# ---------------------------------------------------------------------------- brute force


async def try_code(url: str, code: str) -> p.Response:
    client = await Client.connect(url)
    try:
        return await client.request(lambda seq: p.Pair(code, "brute", seq=seq))
    finally:
        await client.close()


async def test_pairing_brute_force_over_many_connections_is_rate_limited(
    registry: Registry, server: RoomServer, settings: ServerSettings
) -> None:
    answers = [await try_code(server.url, f"{i:04d}-0000-0000") for i in range(25)]
    reasons = [a.reason for a in answers]
    limit = settings.auth_failures
    assert reasons[:limit] == [p.REASON_INVALID_CODE] * limit
    assert reasons[limit:] == [p.REASON_RATE_LIMITED] * (25 - limit)
    good = registry.create_pair_code(["alpha"]).code
    assert (await try_code(server.url, good)).reason == p.REASON_RATE_LIMITED
    assert registry.redeem_pair_code(good, "legit").device_name == "legit"  # not spent
    assert len(server.core.auth_failures) == 1  # one address, one entry: bounded


@pytest.mark.parametrize("settings", [fast_server_settings(auth_window=0.5)])
async def test_failures_from_many_addresses_are_forgotten(
    server: RoomServer, settings: ServerSettings
) -> None:
    """The limiter is per address, and what it remembers stays bounded: an attacker trying
    once from each of many addresses (an IPv6 prefix has plenty) must not grow it without end.
    Loopback has 16 million addresses: 200 of them, one wrong code each."""

    async def from_address(n: int) -> p.Response:
        host = f"127.0.{n // 250}.{n % 250 + 2}"
        client = await Client.connect(server.url, local_addr=(host, 0))
        try:
            return await client.request(lambda seq: p.Pair("0000-0000-0000", "x", seq=seq))
        finally:
            await client.close()

    answers = []
    for batch in range(0, 200, 20):
        answers += await asyncio.gather(*(from_address(n) for n in range(batch, batch + 20)))
    assert {a.reason for a in answers} == {p.REASON_INVALID_CODE}  # per address: none blocked
    remembered = len(server.core.auth_failures)
    # A real timer: the server's window runs on its loop's clock (the window itself is checked
    # on a made-up clock in tests/server/test_session.py).
    await asyncio.sleep(settings.auth_window * 2)
    await from_address(1000)  # one more failure, a window later
    assert len(server.core.auth_failures) < 20, f"{remembered} remembered before"


async def test_password_guessing_from_a_shared_address_does_not_lock_devices_out(
    tmp_path: Path, registry: Registry, server: RoomServer, settings: ServerSettings
) -> None:
    """Radios at a site share its public address with everyone else there. Someone there
    guessing passwords gets the address blocked for password logons; a radio that reconnects
    meanwhile (its link dropped) must still log on with its token, not be told "not
    authorized" and take that for a revoked credential (it would stop trying for good)."""
    async with FaultProxy(server.port) as proxy:
        credential = await pair_over_wire(server.url, registry, "radio-site")
        radio = await start_radio(tmp_path, credential, url=proxy.url)
        async with radios_stopped([radio]):
            await radio.wait_online()
            for _ in range(settings.auth_failures):  # from the same address (127.0.0.1)
                guess = await Client.connect(server.url)
                answer = await guess.logon(("alpha",), username="alice", password="guess")
                assert answer.error == p.NOT_AUTHORIZED
                await guess.close()
            right = await Client.connect(server.url)  # the block holds for passwords …
            answer = await right.logon(("alpha",), username="alice", password=PASSWORDS["alice"])
            assert answer.error == p.NOT_AUTHORIZED
            await right.close()
            connects = radio.connects
            proxy.drop()  # … and the radio's link drops and comes back
            await radio.wait_reconnected(connects)
            assert radio.machine.link is Link.ONLINE and radio.machine.paired


# ---------------------------------------------------------------------------- secrets at rest


def database_text(path: Path) -> str:
    """Everything in the registry: the raw bytes of the file, its WAL and shared memory (as
    Latin-1, so any byte sequence shows), and a full SQL dump."""
    raw = "".join(
        f.read_bytes().decode("latin-1")
        for f in (path, Path(f"{path}-wal"), Path(f"{path}-shm"))
        if f.exists()
    )
    with contextlib.closing(sqlite3.connect(path)) as db:
        dump = "\n".join(db.iterdump())
    return raw + "\n" + dump


async def test_after_real_use_the_database_holds_only_hashes(
    registry: Registry, server: RoomServer
) -> None:
    url = server.url
    secrets: dict[str, set[str]] = {}
    # Pairings over the wire, the codes typed in different ways.
    tokens = []
    for i, style in enumerate((str.lower, lambda c: c.replace("-", ""), str.upper)):
        code = (await asyncio.to_thread(registry.create_pair_code, ["alpha"])).code
        secrets[f"code {i}"] = code_spellings(code)
        credential = await pair(url, style(code), f"radio-{i}", FAST_LINK)
        tokens.append(credential.auth_token)
        secrets[f"token {i}"] = {credential.auth_token}
    unused = (await asyncio.to_thread(registry.create_pair_code, ["beta"])).code
    secrets["unused code"] = code_spellings(unused)
    # Logons of every kind; every refresh token handed out is a secret too.
    refresh = []
    alice = await Client.connect(url)
    answer = await alice.logon(("alpha",), username="alice", password=PASSWORDS["alice"])
    assert answer.success and answer.refresh_token
    refresh.append(answer.refresh_token)
    for token in tokens:
        device = await Client.connect(url)
        answer = await device.logon(("alpha",), auth_token=token)
        assert answer.success and answer.refresh_token
        refresh.append(answer.refresh_token)
        await device.close()
    again = await Client.connect(url)
    answer = await again.logon(("alpha",), refresh_token=refresh[0])
    assert answer.success and answer.refresh_token
    refresh.append(answer.refresh_token)
    for i, token in enumerate(refresh):
        secrets[f"refresh {i}"] = {token}
    secrets["password"] = set(PASSWORDS.values())
    with Registry(registry.path) as admin:  # the admin revokes one, from another process
        admin.revoke_device("radio-0")
    await alice.close()
    await again.close()

    text = database_text(Path(registry.path))
    for what, values in secrets.items():
        for value in values:
            leaked = [f for f in secret_fragments(value, 12) if f in text]
            assert not leaked, f"{what} is in the database in clear"
    # The dump is the real thing: the hashes of what was used are in it.
    for token in tokens[1:]:
        assert hashlib.sha256(token.encode()).hexdigest() in text
    assert "scrypt$" in text


# ---------------------------------------------------------------------------- revocation


async def test_a_device_revoked_while_talking_is_cut_off_for_good(
    tmp_path: Path, registry: Registry, server: RoomServer
) -> None:
    credential = await pair_over_wire(server.url, registry, "radio-stolen")
    # A refresh token the device could have kept from an earlier logon.
    probe = await Client.connect(server.url)
    first = await probe.logon(("alpha",), auth_token=credential.auth_token)
    assert first.success and first.refresh_token
    await probe.close()
    radio = await start_radio(tmp_path, credential)
    listener = await user_client(server.url, "alice", PASSWORDS["alice"])
    async with radios_stopped([radio]):
        await radio.wait_online()
        radio.sim.button.press()
        start = await hear_stream(listener, radio.name)
        with Registry(registry.path) as admin:  # `pttd server device revoke`, another process
            admin.revoke_device("radio-stolen")
        stop = await listener.next_of(
            p.OnStreamStop, where=lambda s: s.stream_id == start.stream_id
        )
        assert stop.reason == p.REASON_DISCONNECTED
        await radio.wait_mic_closed()
        await eventually(lambda: radio.machine.link is Link.UNPAIRED, what="shows unpaired")
        # It does not try again: the link waits for a new pairing, with no timer to wake it.
        await eventually(lambda: radio.sim.device.link.paused, what="waits for a new pairing")
        assert radio.machine.link is Link.UNPAIRED
        radio.sim.button.release()
    for creds in ({"auth_token": credential.auth_token}, {"refresh_token": first.refresh_token}):
        client = await Client.connect(server.url)
        assert (await client.logon(("alpha",), **creds)).error == p.NOT_AUTHORIZED
        await client.close()
    await listener.close()


# ---------------------------------------------------------------------------- injection


async def test_no_audio_into_a_room_not_joined_or_a_stream_not_owned(
    registry: Registry, server: RoomServer
) -> None:
    url = server.url
    alice = await user_client(url, "alice", PASSWORDS["alice"])  # talks in alpha
    bob = await user_client(url, "bob", PASSWORDS["bob"])  # listens in alpha
    outsider = await user_client(url, "mallory", PASSWORDS["mallory"], ("beta",))
    code = registry.create_pair_code(["alpha"]).code
    insider = await Client.connect(url)  # a paired device in the same room, not talking
    token = (await insider.request(lambda seq: p.Pair(code, "insider", seq=seq))).auth_token
    assert (await insider.logon(("alpha",), auth_token=token)).success
    # The outsider cannot even join alpha, nor talk or text there.
    sneak = await Client.connect(url)
    answer = await sneak.logon(("alpha",), username="mallory", password=PASSWORDS["mallory"])
    assert answer.error == p.NOT_AUTHORIZED
    await sneak.close()
    assert (await outsider.start("alpha")).error == p.NOT_AUTHORIZED
    answer = await outsider.request(lambda seq: p.SendTextMessage("alpha", "hi", seq=seq))
    assert answer.error == p.NOT_AUTHORIZED

    answer = await alice.start("alpha")
    assert answer.stream_id is not None
    victim = answer.stream_id
    mine = await outsider.start("beta")  # a stream of its own, in its own room
    assert mine.stream_id is not None
    marker = struct.Struct(">I")
    for n in range(20):
        await alice.send_audio(victim, marker.pack(n) + bytes(20))
        for client in (outsider, insider) if n < 8 else ():  # more is a flood: see below
            frame = p.AudioPacket(victim, n, b"\xee" * 24).encode()
            await client.ws.send(frame)  # into alice's stream
            await client.ws.send(p.AudioPacket(victim + 1 + n, 0, b"\xee" * 24).encode())
        await outsider.send_audio(mine.stream_id, b"\xdd" * 24)  # relayed to beta only
    got: list[int] = []
    while len(got) < 20:
        event = await bob.next()
        if isinstance(event, p.AudioPacket):
            assert event.stream_id == victim and event.payload[0] not in (0xEE, 0xDD)
            got.append(marker.unpack_from(event.payload)[0])
        else:
            assert not isinstance(event, p.OnTextMessage), event
            if isinstance(event, p.OnStreamStart):
                assert event.stream_id == victim, event  # alice's talk, and no other
    assert got == list(range(20))
    await settle(alice, outsider, insider, bob)  # what their packets caused has reached bob
    assert not [e for e in bob.drain() if isinstance(e, p.AudioPacket)]
    for client in (outsider, insider):
        errors = [e.error for e in client.drain() if isinstance(e, p.OnError)]
        assert errors and set(errors) == {p.INVALID_AUDIO_PACKET}
    # Nor can they end the talk.
    for client in (outsider, insider):
        answer = await client.request(lambda seq: p.StopStream(victim, seq=seq))
        assert answer.error == p.FAILED_TO_STOP_STREAM
    await alice.send_audio(victim, marker.pack(99) + bytes(20))
    packet = await bob.next_of(p.AudioPacket)
    assert marker.unpack_from(packet.payload)[0] == 99
    for client in (alice, bob, outsider, insider):
        await client.close()


# ---------------------------------------------------------------------------- floods


@pytest.mark.parametrize("kind", ["control", "audio"])
async def test_a_flood_costs_one_warning_and_one_close(
    server: RoomServer, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    """A flooder is cut off once: one log line, one error, one close, however many frames it
    had in flight (each of them used to cost a WARNING line, an error frame and a close task:
    a few thousand lines in the server's log per flooding connection)."""
    flooder = await user_client(server.url, "bob", PASSWORDS["bob"])
    alice = await user_client(server.url, "alice", PASSWORDS["alice"])
    frame: str | bytes = (
        '{"command":"stop_stream","stream_id":1}' if kind == "control" else b"\x01" + bytes(20)
    )
    with caplog.at_level(logging.INFO, logger="pttd.server.app"):
        with contextlib.suppress(ConnectionClosed):
            for _ in range(3000):
                await flooder.ws.send(frame)
        await asyncio.wait_for(flooder.closed.wait(), 10)
        assert flooder.ws.close_code == 1008
        answer = await alice.start()  # everyone else is served as before
        assert answer.success
    floods = [r for r in caplog.records if "flood" in r.getMessage()]
    assert len(floods) == 1, f"{len(floods)} flood warnings for one flooder"
    told = [e for e in flooder.drain() if isinstance(e, p.OnError)]
    assert len([e for e in told if e.error in (p.INVALID_REQUEST, p.FAILED_TO_SEND_DATA)]) <= 1
    assert not server._tasks or len(server._tasks) <= 2
    await alice.close()
    await flooder.close()


# ---------------------------------------------------------------------------- slow reader


@pytest.mark.parametrize(
    "settings",
    [
        fast_server_settings(
            ping_interval=60.0, ping_timeout=60.0, max_write_buffer=64 * 1024, max_packet_rate=0
        )
    ],
)
async def test_a_listener_that_stops_reading_is_dropped_not_waited_for(
    registry: Registry, server: RoomServer, settings: ServerSettings
) -> None:
    """A member that stops reading (a hung client, or one that wants the server to buffer
    for it without end) is dropped once it is ``max_write_buffer`` behind; the talk goes on."""
    url = server.url
    alice = await user_client(url, "alice", PASSWORDS["alice"])
    bob = await user_client(url, "bob", PASSWORDS["bob"])
    code = registry.create_pair_code(["alpha"]).code
    hung = await Client.connect(url)
    token = (await hung.request(lambda seq: p.Pair(code, "hung", seq=seq))).auth_token
    assert (await hung.logon(("alpha",), auth_token=token)).success
    hung.ws.transport.pause_reading()  # reads nothing more, from now on
    answer = await alice.start()
    assert answer.stream_id is not None
    payload = bytes(p.MAX_BINARY_FRAME - p.AUDIO_HEADER_SIZE - 4)
    marker = struct.Struct(">I")
    heard: list[int] = []

    def hung_is_gone() -> bool:
        return not any(s.name == "hung" for s in server.core.sessions.values())

    sent = 0
    async with asyncio.timeout(60):  # 50 packets of 8 KiB at a time until the server lets go
        while not hung_is_gone():
            for _ in range(50):
                await alice.send_audio(answer.stream_id, marker.pack(sent) + payload)
                sent += 1
            while len(heard) < sent:  # bob keeps up
                packet = await bob.next_of(p.AudioPacket)
                heard.append(marker.unpack_from(packet.payload)[0])
    assert heard == list(range(sent))  # bob lost nothing
    assert server.core.directory.room("alpha").users_online == 2
    hung.ws.transport.resume_reading()  # it finds its connection gone
    await asyncio.wait_for(hung.closed.wait(), 10)
    await alice.send_audio(answer.stream_id, marker.pack(sent) + payload)
    assert marker.unpack_from((await bob.next_of(p.AudioPacket)).payload)[0] == sent
    for client in (alice, bob, hung):
        await client.close()


# ---------------------------------------------------------------------------- slow loris


async def test_half_open_handshakes_do_not_hold_up_others(server: RoomServer) -> None:
    writers = []
    for _ in range(50):
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgr")  # and never the rest
        writers.append(writer)
    try:
        alice = await user_client(server.url, "alice", PASSWORDS["alice"])
        bob = await user_client(server.url, "bob", PASSWORDS["bob"])
        answer = await alice.start()
        assert answer.stream_id is not None
        await alice.send_audio(answer.stream_id, b"\x01" * 30)
        packet = await bob.next_of(p.AudioPacket)
        assert packet.stream_id == answer.stream_id
        await alice.close()
        await bob.close()
    finally:
        for writer in writers:
            writer.transport.abort()


# ---------------------------------------------------------------------------- TLS


@dataclass
class TlsServer:
    server: RoomServer
    ca_file: Path


@pytest.fixture
async def tls_server(tmp_path: Path, registry: Registry) -> AsyncIterator[TlsServer]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file = (tmp_path / n for n in ("cert.pem", "key.pem", "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(cert_file)
    cert.private_key_pem.write_to_path(key_file)
    ca.cert_pem.write_to_path(ca_file)
    settings = fast_server_settings(tls_cert=cert_file, tls_key=key_file)
    async with RoomServer(registry, settings) as server:
        assert server.url.startswith("wss://")
        yield TlsServer(server, ca_file)


async def test_tls_is_verified_by_default(
    tmp_path: Path, registry: Registry, tls_server: TlsServer
) -> None:
    url = tls_server.server.url
    code = registry.create_pair_code(["alpha"]).code
    with pytest.raises(PairingFailed) as refused:
        await pair(url, code, "radio-tls", FAST_LINK)  # no CA given: the server is a stranger
    assert refused.value.reason == "tls"
    assert "not trusted" in str(refused.value)
    trusting = replace(FAST_LINK, ca_file=str(tls_server.ca_file))
    credential = await pair(url, code, "radio-tls", trusting)  # the code was not spent
    # A device with that credential but without the CA in its config never logs on …
    stranger = await start_radio(tmp_path / "no-ca", credential)
    async with radios_stopped([stranger]):
        await eventually(
            lambda: "not trusted" in stranger.sim.device.link.last_error, what="TLS refusal shown"
        )
        attempts = stranger.seen(LinkConnecting)
        await eventually(lambda: stranger.seen(LinkConnecting) >= attempts + 2, what="trying again")
        assert stranger.connects == 0 and not stranger.online  # every attempt refused
    # … and with its CA configured it does.
    trusted = await start_radio(tmp_path / "ca", credential, ca_file=str(tls_server.ca_file))
    async with radios_stopped([trusted]):
        await trusted.wait_online()
