"""The device's link to the room server: a websockets client that keeps itself connected.

The rules of the device's side of the wire (logon, answers matched by seq, our own stream,
revocation, the reconnect back-off) are :class:`pttd.wire.client.ClientCore`'s, sans-I/O.
:class:`ServerLink` only moves frames: it opens connections (TLS verified by default), feeds the
core frames and time, runs its one timer, sleeps for its back-off, carries out what it says and
passes its outcomes on to the daemon as the state machine's events (plus incoming streams and
audio for the mixer). Websockets answers pings. A refused credential stops it until
:meth:`ServerLink.wake` (a new pairing).

While the server cannot be reached the log gets the first failure, then a summary at a falling
rate, and one line when the link is back, saying how long it was down (:class:`Outage`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Final, TypeAlias

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.connection import broadcast
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from pttd import __version__
from pttd.e2ee.keyring import WAITING
from pttd.e2ee.keys import IdentityKey
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
from pttd.radio.store import Credential, Store
from pttd.wire import messages as p
from pttd.wire.client import (
    BadFrame,
    ClientCore,
    ClientSettings,
    Close,
    Denied,
    Effect,
    Granted,
    Offline,
    Online,
    Outcome,
    OwnStreamEnded,
    Revoked,
    Send,
    ServerError,
    SessionEnded,
    TimedOut,
    UnpairAnswered,
)

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
    | p.OnRoomKey
    | p.OnChannelStatus
)
LinkHandler = Callable[[LinkEvent], None]


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


def with_identity(credential: Credential, store: Store, authority: str | None) -> Credential:
    """A new pairing's identity key: its private half saved in ``store`` (0600), its public half
    and the key authority's public key (from the pairing link) with the credential, which the
    caller saves next. Every pairing makes a new one: a device paired again is a new member."""
    identity = IdentityKey.generate()
    store.next_generation()  # the counter state exists before the key that needs it
    store.save_identity(identity.to_bytes())
    return replace(credential, identity_key=identity.public.to_text(), authority_key=authority)


class ServerLink:
    """Keeps one websocket to the server up; ``await link.run()`` until :meth:`close`.

    The rules are :class:`~pttd.wire.client.ClientCore`'s: this class opens connections, feeds
    the core frames and time, carries out what it says (send, close) and passes its outcomes on
    to the handler as the state machine's events. ``rng`` is the back-off's random source.
    """

    def __init__(
        self,
        credential: Callable[[], Credential | None],
        handler: LinkHandler,
        codec_header: p.CodecHeader,
        settings: LinkSettings | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._credential = credential
        self._handler = handler
        self.codec_header = codec_header
        self._now = monotonic
        self.core = ClientCore(codec_header, rng=rng)
        self.settings = settings or LinkSettings()
        self._ws: ClientConnection | None = None
        self._url = ""
        self._answers: dict[int, asyncio.Future[tuple[bool, str]]] = {}  # unpair seq -> answer
        self._closed = False
        self._wake = asyncio.Event()
        self._closing: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.last_error = ""
        self.connects = 0
        self.outage = Outage()
        # Waiting for wake() alone (no credential, or it was refused): no attempt until then.
        self.paused = False

    @property
    def settings(self) -> LinkSettings:
        return self._settings

    @settings.setter
    def settings(self, settings: LinkSettings) -> None:
        self._settings = settings
        self.core.settings = ClientSettings(
            answer_timeout=settings.answer_timeout,
            backoff_initial=settings.backoff_initial,
            backoff_max=settings.backoff_max,
            version=__version__,
        )

    @property
    def online(self) -> bool:
        return self.core.online

    # -- sending (called from the daemon, on the loop thread; never blocks) -------------------

    def start_stream(
        self, request: int, room: str, priority: p.Priority, sframe_suite: int | None = None
    ) -> None:
        self._apply(self.core.start_stream(request, room, priority, self._now(), sframe_suite))

    def stop_stream(self, stream_id: int, room: str | None) -> None:
        self._apply(self.core.stop_stream(stream_id, room))

    def send_audio(self, stream_id: int, payload: bytes) -> None:
        self._apply(self.core.send_audio(stream_id, payload))

    def send_text(self, room: str, text: str) -> None:
        self._apply(self.core.send_text(room, text))

    async def unpair(self) -> bool:
        """Tell the server, over the live connection, that this device gives its credential up.

        True when the server confirmed; False when offline (nothing sent) or no answer came.
        The server closes the connection afterwards; the caller drops the credential.
        """
        seq, effects = self.core.unpair(self._now())
        if seq is None:
            return False
        answer: asyncio.Future[tuple[bool, str]] = asyncio.get_running_loop().create_future()
        self._answers[seq] = answer
        try:
            self._apply(effects)
            confirmed, why = await answer
        finally:
            self._answers.pop(seq, None)
        if not confirmed:
            log.warning("link: unpair not confirmed: %s", why)
        return confirmed

    def drop(self) -> None:
        """Close the current connection (the credential was given up); :meth:`run` goes on and
        waits for a credential."""
        self._wake.set()
        self._apply(self.core.give_up())

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
        try:
            while not self._closed:
                credential = self._credential()
                if credential is None:
                    await self._sleep(None)
                    continue
                self._handler(LinkConnecting(self._now()))
                ended = await self._session(credential)
                if self._closed:
                    break
                if ended is None:
                    continue  # given up before logging on: see what the credential is now
                self._report(credential, ended)
                delay = self.core.retry_delay()
                if delay is None:
                    self._handler(CredentialRefused(self._now()))
                await self._sleep(delay)
        finally:
            self._set_timer(None)
            for waiting in self._answers.values():
                if not waiting.done():
                    waiting.set_result((False, "the link was closed"))

    async def _sleep(self, delay: float | None) -> None:
        """Wait ``delay`` seconds (None: for ever) or until :meth:`wake`."""
        self._wake.clear()
        if delay is None:
            self.paused = True
            try:
                await self._wake.wait()
            finally:
                self.paused = False
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()

    async def _session(self, credential: Credential) -> SessionEnded | None:
        """One connection, from logon to loss; None if the credential changed before it could
        log on."""
        code: int | None = None
        reason = error = ""
        self._url = credential.server_url
        try:
            async with _connect(credential.server_url, self.settings) as ws:
                if self._credential() != credential:
                    return None
                self._ws = ws
                try:
                    self._apply(self.core.opened(credential, self._now()))
                    async for frame in ws:
                        if isinstance(frame, bytes):
                            self._apply(self.core.binary(frame, self._now()))
                        else:
                            self._apply(self.core.text(frame, self._now()))
                finally:
                    self._ws = None
                    code, reason = ws.close_code, ws.close_reason or ""
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI, ConnectionClosed) as exc:
            _, error = describe_failure(exc)
        effects = self.core.closed(self._now(), code, reason, error)
        self.last_error = self.core.last_error
        self._apply(effects)
        return next(e for e in effects if isinstance(e, SessionEnded))

    def _report(self, credential: Credential, ended: SessionEnded) -> None:
        """Log the end of a session as :class:`Outage` says: not every failed attempt."""
        if ended.result == "refused" or self._credential() != credential:
            self.outage.end()  # refused (said already), or given up: nothing is down
            return
        now = self._now()
        line = (
            self.outage.lost(now, ended.error or "connection closed")
            if ended.was_online
            else self.outage.failed(now, ended.error)
            if ended.result == "failed"
            else None
        )
        if line is not None:
            log.warning("link to %s: %s", credential.server_url, line)

    # -- carrying the core's effects out ------------------------------------------------------

    def _apply(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Send):
                ws = self._ws
                if ws is not None:
                    broadcast((ws,), effect.data)
            elif isinstance(effect, Close):
                self._close_connection(effect.code, effect.reason)
            else:
                self._deliver(effect)
        self._set_timer(self.core.next_deadline)

    def _close_connection(self, code: int, reason: str) -> None:
        ws = self._ws
        if ws is not None:
            task = asyncio.get_running_loop().create_task(ws.close(code, reason))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def _deliver(self, outcome: Outcome) -> None:
        """An outcome of the core becomes the daemon's event, a log line, or an answer."""
        if isinstance(outcome, Online):
            self.connects += 1
            self.last_error = ""
            back = self.outage.online(outcome.t)
            log.info(
                "online at %s in %s%s",
                self._url,
                ", ".join(outcome.rooms),
                f"; {back}" if back else "",
            )
            # Encrypted rooms start locked: the daemon's keyring unlocks those it holds keys for.
            locked = tuple((room, WAITING) for room in outcome.encrypted)
            self._handler(LinkUp(outcome.t, outcome.rooms, locked))
        elif isinstance(outcome, Offline):
            self._handler(LinkDown(outcome.t, outcome.reason))
        elif isinstance(outcome, Granted):
            self._handler(StreamGranted(outcome.t, outcome.request, outcome.stream_id))
        elif isinstance(outcome, Denied):
            self._handler(StreamRefused(outcome.t, outcome.request, outcome.reason, outcome.talker))
        elif isinstance(outcome, OwnStreamEnded):
            self._handler(OwnStreamStopped(outcome.t, outcome.stream_id, outcome.reason))
        elif isinstance(outcome, Revoked):
            log.error("link: %s", outcome.why)  # the daemon hears of it once the session ended
        elif isinstance(outcome, UnpairAnswered):
            waiting = self._answers.get(outcome.seq)
            if waiting is not None and not waiting.done():
                waiting.set_result((outcome.confirmed, outcome.why))
        elif isinstance(outcome, ServerError):
            log.warning("link: the server says: %s", outcome.error)
        elif isinstance(outcome, BadFrame):
            if outcome.audio:
                log.debug("link: bad audio packet: %s", outcome.detail)
            else:
                log.warning("link: ignoring a bad message from the server: %s", outcome.detail)
        elif isinstance(outcome, TimedOut):
            log.debug("link: no answer to %s %d", outcome.kind, outcome.seq)
        elif isinstance(outcome, SessionEnded):
            pass  # :meth:`run` reports it and decides what comes next
        else:
            self._handler(outcome)  # incoming streams, their audio, text messages

    def _set_timer(self, deadline: float | None) -> None:
        """Run :meth:`ClientCore.tick` at ``deadline`` (None: no timer)."""
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            delay = max(0.0, deadline - self._now())
            self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        self._apply(self.core.tick(self._now()))
