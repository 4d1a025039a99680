"""A Channel-API test client and helpers for the room-server tests (a module of its own, since
`conftest` names clash across test folders)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any, TypeVar

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from pttd import protocol as p
from pttd.server.registry import Registry

T = TypeVar("T")
TIMEOUT = 5.0
CODEC = p.CodecHeader(48000, 1, 20)


class Client:
    """A Channel-API client for tests: requests wait for their answer, everything else queues."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.events: asyncio.Queue[Any] = asyncio.Queue()
        self.answers: dict[int, asyncio.Future[p.Response]] = {}
        self.seq = itertools.count(1)
        self.reader = asyncio.create_task(self._read())
        self.closed = asyncio.Event()

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                if isinstance(frame, bytes):
                    await self.events.put(p.parse_audio_packet(frame))
                    continue
                message = p.parse_server_message(frame)
                if isinstance(message, p.Response) and message.seq in self.answers:
                    self.answers.pop(message.seq).set_result(message)
                else:
                    await self.events.put(message)
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()

    async def request(self, make: Callable[[int], Any]) -> p.Response:
        seq = next(self.seq)
        future: asyncio.Future[p.Response] = asyncio.get_running_loop().create_future()
        self.answers[seq] = future
        await self.ws.send(make(seq).to_json())
        return await asyncio.wait_for(future, TIMEOUT)

    async def logon(self, rooms: tuple[str, ...] = ("alpha",), **creds: Any) -> p.Response:
        return await self.request(lambda seq: p.Logon(channels=rooms, seq=seq, **creds))

    async def start(self, room: str | None = None, priority: p.Priority = "normal") -> p.Response:
        return await self.request(
            lambda seq: p.StartStream(CODEC, 20, seq=seq, channel=room, priority=priority)
        )

    async def stop(self, stream_id: int) -> p.Response:
        return await self.request(lambda seq: p.StopStream(stream_id, seq=seq))

    async def send_audio(self, stream_id: int, payload: bytes) -> None:
        await self.ws.send(p.AudioPacket(stream_id, 0, payload).encode())

    async def next(self, timeout: float = TIMEOUT) -> Any:
        return await asyncio.wait_for(self.events.get(), timeout)

    async def next_of(self, kind: type[T], timeout: float = TIMEOUT) -> T:
        """The next event of ``kind``, skipping channel-status updates and others in between."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            event = await self.next(max(0.0, deadline - loop.time()))
            if isinstance(event, kind):
                return event

    async def quiet(self, kind: type[Any], wait: float = 0.3) -> list[Any]:
        """Events of ``kind`` that arrive within ``wait`` seconds (expected: none)."""
        got = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while (left := deadline - loop.time()) > 0:
            try:
                event = await self.next(left)
            except TimeoutError:
                break
            if isinstance(event, kind):
                got.append(event)
        return got

    async def close(self) -> None:
        await self.ws.close()
        await self.reader


def pair_device(reg: Registry, name: str, rooms: tuple[str, ...] = ("alpha",)) -> str:
    code = reg.create_pair_code(list(rooms))
    return reg.redeem_pair_code(code.code, name).auth_token


Connect = Callable[..., Any]
