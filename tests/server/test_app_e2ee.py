"""End-to-end encrypted rooms end to end: the real server on 127.0.0.1, real websockets clients,
the registry as the key authority's mailbox (its changes made from another connection, as the
authority's and the admin's processes make them), and ``pttd server`` itself for the admin."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from channel_client import Client, Connect, settle
from waits import TIMEOUT, eventually
from websockets.asyncio.client import connect

from pttd.e2ee.sframe import CipherSuite, Receiver, Sender
from pttd.server.app import RoomServer
from pttd.server.registry import MemberInfo, Registry
from pttd.wire import messages as p

LoggedOn = Callable[..., Any]
SFRAME = p.CodecHeader(sframe_suite=CipherSuite.AES_128_CTR_HMAC_SHA256_80)
ALICE_KEY = "YWxpY2UtaWRlbnRpdHktcHVibGlj"  # public identity keys, base64url
BOB_KEY = "Ym9iLWlkZW50aXR5LXB1YmxpYw"
PTTD = [sys.executable, "-m", "pttd.cli"]


async def sframe_client(
    connect_client: Connect, user: str, rooms: tuple[str, ...], key: str
) -> tuple[Client, p.Response]:
    client: Client = await connect_client()
    answer = await client.logon(rooms, username=user, password=f"{user}-secret", identity_key=key)
    assert answer.success, answer
    return client, answer


async def start(client: Client, room: str, header: p.CodecHeader) -> p.Response:
    return await client.request(lambda seq: p.StartStream(header, 20, seq=seq, channel=room))


# ---------------------------------------------------------------------------- logon


async def test_a_channel_api_client_is_told_it_cannot_join_an_encrypted_room(
    connect_client: Connect, registry: Registry
) -> None:
    registry.set_encrypted("beta", True)
    a = await connect_client()
    refused = await a.logon(("alpha", "beta"), username="alice", password="alice-secret")
    assert (refused.error, refused.reason) == (p.NOT_AUTHORIZED, p.REASON_ENCRYPTED_ROOM)
    await a.sync()
    assert a.events == []  # no status, no key, no talk: nothing joined
    # The credential is good, and a clear room is as it was.
    answer = await a.logon(("alpha",), username="alice", password="alice-secret")
    assert answer.success and answer.encrypted is None
    status = await a.next_of(p.OnChannelStatus)
    assert status == p.OnChannelStatus("alpha", "online", 1)
    assert registry.members()[0] == MemberInfo("user", "alice", ("alpha", "beta"), None)


async def test_an_sframe_client_gets_its_room_key_at_logon_and_new_ones_live(
    connect_client: Connect, registry: Registry
) -> None:
    registry.set_encrypted("beta", True)
    registry.publish_room_keys("beta", [("alice", 1, "YWxpY2UtMQ")])  # sealed before she came
    a, answer = await sframe_client(connect_client, "alice", ("beta", "alpha"), ALICE_KEY)
    assert answer.encrypted == ("beta",)
    assert [await a.next() for _ in range(3)] == [
        p.OnRoomKey("beta", "YWxpY2UtMQ"),
        p.OnChannelStatus("beta", "online", 1, encrypted=True),
        p.OnChannelStatus("alpha", "online", 1),
    ]
    # The identity key she logged on with waits in the registry for the authority.
    assert registry.members()[0] == MemberInfo("user", "alice", ("alpha", "beta"), ALICE_KEY)
    b, answer = await sframe_client(connect_client, "bob", ("beta",), BOB_KEY)  # not approved
    assert answer.encrypted == ("beta",)
    assert await b.next() == p.OnChannelStatus("beta", "online", 2, encrypted=True)
    assert await a.next() == p.OnChannelStatus("beta", "online", 2, encrypted=True)
    a_mark, b_mark = a.mark(), b.mark()
    with Registry(registry.path) as authority:  # the key authority: another process
        assert [(m.name, m.identity_key) for m in authority.members()[:2]] == [
            ("alice", ALICE_KEY),
            ("bob", BOB_KEY),
        ]
        authority.publish_room_keys("beta", [("alice", 2, "YWxpY2UtMg"), ("bob", 2, "Ym9iLTI")])
    assert await a.wait_for(p.OnRoomKey, since=a_mark) == p.OnRoomKey("beta", "YWxpY2UtMg")
    assert await b.wait_for(p.OnRoomKey, since=b_mark) == p.OnRoomKey("beta", "Ym9iLTI")
    await settle(a, b)
    assert a.events[a_mark:] == [p.OnRoomKey("beta", "YWxpY2UtMg")]  # hers only, once
    assert b.events[b_mark:] == [p.OnRoomKey("beta", "Ym9iLTI")]
    assert registry.room_key_epochs("beta") == {"alice": 2, "bob": 2}


# ---------------------------------------------------------------------------- talk


async def test_clear_talk_and_text_are_refused_and_sframe_audio_is_relayed_byte_for_byte(
    connect_client: Connect, registry: Registry
) -> None:
    registry.set_encrypted("beta", True)
    base_key = bytes(range(32, 48))  # what alice's room key would open to
    a, _ = await sframe_client(connect_client, "alice", ("alpha", "beta"), ALICE_KEY)
    b, _ = await sframe_client(connect_client, "bob", ("alpha", "beta"), BOB_KEY)
    clear = await a.start("beta")
    assert (clear.error, clear.reason) == (p.FAILED_TO_START_STREAM, p.REASON_ENCRYPTED_ROOM)
    sealed_in_clear = await start(a, "alpha", SFRAME)
    assert (sealed_in_clear.error, sealed_in_clear.reason) == (
        p.FAILED_TO_START_STREAM,
        p.REASON_CLEAR_ROOM,
    )
    text = await a.request(lambda seq: p.SendTextMessage("beta", "in clear?", seq=seq))
    assert (text.error, text.reason) == (p.NOT_AUTHORIZED, p.REASON_ENCRYPTED_ROOM)
    await settle(a, b)
    assert not b.of(p.OnStreamStart) and not b.of(p.OnTextMessage)
    granted = await start(a, "beta", SFRAME)
    assert granted.success and granted.stream_id is not None
    heard = await b.next_of(p.OnStreamStart)
    assert (heard.stream_id, heard.channel, heard.from_, heard.codec_header) == (
        granted.stream_id,
        "beta",
        "alice",
        SFRAME,
    )
    sender = Sender(CipherSuite.AES_128_CTR_HMAC_SHA256_80, kid=1, base_key=base_key)
    voice = [bytes([0xFC, i]) + b"opus" * 10 for i in range(5)]
    sent = [sender.encrypt(frame) for frame in voice]
    for payload in sent:
        await a.send_audio(granted.stream_id, payload)
    got = [await b.next_of(p.AudioPacket) for _ in sent]
    assert [(x.stream_id, x.packet_id) for x in got] == [(granted.stream_id, i) for i in range(5)]
    assert [x.payload for x in got] == sent  # the server touched no byte of it
    receiver = Receiver(CipherSuite.AES_128_CTR_HMAC_SHA256_80)
    receiver.add_key(1, base_key)
    assert [receiver.decrypt(x.payload).plaintext for x in got] == voice
    assert (await a.stop(granted.stream_id)).success
    assert (await b.next_of(p.OnStreamStop)).stream_id == granted.stream_id
    assert (await b.start("alpha")).success  # clear talk in the clear room, as ever


async def test_a_room_an_admin_turns_encrypted_ends_the_clear_talk_and_lets_clear_clients_go(
    logged_on: LoggedOn, connect_client: Connect, registry: Registry
) -> None:
    carol = await logged_on("carol")  # a Channel-API client, in alpha
    a, _ = await sframe_client(connect_client, "alice", ("alpha",), ALICE_KEY)
    talk = await carol.start("alpha")
    assert talk.success and talk.stream_id is not None
    await a.next_of(p.OnStreamStart)
    carol_mark, a_mark = carol.mark(), a.mark()
    with Registry(registry.path) as admin:
        admin.set_encrypted("alpha", True)
        admin.publish_room_keys("alpha", [("alice", 1, "YWxwaGEtYWxpY2U")])
    stop = p.OnStreamStop(talk.stream_id, "alpha", p.REASON_ENCRYPTED_ROOM)
    assert await carol.wait_for(p.OnChannelStatus, since=carol_mark) == p.OnChannelStatus(
        "alpha", "offline", 0
    )
    assert carol.events[carol_mark:] == [stop, p.OnChannelStatus("alpha", "offline", 0)]
    await a.wait_for(p.OnRoomKey, since=a_mark)
    assert a.events[a_mark:] == [
        stop,
        p.OnChannelStatus("alpha", "online", 1, encrypted=True),
        p.OnRoomKey("alpha", "YWxwaGEtYWxpY2U"),
    ]
    # carol is still connected, in no room; her late packets go nowhere, quietly.
    await carol.send_audio(talk.stream_id, b"\x01" * 20)
    assert (await carol.start("alpha")).error == p.NOT_AUTHORIZED
    await settle(carol, a)
    assert not carol.of(p.OnError) and not a.packets()
    assert (await start(a, "alpha", SFRAME)).success


# ---------------------------------------------------------------------------- the admin


def pttd(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [*PTTD, "server", *args], input=stdin, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_the_admin_commands_and_a_clear_room_work_as_before_beside_an_encrypted_one(
    server: RoomServer, registry: Registry
) -> None:
    """`pttd server` against the file the server runs on, with beta encrypted: a room and a
    user added, a device paired and revoked, all as before; and the Channel API's frames are
    the Channel API's, without a field more."""
    registry.set_encrypted("beta", True)
    db = ["--db", registry.path]
    assert (await asyncio.to_thread(pttd, "room", "add", "delta", *db)) == "room delta added\n"
    assert (await asyncio.to_thread(pttd, "room", "list", *db)).splitlines() == [
        "alpha",
        "beta (encrypted)",
        "delta",
        "gamma",
    ]
    added = await asyncio.to_thread(
        pttd, "user", "add", "dave", "--room", "delta", *db, stdin="pw\n"
    )
    assert added == "user dave added to delta\n"
    assert registry.encrypted_rooms() == {"beta"}  # what the admin made is clear
    logon = {
        "command": "logon",
        "seq": 1,
        "username": "dave",
        "password": "pw",
        "channels": ["delta"],
    }
    talk = {
        "command": "start_stream",
        "seq": 2,
        "type": "audio",
        "codec": "opus",
        "codec_header": "gLsBFA==",
        "packet_duration": 20,
        "channel": "delta",
    }
    async with connect(server.url, compression=None) as ws:  # a plain Channel-API client
        await ws.send(json.dumps(logon))
        answer = json.loads(await ws.recv())
        assert set(answer) == {"seq", "success", "refresh_token"} and answer["success"] is True
        assert json.loads(await ws.recv()) == {
            "command": "on_channel_status",
            "channel": "delta",
            "status": "online",
            "users_online": 1,
        }
        await ws.send(json.dumps(talk))
        assert json.loads(await ws.recv()) == {"seq": 2, "success": True, "stream_id": 1}
    await eventually(lambda: not server.core.sessions, what="dave's connection gone")
    code = json.loads(
        await asyncio.to_thread(
            pttd, "pair-code", "--room", "delta", "--json", "--url", server.url, *db
        )
    )
    radio = await Client.connect(server.url)
    try:
        paired = await radio.request(lambda seq: p.Pair(code["code"], "radio-d", seq=seq))
        assert paired.auth_token and paired.channels == ("delta",)
        answer = await radio.logon(("delta",), auth_token=paired.auth_token)
        assert answer.success and answer.encrypted is None
        assert await radio.next() == p.OnChannelStatus("delta", "online", 1)
        await asyncio.to_thread(pttd, "device", "revoke", "radio-d", *db)
        assert (await radio.next_of(p.OnError)).error == p.NOT_AUTHORIZED
        await asyncio.wait_for(radio.closed.wait(), TIMEOUT)
        assert (radio.ws.close_code, radio.ws.close_reason) == (1008, "revoked")
    finally:
        await radio.close()
