"""The device's link to the room server: a websockets client that keeps itself connected.

It logs on with the stored credential, joins the credential's rooms, reconnects by itself
(exponential back-off with full jitter, capped at a few seconds), answers pings (websockets does),
and verifies TLS by default. It makes no decisions: what it hears becomes events for the daemon
(the state machine's link and floor events, plus incoming streams and audio for the mixer).
A refused credential stops it until :meth:`ServerLink.wake` (a new pairing).

While the server cannot be reached the log gets the first failure, then a summary at a falling
rate, and one line when the link is back, saying how long it was down (:class:`Outage`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal, TypeAlias

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.connection import broadcast
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from pttd import __version__
from pttd.errors import PairingFailed, ProtocolError
from pttd.radio.machine import (
    CredentialRefused,
    LinkConnecting,
    LinkDown,
    LinkUp,
    OwnStreamStopped,
    StreamGranted,
    StreamRefused,
)
from pttd.radio.store import Credential
from pttd.wire import messages as p

log = logging.getLogger(__name__)

LinkEvent: TypeAlias = (
    LinkConnecting
    | LinkUp
    | LinkDown
    | CredentialRefused
    | StreamGranted
    | StreamRefused
    | OwnStreamStopped
    | p.OnStreamStart
    | p.OnStreamStop
    | p.OnTextMessage
    | p.AudioPacket
)
LinkHandler = Callable[[LinkEvent], None]
Outcome: TypeAlias = Literal["refused", "failed", "ended"]  # how a session ended


@dataclass(frozen=True, slots=True)
class LinkSettings:
    ca_file: str = ""
    tls_verify: bool = True
    backoff_initial: float = 0.2
    backoff_max: float = 4.0
    open_timeout: float = 5.0
    answer_timeout: float = 5.0
    # A dead link must close the microphone within seconds, not minutes: a ping every 5 s, and
    # 5 s for its answer (a few hundred bytes a minute).
    ping_interval: float = 5.0
    ping_timeout: float = 5.0


def tls_context(url: str, settings: LinkSettings) -> ssl.SSLContext | None:
    """Verification on by default; a CA file may be added; off only when asked, and said."""
    if not url.startswith("wss://"):
        return None
    context = ssl.create_default_context(cafile=settings.ca_file or None)
    if not settings.tls_verify:
        log.warning("TLS certificate verification is OFF (server.tls_verify = false)")
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _connect(url: str, settings: LinkSettings) -> connect:
    return connect(
        url,
        ssl=tls_context(url, settings),
        open_timeout=settings.open_timeout,
        ping_interval=settings.ping_interval,
        ping_timeout=settings.ping_timeout,
        close_timeout=2,
        compression=None,
        max_size=p.MAX_FRAME,
        user_agent_header=f"pttd/{__version__}",
    )


def describe_failure(exc: BaseException) -> tuple[str, str]:
    """(reason, human message) for a connection that could not be made."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "tls", f"TLS certificate not trusted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return "tls", f"TLS failed: {exc.reason}"
    if isinstance(exc, InvalidURI):
        return "unreachable", f"not a websocket address: {exc.uri}"
    if isinstance(exc, InvalidHandshake):
        return "unreachable", f"not a pttd server: {exc}"
    if isinstance(exc, TimeoutError):
        return "unreachable", "no answer from the server"
    if isinstance(exc, OSError):
        return "unreachable", f"cannot reach the server: {exc.strerror or exc}"
    if isinstance(exc, ConnectionClosed):
        return "unreachable", "the server closed the connection"
    return "unreachable", str(exc)


def duration(seconds: float) -> str:
    """``4.2 s``, ``42 s``, ``3 min 20 s``, ``2 h 5 min``."""
    if seconds < 10:
        return f"{max(seconds, 0.0):.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        minutes, rest = divmod(whole, 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, rest = divmod(whole, 3600)
    return f"{hours} h {rest // 60} min" if rest // 60 else f"{hours} h"


def attempts_text(count: int) -> str:
    return f"{count} attempt" + ("" if count == 1 else "s")


SUMMARY_INTERVALS: Final = (10.0, 30.0, 60.0, 300.0)
"""Seconds from one outage line to the next summary: 10 s, 30 s, 60 s, then every 5 min."""


