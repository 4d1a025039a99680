"""The Channel-API websocket test client and helpers shared by the test suites.

Importable from every test folder: ``pythonpath = ["tests/support"]`` in pyproject.toml puts this
directory on ``sys.path``; the module name is unique in the tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from typing import Any, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from pttd.server.registry import Registry
from pttd.wire import messages as p

T = TypeVar("T")
TIMEOUT = 10.0  # generous: the suites must pass on a loaded 2-core CI machine
CODEC = p.CodecHeader(48000, 1, 20)

Connect = Callable[..., Any]
"""A fixture's factory: connect (websockets keyword arguments) and return a :class:`Client`."""


async def eventually(check: Callable[[], bool], timeout: float = TIMEOUT, what: str = "") -> None:
    """Poll ``check`` on the loop until it holds; fail after ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while not check():  # noqa: ASYNC110 - state changes on other tasks and threads
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"not within {timeout} s: {what or check}") from None


def pair_device(reg: Registry, name: str, rooms: tuple[str, ...] = ("alpha",)) -> str:
    """Pair a device straight through the registry; its auth token."""
    code = reg.create_pair_code(list(rooms))
    return reg.redeem_pair_code(code.code, name).auth_token


class Client:
    """A Channel-API client for tests: requests wait for their answer, everything else queues.

    ``timeout`` bounds every wait that is not given its own (answers, events, closing)."""

    def __init__(self, ws: ClientConnection, timeout: float = TIMEOUT) -> None:
        self.ws = ws
        self.timeout = timeout
        self.events: asyncio.Queue[Any] = asyncio.Queue()
        self.answers: dict[int, asyncio.Future[p.Response]] = {}
        self.seq = itertools.count(1)
        self.closed = asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, url: str, **kwargs: Any) -> Client:
        ws = await connect(url, compression=None, open_timeout=TIMEOUT, **kwargs)
        return cls(ws)

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                if isinstance(frame, bytes):
                    self.events.put_nowait(p.parse_audio_packet(frame))
                    continue
                message = p.parse_server_message(frame)
                if isinstance(message, p.Response) and message.seq in self.answers:
                    future = self.answers.pop(message.seq)
                    if not future.done():
                        future.set_result(message)
                else:
                    self.events.put_nowait(message)
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()

    async def request(self, make: Callable[[int], Any], timeout: float | None = None) -> p.Response:
        seq = next(self.seq)
        future: asyncio.Future[p.Response] = asyncio.get_running_loop().create_future()
        self.answers[seq] = future
        await self.ws.send(make(seq).to_json())
        return await asyncio.wait_for(future, self.timeout if timeout is None else timeout)

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

    async def next(self, timeout: float | None = None) -> Any:
        return await asyncio.wait_for(
            self.events.get(), self.timeout if timeout is None else timeout
        )

    async def next_of(
        self,
        kind: type[T],
        timeout: float | None = None,
        where: Callable[[T], bool] | None = None,
    ) -> T:
        """The next event of ``kind`` (and matching ``where``), skipping others in between
        (channel-status updates, say)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.timeout if timeout is None else timeout)
        while True:
            event = await self.next(max(0.0, deadline - loop.time()))
            if isinstance(event, kind) and (where is None or where(event)):
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

    def drain(self) -> list[Any]:
        """Everything queued so far, removed."""
        got = []
        while not self.events.empty():
            got.append(self.events.get_nowait())
        return got

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), self.timeout)
        await asyncio.wait({self.reader}, timeout=self.timeout)  # let it queue what was in flight
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader
