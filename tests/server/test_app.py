"""The room server end to end: a real server on 127.0.0.1, real websockets clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

import pytest
from channel_client import Client, Connect, pair_device, settle
from waits import eventually
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from pttd.server.app import RoomServer, ServerSettings
from pttd.server.registry import MAX_REFRESH_FAMILIES, Registry
from pttd.server.session import EMERGENCY_PREEMPTIONS, Principal
from pttd.wire import messages as p

LoggedOn = Callable[..., Any]


async def talk(client: Client, room: str | None = None, packets: int = 3) -> int:
    answer = await client.start(room)
    assert answer.success, answer
    assert answer.stream_id is not None
    for i in range(packets):
        await client.send_audio(answer.stream_id, bytes([i + 1]) * 60)
    return answer.stream_id


async def hear(client: Client, stream_id: int, packets: int = 3) -> list[p.AudioPacket]:
    start = await client.next_of(p.OnStreamStart)
    assert start.stream_id == stream_id
    got = [await client.next_of(p.AudioPacket) for _ in range(packets)]
    assert [g.stream_id for g in got] == [stream_id] * packets
    return got


# ---------------------------------------------------------------------------- logon


async def test_logon_with_password_gives_refresh_token_and_channel_status(
    connect_client: Connect,
) -> None:
    a = await connect_client()
    answer = await a.logon(("alpha", "beta"), username="alice", password="alice-secret")
    assert answer.success and answer.refresh_token
    statuses = {(await a.next_of(p.OnChannelStatus)).channel for _ in range(2)}
    assert statuses == {"alpha", "beta"}


async def test_users_online_counts_members(logged_on: LoggedOn) -> None:
    a = await logged_on("alice")
    await logged_on("bob")
    status = await a.next_of(p.OnChannelStatus)
    assert (status.channel, status.status, status.users_online) == ("alpha", "online", 2)


async def test_logon_with_device_token(connect_client: Connect, registry: Registry) -> None:
    token = pair_device(registry, "radio-1")
    c = await connect_client()
    answer = await c.logon(("alpha",), auth_token=token)
    assert answer.success
    status = await c.next_of(p.OnChannelStatus)
    assert status.users_online == 1


async def test_password_checks_run_one_at_a_time_in_one_thread(
    connect_client: Connect, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """scrypt takes 16 MiB a check, and each thread that ran one keeps it: password logons sent
    at once are checked one after another, all in the same thread."""
    lock = threading.Lock()
    running, most, threads = 0, 0, set()
    check = registry.check_password

    def watched(name: str, password: str) -> Any:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
            threads.add(threading.get_ident())
        try:
            return check(name, password)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(registry, "check_password", watched)
    users = ["alice", "bob", "carol", "alice"]
    clients = [await connect_client() for _ in users]
    answers = await asyncio.gather(
        *(
            c.logon(("alpha",), username=u, password=f"{u}-secret")
            for c, u in zip(clients, users, strict=True)
        )
    )
    assert all(a.success for a in answers), answers
    assert (most, len(threads)) == (1, 1)


async def test_logon_with_refresh_token(connect_client: Connect) -> None:
    a = await connect_client()
    first = await a.logon(("alpha",), username="alice", password="alice-secret")
    assert first.refresh_token
    await a.close()
    b = await connect_client()
    again = await b.logon(("alpha",), refresh_token=first.refresh_token)
    assert again.success
    answer = await b.start()
    assert answer.success  # the refreshed logon is a full one


async def test_refresh_tokens_rotate_and_a_replayed_one_revokes_its_family(
    connect_client: Connect,
) -> None:
    async def logon(**creds: str) -> p.Response:
        client = await connect_client()
        answer: p.Response = await client.logon(("alpha",), **creds)
        await client.close()
        return answer

    first = (await logon(username="alice", password="alice-secret")).refresh_token
    assert first
    second = (await logon(refresh_token=first)).refresh_token
    assert second and second != first  # used up, and its successor handed out
    third = (await logon(refresh_token=second)).refresh_token
    assert third
    replay = await logon(refresh_token=first)  # a copy of a used token comes back
    assert (replay.error, replay.refresh_token) == (p.NOT_AUTHORIZED, None)
    assert (await logon(refresh_token=third)).error == p.NOT_AUTHORIZED  # its family is gone
    assert (await logon(username="alice", password="alice-secret")).success


async def test_many_logons_leave_a_bounded_number_of_refresh_rows(
    connect_client: Connect, registry: Registry
) -> None:
    token = pair_device(registry, "radio-1")

    def rows() -> int:
        with contextlib.closing(sqlite3.connect(registry.path)) as db:
            count: int = db.execute("SELECT count(*) FROM refresh_tokens").fetchone()[0]
        return count

    async def logon(**creds: str) -> str:
        client = await connect_client()
        answer = await client.logon(("alpha",), **creds)
        await client.close()
        assert answer.success and answer.refresh_token, answer
        return answer.refresh_token

    before = rows()
    for _ in range(150):  # 300 logons
        refresh = await logon(auth_token=token)  # a device-token logon: a new family
        await logon(refresh_token=refresh)  # a refresh logon: rotated in place
    assert (before, rows()) == (0, MAX_REFRESH_FAMILIES)


async def test_unknown_auth_token_next_to_valid_password_logs_on(connect_client: Connect) -> None:
    c = await connect_client()
    answer = await c.logon(
        ("alpha",), auth_token="eyJhbGciOi.some.jwt", username="bob", password="bob-secret"
    )
    assert answer.success


async def test_single_channel_string_is_accepted(connect_client: Connect) -> None:
    c = await connect_client()
    await c.ws.send(
        json.dumps(
            {
                "command": "logon",
                "seq": 7,
                "auth_token": "x",
                "username": "alice",
                "password": "alice-secret",
                "channel": "beta",
            }
        )
    )
    answer = await c.next_of(p.Response)
    assert answer.seq == 7 and answer.success
    status = await c.next_of(p.OnChannelStatus)
    assert status.channel == "beta"


@pytest.mark.parametrize(
    "creds",
    [
        {"username": "alice", "password": "wrong"},
        {"username": "nobody", "password": "x"},
        {"auth_token": "not-a-token"},
        {"refresh_token": "not-a-token"},
    ],
)
async def test_bad_credentials_are_not_authorized(
    connect_client: Connect, creds: dict[str, str]
) -> None:
    c = await connect_client()
    answer = await c.logon(("alpha",), **creds)
    assert answer.error == p.NOT_AUTHORIZED


async def test_room_not_granted_is_not_authorized(connect_client: Connect) -> None:
    c = await connect_client()
    answer = await c.logon(("gamma",), username="alice", password="alice-secret")
    assert answer.error == p.NOT_AUTHORIZED


async def test_commands_before_logon_are_refused(connect_client: Connect) -> None:
    c = await connect_client()
    answer = await c.start("alpha")
    assert answer.error == p.NOT_LOGGED_IN
    await c.ws.send(p.AudioPacket(1, 0, b"x").encode())
    event = await c.next_of(p.OnError)
    assert event.error == p.NOT_LOGGED_IN


async def test_a_frame_sent_by_hand_keeps_its_answer_from_a_barrier(
    connect_client: Connect,
) -> None:
    """The test client's own barrier never takes the ``seq`` of a frame sent by hand: else the
    answer to that frame (still on its way: the registry is asked first) would pass the barrier
    before the server dealt with the frame, and go unrecorded."""
    c = await connect_client()
    await c.send(json.dumps({"command": "logon", "seq": 1, "channel": "alpha", "auth_token": "?"}))
    await c.send(p.AudioPacket(1, 0, b"x").encode())
    await c.sync()
    got = [(type(e).__name__, getattr(e, "seq", None), e.error) for e in c.events]
    assert got == [("Response", 1, p.NOT_AUTHORIZED), ("OnError", None, p.NOT_LOGGED_IN)]


async def test_listen_only_cannot_talk_but_hears(logged_on: LoggedOn) -> None:
    listener = await logged_on("bob", listen_only=True)
    answer = await listener.start()
    assert answer.error == p.LISTEN_ONLY_CONNECTION
    alice = await logged_on("alice")
    sid = await talk(alice)
    await hear(listener, sid)


# ---------------------------------------------------------------------------- floor and relay


async def test_three_clients_take_turns(logged_on: LoggedOn) -> None:
    a, b, c = [await logged_on(u) for u in ("alice", "bob", "carol")]
    for talker, listeners in ((a, (b, c)), (b, (a, c)), (c, (a, b))):
        sid = await talk(talker, packets=5)
        for listener in listeners:
            got = await hear(listener, sid, packets=5)
            assert [g.packet_id for g in got] == [0, 1, 2, 3, 4]  # the server numbers them
            assert [g.payload[0] for g in got] == [1, 2, 3, 4, 5]
        assert (await talker.stop(sid)).success
        for listener in listeners:
            stop = await listener.next_of(p.OnStreamStop)
            assert stop.stream_id == sid and stop.reason is None
        # No echo to the talker: the stop was answered after its packets were dealt with.
        assert not talker.packets(sid)


async def test_settle_is_a_barrier_for_what_the_server_relays(logged_on: LoggedOn) -> None:
    """The tests' proof that nothing arrived: what one client's frames made the server send
    another has arrived once both have synced (no pause involved)."""
    a = await logged_on("alice")
    b = await logged_on("bob")
    answer = await a.start()
    assert answer.stream_id is not None
    await b.next_of(p.OnStreamStart)
    for round_ in range(20):
        mark = b.mark()
        await a.send_audio(answer.stream_id, bytes([round_]) * 60)
        await settle(a, b)
        assert [x.payload[0] for x in b.packets(since=mark)] == [round_]
    assert (await a.sync()) == a.mark()  # an answer, not an event


async def test_busy_floor_is_refused_with_talker_name(logged_on: LoggedOn) -> None:
    a = await logged_on("alice")
    b = await logged_on("bob")
    await talk(a)
    answer = await b.start()
    assert answer.error == p.FAILED_TO_START_STREAM
    assert (answer.reason, answer.talker) == (p.REASON_BUSY, "alice")


async def test_floor_is_per_room(logged_on: LoggedOn) -> None:
    a = await logged_on("alice", ("alpha", "beta"))
    b = await logged_on("bob", ("alpha", "beta"))
    await talk(a, "alpha")
    answer = await b.start("beta")
    assert answer.success
    answer = await b.start()  # two rooms joined: which one?
    assert answer.error == p.NOT_ENOUGH_PARAMS


@pytest.mark.parametrize("settings", [ServerSettings(max_talk_time=0.3)])
async def test_talk_time_out_ends_stream_for_everyone(logged_on: LoggedOn) -> None:
    a = await logged_on("alice")
    b = await logged_on("bob")
    sid = await talk(a)
    await hear(b, sid)
    for client in (a, b):
        stop = await client.next_of(p.OnStreamStop, timeout=3)
        assert (stop.stream_id, stop.reason) == (sid, p.REASON_TIMEOUT)
    # Packets the talker still had in flight are dropped quietly, not relayed, not errors.
    a_mark, b_mark = a.mark(), b.mark()
    await a.send_audio(sid, b"late")
    await settle(a, b)  # whatever the late packet caused has reached both
    assert not b.packets(since=b_mark)
    assert not a.of(p.OnError, since=a_mark)
    assert (await a.stop(sid)).success  # a late stop of an ended stream is harmless
    assert (await b.start()).success  # the floor is free again


async def test_emergency_preempts_normal_talk(logged_on: LoggedOn, registry: Registry) -> None:
    for user in ("alice", "bob"):
        registry.set_emergency("user", user, True)
    a = await logged_on("alice")
    b = await logged_on("bob")
    c = await logged_on("carol")
    sid = await talk(a)
    answer = await b.start(priority="emergency")
    assert answer.success and answer.stream_id != sid
    for client in (a, c):
        stop = await client.next_of(p.OnStreamStop)
        assert (stop.stream_id, stop.reason) == (sid, p.REASON_PREEMPTED)
    start = await c.next_of(p.OnStreamStart)
    assert (start.stream_id, start.from_, start.priority) == (answer.stream_id, "bob", "emergency")
    # An emergency is not pre-empted by another emergency.
    again = await a.start(priority="emergency")
    assert (again.error, again.talker) == (p.FAILED_TO_START_STREAM, "bob")


async def test_emergency_is_a_grant_rate_limited_and_taken_back_live(
    logged_on: LoggedOn, registry: Registry, server: RoomServer
) -> None:
    registry.set_emergency("user", "bob", True)
    a = await logged_on("alice")
    b = await logged_on("bob")
    c = await logged_on("carol")
    # Without the grant: refused, and the talk goes on.
    sid = await talk(a)
    refused = await c.start(priority="emergency")
    assert (refused.error, refused.reason) == (p.FAILED_TO_START_STREAM, p.REASON_NOT_ALLOWED)
    # With it: at most EMERGENCY_PREEMPTIONS pre-emptions a minute, then a normal request.
    for _ in range(EMERGENCY_PREEMPTIONS):
        urgent = await b.start(priority="emergency")
        assert urgent.success and urgent.stream_id is not None, urgent
        stop = await a.next_of(p.OnStreamStop)
        assert (stop.stream_id, stop.reason) == (sid, p.REASON_PREEMPTED)
        assert (await b.stop(urgent.stream_id)).success
        assert (await a.next_of(p.OnStreamStop)).stream_id == urgent.stream_id
        sid = await talk(a)
    over = await b.start(priority="emergency")
    assert (over.error, over.reason, over.talker) == (
        p.FAILED_TO_START_STREAM,
        p.REASON_BUSY,
        "alice",
    )
    # The admin takes the grant back (another process): the live connection follows.
    with Registry(registry.path) as admin:
        admin.set_emergency("user", "bob", False)

    def bob_granted() -> bool:
        return any(s.principal.emergency for s in server.core.sessions.values() if s.name == "bob")

    await eventually(lambda: not bob_granted(), what="bob's grant taken back")
    gone = await b.start(priority="emergency")
    assert (gone.error, gone.reason) == (p.FAILED_TO_START_STREAM, p.REASON_NOT_ALLOWED)


async def test_late_entry_hears_the_talk_in_progress(logged_on: LoggedOn) -> None:
    a = await logged_on("alice")
    sid = await talk(a, packets=2)
    late = await logged_on("bob")
    start = await late.next_of(p.OnStreamStart, timeout=1)
    assert (start.stream_id, start.from_, start.codec_header) == (sid, "alice", p.CodecHeader())
    await a.send_audio(sid, b"\x09" * 60)
    packet = await late.next_of(p.AudioPacket)
    assert (packet.stream_id, packet.packet_id, packet.payload[0]) == (sid, 2, 9)


async def test_talker_disconnect_ends_stream_and_frees_floor(logged_on: LoggedOn) -> None:
    a = await logged_on("alice")
    b = await logged_on("bob")
    sid = await talk(a)
    await hear(b, sid)
    await a.close()
    stop = await b.next_of(p.OnStreamStop)
    assert (stop.stream_id, stop.reason) == (sid, p.REASON_DISCONNECTED)
    assert (await b.start()).success


async def test_start_stream_in_room_not_joined(logged_on: LoggedOn) -> None:
    a = await logged_on("alice", ("alpha",))
    answer = await a.start("beta")  # alice may join beta, but did not
    assert answer.error == p.NOT_AUTHORIZED
    answer = await a.start("gamma")
    assert answer.error == p.NOT_AUTHORIZED


async def test_stream_id_spoofing_is_refused_and_not_relayed(logged_on: LoggedOn) -> None:
    a = await logged_on("alice")
    b = await logged_on("bob")
    c = await logged_on("carol")
    sid = await talk(a, packets=1)
    await hear(c, sid, packets=1)
    c_mark = c.mark()
    await b.send_audio(sid, b"\x66" * 60)  # bob injects into alice's stream
    error = await b.next_of(p.OnError)
    assert error.error == p.INVALID_AUDIO_PACKET
    await b.send_audio(9999, b"\x66" * 60)  # and into no stream at all
    assert (await b.next_of(p.OnError)).error == p.INVALID_AUDIO_PACKET
    await settle(b, c)  # whatever bob's packets caused has reached carol
    assert not c.packets(since=c_mark)
    stop = await b.request(lambda seq: p.StopStream(sid, seq=seq))
    assert stop.error == p.FAILED_TO_STOP_STREAM  # nor can he stop it


async def test_bad_input_never_disturbs_a_talk_in_progress(
    logged_on: LoggedOn, connect_client: Connect
) -> None:
    a = await logged_on("alice")
    b = await logged_on("bob")
    rogue = await logged_on("carol")
    stranger = await connect_client()
    answer = await a.start()
    assert answer.stream_id is not None
    sid = answer.stream_id
    garbage: list[str | bytes] = [
        "{not json",
        "[1, 2]",
        '{"command": "launch_missiles", "seq": 3}',
        '{"command": "start_stream", "seq": 4}',
        '{"seq": "x"}',
        b"\x02garbage",
        b"\x01\x00",
        "\ud800".encode("utf-8", "surrogatepass").decode("latin-1"),
    ]
    expected = [
        p.INVALID_JSON,
        p.INVALID_JSON,
        p.UNKNOWN_COMMAND,
        p.NOT_ENOUGH_PARAMS,
        p.INVALID_REQUEST,
        p.INVALID_AUDIO_PACKET,
        p.INVALID_AUDIO_PACKET,
        p.INVALID_JSON,
    ]
    for i, junk in enumerate(garbage):
        await a.send_audio(sid, bytes([i + 1]) * 60)
        await rogue.ws.send(junk)
        await stranger.ws.send(junk if isinstance(junk, str) else b"\x01" + b"\x00" * 20)
    errors = []
    for _ in garbage:
        event = await rogue.next_of(p.OnError | p.Response)  # type: ignore[arg-type]
        errors.append(event.error)
    assert errors == expected
    got = [await b.next_of(p.AudioPacket) for _ in garbage]
    assert [g.payload[0] for g in got] == list(range(1, len(garbage) + 1))
    # An oversized frame closes only the sender's connection (1009: message too big).
    await rogue.ws.send(b"\x01" + b"\x00" * p.MAX_FRAME)
    await asyncio.wait_for(rogue.closed.wait(), 5)
    assert rogue.ws.close_code == 1009
    await a.send_audio(sid, b"\x42" * 60)
    assert (await b.next_of(p.AudioPacket)).payload[0] == 0x42


@pytest.mark.parametrize("settings", [ServerSettings(max_text_rate=10)])
async def test_control_flood_closes_only_the_flooder(logged_on: LoggedOn) -> None:
    a = await logged_on("alice")
    b = await logged_on("bob")
    for _ in range(200):
        try:
            await b.ws.send('{"command":"stop_stream","stream_id":1}')
        except ConnectionClosed:
            break
    await asyncio.wait_for(b.closed.wait(), 5)
    assert b.ws.close_code == 1008
    assert (await a.start()).success


async def test_text_messages(logged_on: LoggedOn) -> None:
    a = await logged_on("alice")
    b = await logged_on("bob")
    c = await logged_on("carol")
    answer = await a.request(lambda seq: p.SendTextMessage("alpha", "hello", seq=seq))
    assert answer.success
    for client in (b, c):
        msg = await client.next_of(p.OnTextMessage)
        assert (msg.channel, msg.from_, msg.text) == ("alpha", "alice", "hello")
    b_mark = b.mark()
    await a.request(lambda seq: p.SendTextMessage("alpha", "psst", seq=seq, for_="carol"))
    assert (await c.next_of(p.OnTextMessage)).text == "psst"
    await settle(a, b)  # had the message gone to bob too, it would be here now
    assert not b.of(p.OnTextMessage, since=b_mark)


# ---------------------------------------------------------------------------- pairing


async def pair(client: Client, code: str, name: str = "radio") -> p.Response:
    return await client.request(lambda seq: p.Pair(code, name, seq=seq))


async def test_pairing_gives_a_working_credential(
    connect_client: Connect, registry: Registry
) -> None:
    code = registry.create_pair_code(["alpha", "beta"]).code
    c = await connect_client()
    answer = await pair(c, code.lower().replace("-", ""))
    assert answer.success and answer.auth_token
    assert answer.channels == ("alpha", "beta")
    logon = await c.logon(("alpha", "beta"), auth_token=answer.auth_token)
    assert logon.success
    assert [d.name for d in registry.list_devices()] == ["radio"]


async def test_pairing_failures_name_their_reason(
    connect_client: Connect, registry: Registry
) -> None:
    c = await connect_client()
    assert (await pair(c, "0000-0000-0000")).reason == p.REASON_INVALID_CODE
    expired = registry.create_pair_code(["alpha"], ttl=-1).code
    assert (await pair(c, expired)).reason == p.REASON_EXPIRED_CODE
    used = registry.create_pair_code(["alpha"]).code
    assert (await pair(c, used)).success
    answer = await pair(c, used, "radio-2")
    assert (answer.error, answer.reason) == (p.NOT_AUTHORIZED, p.REASON_USED_CODE)


async def test_pairing_brute_force_is_rate_limited(
    connect_client: Connect, registry: Registry, settings: ServerSettings
) -> None:
    c = await connect_client()
    for i in range(settings.auth_failures):
        answer = await pair(c, f"{i:04d}-0000-0000")
        assert answer.reason == p.REASON_INVALID_CODE
    good = registry.create_pair_code(["alpha"]).code
    answer = await pair(c, good)
    assert answer.reason == p.REASON_RATE_LIMITED  # even a good code, from this address
    assert registry.redeem_pair_code(good, "other").device_name == "other"  # code not spent


async def test_bad_device_name_is_an_invalid_request(
    connect_client: Connect, registry: Registry
) -> None:
    code = registry.create_pair_code(["alpha"]).code
    c = await connect_client()
    answer = await pair(c, code, "bad\x00name")
    assert answer.error == p.INVALID_REQUEST


# ---------------------------------------------------------------------------- revocation


async def test_revoked_device_is_disconnected_and_refused(
    connect_client: Connect, registry: Registry, server: RoomServer
) -> None:
    token = pair_device(registry, "radio-9")
    c = await connect_client()
    assert (await c.logon(("alpha",), auth_token=token)).success
    # The admin command runs in another process: another connection to the same file.
    with Registry(registry.path) as admin:
        admin.revoke_device("radio-9")
    error = await c.next_of(p.OnError, timeout=3)
    assert error.error == p.NOT_AUTHORIZED
    await asyncio.wait_for(c.closed.wait(), 3)
    again = await connect_client()
    assert (await again.logon(("alpha",), auth_token=token)).error == p.NOT_AUTHORIZED


async def test_revoked_then_paired_again_under_its_name_the_old_connection_goes(
    connect_client: Connect, registry: Registry
) -> None:
    """Revocation follows the credential: pairing a new radio under the revoked one's name (which
    replaces the revoked row) must not leave the old connection talking."""
    token = pair_device(registry, "radio-7")
    c = await connect_client()
    assert (await c.logon(("alpha",), auth_token=token)).success
    with Registry(registry.path) as admin:  # another process, at once: no poll in between
        admin.revoke_device("radio-7")
        code = admin.create_pair_code(["alpha"])
        assert admin.redeem_pair_code(code.code, "radio-7").device_name == "radio-7"
    assert (await c.next_of(p.OnError, timeout=3)).error == p.NOT_AUTHORIZED
    await asyncio.wait_for(c.closed.wait(), 3)
    assert c.ws.close_code == 1008 and c.ws.close_reason == "revoked"


async def test_a_removed_room_is_left_by_its_members(
    logged_on: LoggedOn, registry: Registry
) -> None:
    alice = await logged_on("alice", ("alpha", "beta"))
    bob = await logged_on("bob", ("beta",))
    stream_id = (await alice.start("beta")).stream_id
    assert stream_id is not None
    await bob.next_of(p.OnStreamStart)
    with Registry(registry.path) as admin:  # `pttd server room remove beta`
        admin.remove_room("beta")
    status = await alice.next_of(p.OnChannelStatus, timeout=3)
    while status.status == "online":  # bob's arrival, told before
        status = await alice.next_of(p.OnChannelStatus, timeout=3)
    assert (status.channel, status.status) == ("beta", "offline")
    assert (await bob.next_of(p.OnStreamStop, timeout=3)).reason == p.REASON_DISCONNECTED
    assert (await alice.start("beta")).error == p.NOT_AUTHORIZED
    assert (await alice.start("alpha")).success


async def test_device_unpairs_itself(connect_client: Connect, registry: Registry) -> None:
    token = pair_device(registry, "radio-3")
    c = await connect_client()
    assert (await c.logon(("alpha",), auth_token=token)).success
    assert (await c.request(lambda seq: p.Unpair(seq))).success
    await asyncio.wait_for(c.closed.wait(), 3)
    assert registry.list_devices() == []


async def test_device_reconnect_replaces_old_connection(
    connect_client: Connect, registry: Registry
) -> None:
    token = pair_device(registry, "radio-4")
    old = await connect_client()
    assert (await old.logon(("alpha",), auth_token=token)).success
    new = await connect_client()
    assert (await new.logon(("alpha",), auth_token=token)).success
    await asyncio.wait_for(old.closed.wait(), 3)
    status = await new.next_of(p.OnChannelStatus)
    assert status.users_online == 1


# ---------------------------------------------------------------------------- liveness


@pytest.mark.parametrize("settings", [ServerSettings(logon_timeout=0.2)])
async def test_connection_that_never_logs_on_is_closed(connect_client: Connect) -> None:
    c = await connect_client()
    await asyncio.wait_for(c.closed.wait(), 3)
    assert c.ws.close_code == 1008


@pytest.mark.parametrize(
    "settings", [ServerSettings(ping_interval=0.1, ping_timeout=0.2, close_timeout=0.2)]
)
async def test_dead_peer_is_dropped(server: RoomServer, logged_on: LoggedOn) -> None:
    a = await logged_on("alice")
    # A client that stops answering pings: connect without reading (ping handled by reader).
    silent = await connect(server.url, compression=None)
    await silent.send(
        p.Logon(channels=("alpha",), seq=1, username="bob", password="bob-secret").to_json()
    )
    status = await a.next_of(p.OnChannelStatus)
    assert status.users_online == 2
    silent.transport.pause_reading()  # no more pongs from bob
    status = await a.next_of(p.OnChannelStatus, timeout=5)
    assert status.users_online == 1
    silent.transport.abort()


@pytest.mark.parametrize("settings", [ServerSettings(stream_idle_timeout=0.3, registry_poll=0.05)])
async def test_a_talker_whose_audio_stops_loses_the_floor(logged_on: LoggedOn) -> None:
    a = await logged_on("alice")
    b = await logged_on("bob")
    sid = await talk(a, packets=2)
    await hear(b, sid, packets=2)
    for client in (a, b):  # no stop_stream, no more packets: the stream is ended as idle
        stop = await client.next_of(p.OnStreamStop, timeout=3)
        assert (stop.stream_id, stop.reason) == (sid, p.REASON_IDLE)
    assert (await b.start()).success


async def test_a_device_revoked_while_its_logon_is_checked_is_refused_not_crashed(
    registry: Registry, settings: ServerSettings
) -> None:
    """The admin revokes a device between the check of its token and the issue of its refresh
    token (the registry is called twice, in a worker thread): the logon is refused, the server
    keeps serving."""

    class RevokedMeanwhile(Registry):
        def check_device_token(self, token: str) -> Principal | None:
            principal = super().check_device_token(token)
            if principal is not None:
                with Registry(self.path) as admin:  # another process, at that moment
                    admin.revoke_device(principal.name)
            return principal

    token = pair_device(registry, "radio-race")
    racing = RevokedMeanwhile(registry.path)
    async with RoomServer(racing, settings) as server:
        client = await Client.connect(server.url)
        answer = await client.logon(("alpha",), auth_token=token)
        assert answer.error == p.NOT_AUTHORIZED
        alice = await Client.connect(server.url)
        assert (await alice.logon(("alpha",), username="alice", password="alice-secret")).success
        for c in (client, alice):
            await c.close()
    racing.close()