@dataclass
class Outage:
    """What the log says while the server cannot be reached, and when. Pure: time is passed in.

    The first failure (and any new kind of failure) is said at once; the attempts after it are
    counted and summed up after 10 s, 30 s, 60 s, then every 5 min; once back online, one line
    says how long the link was down. Each call returns the line to log, or None.
    """

    intervals: tuple[float, ...] = SUMMARY_INTERVALS
    since: float | None = None  # when the link went down; None: not down (online, or idle)
    attempts: int = 0  # failed attempts since then
    _reasons: set[str] = field(default_factory=set)  # the kinds of failure already said
    _window_start: float = 0.0  # the last summary (or the start)
    _window_attempts: int = 0  # failed attempts since then
    _step: int = 0
    _summary_at: float = 0.0

    def lost(self, now: float, reason: str) -> str:
        """The connection was up and went down."""
        self._begin(now)
        self._reasons.add(reason)
        return f"connection lost: {reason}"

    def failed(self, now: float, reason: str) -> str | None:
        """An attempt to connect failed for ``reason``."""
        if self.since is None:
            self._begin(now)
        self.attempts += 1
        self._window_attempts += 1
        if reason not in self._reasons:
            self._reasons.add(reason)
            return reason
        if now < self._summary_at:
            return None
        assert self.since is not None
        line = (
            f"still no connection after {duration(now - self.since)}: "
            f"{attempts_text(self._window_attempts)} in the last "
            f"{duration(now - self._window_start)} failed ({reason})"
        )
        self._step = min(self._step + 1, len(self.intervals) - 1)
        self._window_start, self._window_attempts = now, 0
        self._summary_at = now + self.intervals[self._step]
        return line

    def online(self, now: float) -> str | None:
        """The link is up: how long it was down, if it was."""
        if self.since is None:
            return None
        line = f"back after {duration(now - self.since)}"
        if self.attempts:
            line += f" ({attempts_text(self.attempts)} failed)"
        self.end()
        return line

    def end(self) -> None:
        """Nothing to report any more (the credential was given up or refused)."""
        self.since = None
        self.attempts = 0
        self._reasons.clear()

    def _begin(self, now: float) -> None:
        self.end()
        self.since = now
        self._window_start, self._window_attempts = now, 0
        self._step = 0
        self._summary_at = now + self.intervals[0]


PAIRING_MESSAGES = {
    p.REASON_INVALID_CODE: "wrong pairing code",
    p.REASON_EXPIRED_CODE: "the pairing code has expired: ask for a new one",
    p.REASON_USED_CODE: "the pairing code was already used: ask for a new one",
    p.REASON_RATE_LIMITED: "too many wrong codes: wait a minute and try again",
}


async def pair(url: str, code: str, device_name: str, settings: LinkSettings) -> Credential:
    """Trade a one-time pairing code for a credential (nothing is stored here)."""
    try:
        async with _connect(url, settings) as ws:
            await ws.send(p.Pair(code, device_name, seq=1).to_json())
            async with asyncio.timeout(settings.answer_timeout):
                while True:
                    frame = await ws.recv()
                    if isinstance(frame, str):
                        answer = p.parse_server_message(frame)
                        if isinstance(answer, p.Response) and answer.seq == 1:
                            break
    except (OSError, TimeoutError, InvalidHandshake, InvalidURI, ConnectionClosed) as exc:
        reason, message = describe_failure(exc)
        raise PairingFailed(reason, message) from exc
    except ProtocolError as exc:
        raise PairingFailed("refused", f"the server answered nonsense: {exc}") from exc
    if not answer.success or not answer.auth_token:
        reason = answer.reason or "refused"
        raise PairingFailed(reason, PAIRING_MESSAGES.get(reason, f"pairing refused: {reason}"))
    return Credential(
        server_url=url,
        device_name=answer.device_name or device_name,  # the server may have made it unique
        auth_token=answer.auth_token,
        rooms=answer.channels or (),
        paired_at=time.time(),
    )


