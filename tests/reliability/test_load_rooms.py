"""Load: 200 simulated devices in 20 rooms of 10 taking turns for a bounded time, on loopback.

The room server runs as its own process (``pttd server run``), so its memory and CPU can be read
from /proc. The devices are protocol-level clients with real device credentials (pairing codes
redeemed over the wire, then ``logon`` with the auth token), all in this process: 200 full
``Device`` objects with their audio threads and Opus would not fit two cores, and they are not
what is under load here. In each room the members take turns: ``start_stream``, 25 packets paced
at 20 ms (deadline-based), ``stop_stream``, next member.

Checked: every listener got every packet of every stream in its room, in order, exactly once; no
connection was dropped; no floor is left held (a last ``start_stream`` in each room succeeds); the
server logged no error. Reported, never checked against a bound (they are the machine's as much
as the server's): deliveries, the server's CPU time per delivered packet, its resident memory
after the warm-up (a third of the run) and at the end.

``PTTD_LOAD_SECONDS`` sets the talk phase (default 8 s).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import struct
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from channel_client import Client
from relkit import proc_cpu_seconds, proc_rss_bytes
from waits import eventually

from pttd.bench.common import server_command
from pttd.server.registry import Registry
from pttd.wire import messages as p

ROOMS = 20
PER_ROOM = 10
PACKETS = 25  # per talk: half a second
PACKET_S = 0.020
SECONDS = float(os.environ.get("PTTD_LOAD_SECONDS", "8"))
START_TIMEOUT = 60.0
ANSWER_TIMEOUT = 20.0
MARK = struct.Struct(">HHI")  # room, member, packet number: in every payload
PADDING = bytes(60 - MARK.size)


@dataclass(eq=False)
class Member:
    """One simulated device: its Channel-API client, which records what it hears."""

    room: int
    index: int
    client: Client

    @property
    def name(self) -> str:
        return f"load-{self.room:02d}-{self.index}"

    def heard(self) -> dict[int, list[tuple[int, int, int, int]]]:
        """Per stream: (packet id, and the room, member and packet number in its payload)."""
        heard: dict[int, list[tuple[int, int, int, int]]] = defaultdict(list)
        for packet in self.client.packets():
            heard[packet.stream_id].append((packet.packet_id, *MARK.unpack_from(packet.payload)))
        return heard

    def starts(self) -> dict[int, str]:
        return {s.stream_id: s.from_ for s in self.client.of(p.OnStreamStart)}

    def stops(self) -> set[int]:
        return {s.stream_id for s in self.client.of(p.OnStreamStop)}


@dataclass
class Turn:
    room: int
    talker: int
    stream_id: int
    sent: int


@dataclass
class ServerProcess:
    url: str
    pid: int
    log: Path


@pytest.fixture
async def server_process(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    db = tmp_path / "load.db"
    with Registry(db) as registry:
        for r in range(ROOMS):
            registry.add_room(f"room-{r:02d}")
    log = tmp_path / "server.log"
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            *server_command(db),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
        )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(START_TIMEOUT):
            line = (await proc.stdout.readline()).decode()
        assert line.startswith("pttd-server listening on "), line or log.read_text()
        yield ServerProcess(line.rsplit(" ", 1)[1].strip(), proc.pid, log)
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


# Pairings from one address at once: the server counts each pairing being checked as a failed
# attempt until it succeeds (so that guesses sent together get no more checks than the limit), and
# refuses more than five of those from one address; an installer pairs a few radios at a time.
PAIRING = asyncio.Semaphore(4)


async def join(url: str, registry: Registry, room: int, index: int) -> Member:
    """Pair over the wire with a fresh code, then log on with the credential, as a device."""
    code = await asyncio.to_thread(registry.create_pair_code, [f"room-{room:02d}"])
    name = f"load-{room:02d}-{index}"
    client = await Client.connect(url, ANSWER_TIMEOUT, open_timeout=START_TIMEOUT, max_queue=None)
    member = Member(room, index, client)
    async with PAIRING:
        answer = await client.request(lambda seq: p.Pair(code.code, name, seq=seq))
    assert answer.auth_token is not None, answer
    answer = await client.logon(
        (f"room-{room:02d}",), auth_token=answer.auth_token, platform_name=name
    )
    assert answer.success, answer
    return member


async def talk(member: Member, packets: int) -> Turn:
    answer = await member.client.start()
    stream_id = answer.stream_id
    assert stream_id is not None, answer
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for n in range(packets):
        payload = MARK.pack(member.room, member.index, n) + PADDING
        await member.client.send_audio(stream_id, payload)
        # Paced as a device sends (real time: the load is the point), deadline-based.
        if (wait := t0 + (n + 1) * PACKET_S - loop.time()) > 0:
            await asyncio.sleep(wait)
    answer = await member.client.stop(stream_id)
    assert answer.success, answer
    return Turn(member.room, member.index, stream_id, packets)


async def take_turns(members: list[Member], until: float, turns: list[Turn]) -> None:
    loop = asyncio.get_running_loop()
    k = members[0].room  # rooms start with different members
    while loop.time() < until:
        turns.append(await talk(members[k % len(members)], PACKETS))
        k += 1


async def test_200_devices_in_20_rooms_take_turns(
    tmp_path: Path, server_process: ServerProcess
) -> None:
    server = server_process
    registry = Registry(tmp_path / "load.db")
    rooms: list[list[Member]] = []
    try:
        for r in range(ROOMS):  # ten at a time: a burst of 200 handshakes is not the test
            rooms.append(
                list(
                    await asyncio.gather(
                        *(join(server.url, registry, r, i) for i in range(PER_ROOM))
                    )
                )
            )
        everyone = [m for room in rooms for m in room]
        assert len({m.name for m in everyone}) == ROOMS * PER_ROOM

        loop = asyncio.get_running_loop()
        turns: list[Turn] = []
        cpu0, wall0 = proc_cpu_seconds(server.pid), loop.time()
        until = wall0 + SECONDS
        runners = [asyncio.create_task(take_turns(room, until, turns)) for room in rooms]
        await asyncio.sleep(SECONDS / 3)  # real time: the warm-up is a third of the talk phase
        rss_warm = proc_rss_bytes(server.pid)
        async with asyncio.timeout(SECONDS + 60):
            await asyncio.gather(*runners)

        # Every listener has every packet of every stream in its room (TCP: the stop follows
        # the last packet, so once every stop is in, everything is).
        def all_stops_in() -> bool:
            stops = {id(m): m.stops() for m in everyone}
            return all(
                t.stream_id in stops[id(m)]
                for t in turns
                for m in rooms[t.room]
                if m.index != t.talker
            )

        await eventually(all_stops_in, 30, "every listener has every stream's stop", every=0.05)
        cpu1, wall1 = proc_cpu_seconds(server.pid), loop.time()
        rss_end = proc_rss_bytes(server.pid)

        heard = {id(m): m.heard() for m in everyone}
        starts = {id(m): m.starts() for m in everyone}
        deliveries = 0
        for t in turns:
            for m in rooms[t.room]:
                if m.index == t.talker:
                    assert t.stream_id not in heard[id(m)], "a talker heard itself"
                    continue
                got = heard[id(m)].get(t.stream_id, [])
                expected = [(n, t.room, t.talker, n) for n in range(t.sent)]
                assert got == expected, f"{m.name} in stream {t.stream_id}: {len(got)} packets"
                assert starts[id(m)].get(t.stream_id) == f"load-{t.room:02d}-{t.talker}"
                deliveries += len(got)
        for m in everyone:  # nothing heard from another room
            assert set(heard[id(m)]) <= {t.stream_id for t in turns if t.room == m.room}
        dropped = [m.name for m in everyone if m.client.closed.is_set()]
        assert not dropped, "connections dropped under load"

        # No floor left held: one more talk in every room is granted.
        finals = await asyncio.gather(*(talk(room[-1], 1) for room in rooms))
        assert len(finals) == ROOMS
    finally:
        for m in [m for room in rooms for m in room]:
            await m.client.close()
        registry.close()

    cpu_us = (cpu1 - cpu0) / deliveries * 1e6
    figures = {
        "rooms": ROOMS,
        "devices": ROOMS * PER_ROOM,
        "seconds": round(wall1 - wall0, 1),
        "streams": len(turns),
        "packets_sent": sum(t.sent for t in turns),
        "deliveries": deliveries,
        "server_cpu_s": round(cpu1 - cpu0, 2),
        "server_cpu_us_per_delivery": round(cpu_us, 1),
        "server_rss_warm_mb": round(rss_warm / 2**20, 1),
        "server_rss_end_mb": round(rss_end / 2**20, 1),
    }
    print(f"\nload: {json.dumps(figures)}")
    assert deliveries == sum(t.sent for t in turns) * (PER_ROOM - 1) > 0
    assert all(math.isfinite(v) and v >= 0 for v in figures.values()), figures
    assert rss_warm > 0 and rss_end > 0
    log = server.log.read_text(errors="replace")
    assert " ERROR " not in log and "Traceback" not in log, log[-2000:]
