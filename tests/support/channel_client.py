"""The Channel-API websocket test client, shared by the test suites (server, device, reliability,
hardware-in-loop).

Importable from every test folder: ``pythonpath = ["tests/support"]`` in pyproject.toml puts this
directory on ``sys.path``; the module name is unique in the tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Callable
from typing import Any, TypeVar

from waits import TIMEOUT
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from pttd.server.registry import Registry
from pttd.wire import messages as p

T = TypeVar("T")
CODEC = p.CodecHeader(48000, 1, 20)
NEVER_A_STREAM = 0  # the server numbers streams from 1: stopping this one changes nothing

Connect = Callable[..., Any]
"""A fixture's factory: connect (websockets keyword arguments) and return a :class:`Client`."""


def pair_device(reg: Registry, name: str, rooms: tuple[str, ...] = ("alpha",)) -> str:
    """Pair a device straight through the registry; its auth token."""
    code = reg.create_pair_code(list(rooms))
    return reg.redeem_pair_code(code.code, name).auth_token


class Client:
    """A Channel-API client for tests.

    A request (:meth:`request` and the commands built on it) waits for its answer. Everything
    else the server sends (events, audio packets, answers to requests sent by hand) is recorded,
    in order, in :attr:`events`. Two ways to read it:

    * as a queue: :meth:`next`, :meth:`next_of` and :meth:`drain` take events one after the
      other from a read position that only moves forward;
    * by position: :meth:`mark`, :meth:`of`, :meth:`packets` and :meth:`wait_for` look at the
      whole record (or from a mark on) and take nothing.

    Nothing-happened checks use :meth:`sync`, a barrier, never a pause. ``timeout`` bounds every
    wait that is not given its own (answers, events, closing).

    A request's answer is told from the others by its ``seq``. Frames made by hand go through
    :meth:`send`: the client's own requests never take a ``seq`` one of them carried, so the
    answer to a hand-made frame is never taken for a request's (a barrier passed early) and is
    recorded like any other event."""

    def __init__(self, ws: ClientConnection, timeout: float = TIMEOUT) -> None:
        self.ws = ws
        self.timeout = timeout
        self.events: list[Any] = []
        self.answers: dict[int, asyncio.Future[p.Response]] = {}
        self.seq = itertools.count(1)
        self.hand_seqs: set[int] = set()  # the seqs of frames sent by hand: not for requests
        self.closed = asyncio.Event()
        self._read_at = 0  # the queue's read position in :attr:`events`
        self._changed = asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, url: str, timeout: float = TIMEOUT, **kwargs: Any) -> Client:
        """Connect (``kwargs``: websockets' own; the opening handshake is bounded by ``timeout``
        unless ``open_timeout`` says otherwise)."""
        kwargs.setdefault("open_timeout", timeout)
        ws = await connect(url, compression=None, **kwargs)
        return cls(ws, timeout)

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                if isinstance(frame, bytes):
                    self._record(p.parse_audio_packet(frame))
                    continue
                message = p.parse_server_message(frame)
                if isinstance(message, p.Response) and message.seq in self.answers:
                    future = self.answers.pop(message.seq)
                    if not future.done():
                        future.set_result(message)
                else:
                    self._record(message)
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()
            self._changed.set()
            for future in self.answers.values():  # no answer will come: say so at once
                if not future.done():
                    future.set_exception(ConnectionError("connection closed before the answer"))

    def _record(self, event: Any) -> None:
        self.events.append(event)
        self._changed.set()

    async def _until(self, found: Callable[[], T | None], timeout: float | None) -> T:
        """``found()``'s first value that is not None, looked for after each recorded event."""
        async with asyncio.timeout(self.timeout if timeout is None else timeout):
            while (value := found()) is None:
                self._changed.clear()
                await self._changed.wait()
        return value

    # ------------------------------------------------------------------ requests

    async def request(self, make: Callable[[int], Any], timeout: float | None = None) -> p.Response:
        """Send ``make(seq)`` and wait for the answer with that ``seq``; :class:`ConnectionError`
        if the connection closes first."""
        seq = next(s for s in self.seq if s not in self.hand_seqs)
        future: asyncio.Future[p.Response] = asyncio.get_running_loop().create_future()
        if self.closed.is_set():
            raise ConnectionError("connection closed")
        self.answers[seq] = future
        await self.ws.send(make(seq).to_json())
        return await asyncio.wait_for(future, self.timeout if timeout is None else timeout)

    async def send(self, frame: str | bytes) -> None:
        """Send a frame made by hand, as it is (junk, a request with a chosen ``seq``, a raw
        audio packet). Its answers are recorded as events; the ``seq`` it carries, if any, is
        kept from this client's own requests."""
        if isinstance(frame, str):
            with contextlib.suppress(ValueError, RecursionError):
                seq = json.loads(frame).get("seq") if frame.lstrip().startswith("{") else None
                if isinstance(seq, int) and not isinstance(seq, bool):
                    self.hand_seqs.add(seq)
        await self.ws.send(frame)

    async def logon(self, rooms: tuple[str, ...] = ("alpha",), **creds: Any) -> p.Response:
        return await self.request(lambda seq: p.Logon(channels=tuple(rooms), seq=seq, **creds))

    async def start(self, room: str | None = None, priority: p.Priority = "normal") -> p.Response:
        return await self.request(
            lambda seq: p.StartStream(CODEC, 20, seq=seq, channel=room, priority=priority)
        )

    async def stop(self, stream_id: int) -> p.Response:
        return await self.request(lambda seq: p.StopStream(stream_id, seq=seq))

    async def send_audio(self, stream_id: int, payload: bytes) -> None:
        await self.ws.send(p.AudioPacket(stream_id, 0, payload).encode())

    async def sync(self, timeout: float | None = None) -> int:
        """A barrier: a request that changes nothing (stopping a stream the server never gave
        out), answered only after the server has dealt with every frame this client sent before
        it. The server writes to each connection in order, so once the answer is here,
        everything the server had sent this client by then is in :attr:`events`. Returns
        :meth:`mark`. Works in any state, logged on or not (the answer is then an error)."""
        await self.request(lambda seq: p.StopStream(NEVER_A_STREAM, seq=seq), timeout)
        return self.mark()

    # ------------------------------------------------------------------ reading as a queue

    async def next(self, timeout: float | None = None) -> Any:
        """The next event after the read position (waiting for it); moves the position on."""

        def unread() -> Any:
            return self.events[self._read_at] if self._read_at < len(self.events) else None

        event = await self._until(unread, timeout)
        self._read_at += 1
        return event

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

    def drain(self) -> list[Any]:
        """Every event after the read position; moves the position to the end."""
        got, self._read_at = self.events[self._read_at :], len(self.events)
        return got

    # ------------------------------------------------------------------ reading by position

    def mark(self) -> int:
        """The position after the last event recorded, for :meth:`of` and :meth:`wait_for` to
        look only at what comes after it."""
        return len(self.events)

    def of(self, kind: type[T], since: int = 0) -> list[T]:
        """The events of ``kind`` recorded from position ``since`` on."""
        return [e for e in self.events[since:] if isinstance(e, kind)]

    def packets(self, stream_id: int | None = None, since: int = 0) -> list[p.AudioPacket]:
        """The audio packets recorded (of ``stream_id``, if given)."""
        return [e for e in self.of(p.AudioPacket, since) if stream_id in (None, e.stream_id)]

    async def wait_for(
        self,
        kind: type[T],
        where: Callable[[T], bool] = lambda _: True,
        *,
        since: int = 0,
        timeout: float | None = None,
    ) -> T:
        """The first event of ``kind`` recorded from position ``since`` on for which ``where``
        holds, waiting for it if there is none yet."""

        def first() -> T | None:
            return next((e for e in self.of(kind, since) if where(e)), None)

        return await self._until(first, timeout)

    # ------------------------------------------------------------------ closing

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), self.timeout)
        await asyncio.wait({self.reader}, timeout=self.timeout)  # let it record what was in flight
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader


async def settle(*clients: Client) -> None:
    """:meth:`Client.sync` each client, in order. What the server relays to a later client
    because of frames an earlier one sent before its barrier is then recorded: e.g.
    ``await settle(talker, listener)`` before checking that the listener heard nothing."""
    for client in clients:
        await client.sync()