class ServerLink:
    """Keeps one websocket to the server up; ``await link.run()`` until :meth:`close`."""

    def __init__(
        self,
        credential: Callable[[], Credential | None],
        handler: LinkHandler,
        codec_header: p.CodecHeader,
        settings: LinkSettings | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._credential = credential
        self._handler = handler
        self.codec_header = codec_header
        self.settings = settings or LinkSettings()
        self._now = monotonic
        self._ws: ClientConnection | None = None
        self._seq = itertools.count(1)
        self._pending: dict[int, int] = {}  # start_stream seq -> the machine's request id
        self._answers: dict[int, asyncio.Future[p.Response | None]] = {}  # awaited requests
        self._own_streams: set[int] = set()
        self._closed = False
        self._wake = asyncio.Event()
        self._closing: set[asyncio.Task[None]] = set()
        self.online = False
        self.last_error = ""
        self.connects = 0
        self.outage = Outage()

    # -- sending (called from the daemon, on the loop thread; never blocks) -------------------

    def _send(self, data: str | bytes) -> bool:
        ws = self._ws
        if ws is None:
            return False
        broadcast((ws,), data)
        return True

    def start_stream(self, request: int, room: str, priority: p.Priority) -> None:
        seq = next(self._seq)
        self._pending[seq] = request
        message = p.StartStream(
            self.codec_header,
            self.codec_header.packet_duration_ms,
            seq=seq,
            channel=room,
            priority=priority,
        )
        if not self._send(message.to_json()):
            self._pending.pop(seq, None)
            self._handler(StreamRefused(self._now(), request, "offline"))

    def stop_stream(self, stream_id: int, room: str | None) -> None:
        self._own_streams.discard(stream_id)
        self._send(p.StopStream(stream_id, channel=room).to_json())

    def send_audio(self, stream_id: int, payload: bytes) -> None:
        self._send(p.AudioPacket(stream_id, 0, payload).encode())

    def send_text(self, room: str, text: str) -> None:
        self._send(p.SendTextMessage(room, text).to_json())

    async def unpair(self) -> bool:
        """Tell the server, over the live connection, that this device gives its credential up.

        True when the server confirmed; False when offline (nothing sent) or no answer came.
        The server closes the connection afterwards; the caller drops the credential.
        """
        ws = self._ws
        if ws is None:
            return False
        seq = next(self._seq)
        answer: asyncio.Future[p.Response | None] = asyncio.get_running_loop().create_future()
        self._answers[seq] = answer
        try:
            await ws.send(p.Unpair(seq=seq).to_json())
            async with asyncio.timeout(self.settings.answer_timeout):
                response = await answer
        except (OSError, TimeoutError, ConnectionClosed) as exc:
            log.warning("link: unpair not confirmed: %s", exc or type(exc).__name__)
            return False
        finally:
            self._answers.pop(seq, None)
        return response is not None and response.success

    def drop(self) -> None:
        """Close the current connection (the credential was given up); :meth:`run` goes on and
        waits for a credential."""
        self._wake.set()
        ws = self._ws
        if ws is not None:
            self._ws = None
            task = asyncio.get_running_loop().create_task(ws.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    # -- lifecycle ------------------------------------------------------------------------

    def wake(self) -> None:
        """Try again now (a new credential was stored, or the network came back)."""
        self._wake.set()

    async def close(self) -> None:
        self._closed = True
        self._wake.set()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()

    async def run(self) -> None:
        backoff = self.settings.backoff_initial
        while not self._closed:
            credential = self._credential()
            if credential is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            self._handler(LinkConnecting(self._now()))
            outcome: Outcome = "failed"
            lost = False
            connects = self.connects
            try:
                outcome = await self._session(credential)
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI, ConnectionClosed) as exc:
                _, self.last_error = describe_failure(exc)
            except ProtocolError as exc:
                self.last_error = f"server sent a bad message: {exc}"
            finally:
                self._ws = None
                self._pending.clear()
                for waiting in self._answers.values():
                    if not waiting.done():
                        waiting.set_result(None)
                self._own_streams.clear()
                if self.online:
                    self.online = False
                    lost = True
                    self._handler(LinkDown(self._now(), self.last_error))
            if self._closed:
                break
            refused = outcome == "refused"
            self._report(credential, refused=refused, lost=lost, failed=outcome == "failed")
            if refused:
                self._handler(CredentialRefused(self._now()))
                self._wake.clear()
                await self._wake.wait()
                backoff = self.settings.backoff_initial
                continue
            if self.connects > connects:  # this session got online: start the back-off afresh
                backoff = self.settings.backoff_initial
            delay = random.uniform(0, backoff)  # full jitter
            backoff = min(backoff * 2, self.settings.backoff_max)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    def _report(self, credential: Credential, *, refused: bool, lost: bool, failed: bool) -> None:
        """Log the end of a session as :class:`Outage` says: not every failed attempt."""
        if refused or self._credential() != credential:
            self.outage.end()  # refused (said already), or given up: nothing is down
            return
        now = self._now()
        line = (
            self.outage.lost(now, self.last_error or "connection closed")
            if lost
            else self.outage.failed(now, self.last_error)
            if failed
            else None
        )
        if line is not None:
            log.warning("link to %s: %s", credential.server_url, line)

    async def _session(self, credential: Credential) -> Outcome:
        """One connection, from logon to loss: ``refused`` if the credential was refused for
        good, ``failed`` if the logon failed otherwise, else ``ended``."""
        async with _connect(credential.server_url, self.settings) as ws:
            seq = next(self._seq)
            await ws.send(
                p.Logon(
                    channels=credential.rooms,
                    seq=seq,
                    auth_token=credential.auth_token,
                    version=__version__,
                    platform_type="pttd",
                    platform_name=credential.device_name,
                ).to_json()
            )
            async with asyncio.timeout(self.settings.answer_timeout):
                answer = await self._await_logon(ws, seq)
            if not answer.success:
                self.last_error = f"logon refused: {answer.error}"
                # Refused for good only when the credential itself is: not when rate-limited.
                if answer.error == p.NOT_AUTHORIZED and answer.reason != p.REASON_RATE_LIMITED:
                    log.error("link: %s", self.last_error)
                    return "refused"
                return "failed"
            if self._credential() != credential:
                return "ended"  # given up (unpaired) while logging on: this session is over
            self._ws = ws
            self.online = True
            self.connects += 1
            self.last_error = ""
            back = self.outage.online(self._now())
            log.info(
                "online at %s in %s%s",
                credential.server_url,
                ", ".join(credential.rooms),
                f"; {back}" if back else "",
            )
            self._handler(LinkUp(self._now(), credential.rooms))
            revoked = False
            async for frame in ws:
                if isinstance(frame, bytes):
                    self._on_audio(frame)
                    continue
                try:
                    message = p.parse_server_message(frame)
                except ProtocolError as exc:
                    log.warning("link: ignoring a bad message from the server: %s", exc)
                    continue
                if isinstance(message, p.OnError) and message.error == p.NOT_AUTHORIZED:
                    revoked = True
                self._dispatch(message)
            if revoked:
                self.last_error = "the server revoked this device's credential"
                log.error("link: %s", self.last_error)
            elif self._credential() is None:
                self.last_error = ""  # dropped: the credential was given up
            else:
                self.last_error = f"connection closed ({ws.close_code})"
            return "refused" if revoked else "ended"

    async def _await_logon(self, ws: ClientConnection, seq: int) -> p.Response:
        while True:
            frame = await ws.recv()
            if not isinstance(frame, str):
                continue
            message = p.parse_server_message(frame)
            if isinstance(message, p.Response) and message.seq == seq:
                return message

    def _on_audio(self, frame: bytes) -> None:
        try:
            packet = p.parse_audio_packet(frame)
        except ProtocolError as exc:
            log.debug("link: bad audio packet: %s", exc)
            return
        self._handler(packet)

    def _dispatch(self, message: p.ServerMessage) -> None:
        now = self._now()
        if isinstance(message, p.Response):
            waiting = self._answers.pop(message.seq, None)
            if waiting is not None:
                if not waiting.done():
                    waiting.set_result(message)
                return
            request = self._pending.pop(message.seq, None)
            if request is None:
                return  # the answer to a stop_stream or a text message
            if message.success and message.stream_id is not None:
                self._own_streams.add(message.stream_id)
                self._handler(StreamGranted(now, request, message.stream_id))
            else:
                self._handler(
                    StreamRefused(
                        now, request, message.reason or message.error or "", message.talker or ""
                    )
                )
        elif isinstance(message, p.OnStreamStop) and message.stream_id in self._own_streams:
            self._own_streams.discard(message.stream_id)
            self._handler(OwnStreamStopped(now, message.stream_id, message.reason or ""))
        elif isinstance(message, p.OnStreamStart | p.OnStreamStop | p.OnTextMessage):
            self._handler(message)
        elif isinstance(message, p.OnError):
            log.warning("link: the server says: %s", message.error)
