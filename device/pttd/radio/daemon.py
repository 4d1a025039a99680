"""The device daemon: wires the state machine to the link, the audio path, the inputs and LEDs.

Everything runs on one asyncio loop. Hardware threads cross into it in their adapters
(``call_soon_threadsafe``); the only thread this module shares state with is the audio output's,
through the :class:`~pttd.radio.audio.mixer.Mixer`. Decisions are the state machine's: this module
turns events into :meth:`DeviceMachine.handle` calls and carries the returned actions out, in order.
What the operator's log says about talking (presses, permits, refusals, other talkers, texts
arriving) is the machine's :class:`~pttd.radio.machine.Report` actions, logged here at INFO: one
way,
and never with what was said or written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from pttd.e2ee.keyring import Keyring, NoRoomKey
from pttd.e2ee.keys import AuthorityPublicKey, E2eeError, IdentityKey, KeyRefused
from pttd.e2ee.sframe import SFrameError
from pttd.errors import CodecError, StoreError
from pttd.radio.audio import AudioInput, AudioOutput, Pcm
from pttd.radio.audio.codec import Encoder, OpusSettings
from pttd.radio.audio.mixer import Mixer
from pttd.radio.audio.tones import tone
from pttd.radio.config import Config
from pttd.radio.inputs import Button, ButtonEdge, Input, InputGone
from pttd.radio.leds import Leds
from pttd.radio.link import LinkEvent, LinkSettings, ServerLink
from pttd.radio.machine import (
    Action,
    CancelTimer,
    CapturedFrame,
    ChangeRoom,
    CloseCapture,
    CredentialRefused,
    DeviceMachine,
    Event,
    IncomingStart,
    IncomingStop,
    InputLost,
    Link,
    LinkUp,
    MachineSettings,
    MutePlayback,
    OpenCapture,
    Paired,
    PlayTone,
    PttPressed,
    PttReleased,
    Report,
    RoomLock,
    RoomSelected,
    SendAudio,
    SendStartStream,
    SendStopStream,
    SetLed,
    Shutdown,
    StartTimer,
    StopLink,
    TextArrived,
    TimerFired,
    Tone,
    Unpaired,
)
from pttd.radio.status import DeviceStatus
from pttd.radio.store import Credential, Store
from pttd.ratelimit import doubling
from pttd.wire import messages as p

log = logging.getLogger(__name__)

NO_IDENTITY = "this device has no identity key: pair it again"
VOLUME_STEP = 10
BLINK = (0.25, 0.25)


KEEP = 256  # the recent values a counter keeps: what the tests and the bench look at

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


class Recent(Generic[T]):
    """The last ``keep`` values of a series, and how many there were in all: bounded memory
    however long the daemon runs."""

    def __init__(self, keep: int = KEEP) -> None:
        self._kept: deque[T] = deque(maxlen=keep)
        self.total = 0

    def append(self, value: T) -> None:
        self._kept.append(value)
        self.total += 1

    def since(self, mark: int) -> list[T]:
        """The values appended since :attr:`total` was ``mark`` (as many as are kept)."""
        count = min(self.total - mark, len(self._kept))
        return list(self._kept)[len(self._kept) - count :] if count > 0 else []

    def __len__(self) -> int:
        return len(self._kept)

    def __iter__(self) -> Iterator[T]:
        return iter(self._kept)

    def __getitem__(self, index: int) -> T:
        return self._kept[index]


class Tally(Recent[K]):
    """:class:`Recent`, and a count of each value over the whole run (for a few distinct values,
    such as the tones)."""

    def __init__(self, keep: int = KEEP) -> None:
        super().__init__(keep)
        self._counts: Counter[K] = Counter()

    def append(self, value: K) -> None:
        super().append(value)
        self._counts[value] += 1

    def count(self, value: K) -> int:
        """How many times ``value`` came, in all."""
        return self._counts[value]

    def __contains__(self, value: object) -> bool:
        return value in self._counts


@dataclass
class Counters:
    packets_sent: int = 0
    packets_received: int = 0
    packets_unopened: int = 0  # encrypted packets that did not open (forged, no key, replayed)
    streams_heard: int = 0
    texts_received: int = 0
    talks: int = 0
    access_times: Recent[float] = field(default_factory=Recent)  # press edge → talk permit, s
    online_times: Recent[float] = field(default_factory=Recent)  # the link came up (logged on)
    tones: Tally[Tone] = field(default_factory=Tally)


class Device:
    """One PTT device. ``await device.run()`` until :meth:`stop`."""

    def __init__(
        self,
        config: Config,
        *,
        store: Store,
        audio_in: AudioInput,
        audio_out: AudioOutput,
        inputs: list[Input],
        leds: Leds,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.store = store
        self.audio_in = audio_in
        self.audio_out = audio_out
        self.inputs = inputs
        self.leds = leds
        self.clock = clock
        a = config.audio
        self.opus = OpusSettings.from_config(a)
        self.encoder = Encoder(self.opus)
        saved = store.settings()
        self.mixer = Mixer(
            audio_out.sample_rate,
            audio_out.frame_samples,
            volume=saved.volume if saved.volume is not None else a.volume,
        )
        self._credential = self._load_credential()
        self._generation: int | None = None  # SFrame counter generation of this run
        self.keyring = self._make_keyring()
        self._streams: dict[int, tuple[str, bool]] = {}  # heard stream -> (room, encrypted)
        self.machine = DeviceMachine(
            MachineSettings(
                toggle=config.talk.mode == "toggle",
                talk_timeout=config.talk.timeout,
                simplex=a.simplex,
                roger_beep=a.roger_beep,
            ),
            paired=self._credential is not None,
        )
        if self._credential is not None:  # a room saved while paired means nothing unpaired
            self.machine.room = saved.room
        self.link = ServerLink(
            lambda: self._credential,
            self._on_link_event,
            self.opus.codec_header(),
            LinkSettings(ca_file=config.server.ca_file, tls_verify=config.server.tls_verify),
            monotonic=clock,
        )
        self.counters = Counters()
        self.frame_taps: list[Callable[[Pcm], None]] = []  # e.g. the console's level meter
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._press_t: float | None = None
        self._stopping = asyncio.Event()
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.started_at = clock()

    # -- state -----------------------------------------------------------------------------

    def _load_credential(self) -> Credential | None:
        try:
            return self.store.credential()
        except StoreError as exc:
            log.error("%s: starting unpaired", exc)
            return None

    def _make_keyring(self) -> Keyring | None:
        """The keyring of the credential's identity (None: unpaired, or paired before end-to-end
        encryption: its encrypted rooms stay locked). A damaged identity or authority key is
        logged, and its rooms stay locked."""
        credential = self._credential
        if credential is None:
            return None
        try:
            private = self.store.identity()
            if private is None:
                return None
            authority = (
                AuthorityPublicKey.from_text(credential.authority_key)
                if credential.authority_key
                else None
            )
            identity = IdentityKey.from_bytes(private)
            if credential.identity_key and identity.public.to_text() != credential.identity_key:
                raise E2eeError(
                    "the identity key in the state directory is not the one this device paired "
                    "with: pair it again"
                )
            if not self.store.has_generation():
                raise E2eeError(
                    "the SFrame counter state (sframe.json) is gone while the identity key is "
                    "there: counters could repeat; pair the device again"
                )
            if self._generation is None:
                self._generation = self.store.next_generation()
            return Keyring(
                identity,
                authority,
                credential.device_name,
                self._generation,
                floors=self.store.room_epochs(),
            )
        except (StoreError, E2eeError) as exc:
            log.error("end-to-end keys unusable: %s; encrypted rooms stay locked", exc)
            return None

    @property
    def credential(self) -> Credential | None:
        return self._credential

    def set_credential(self, credential: Credential | None) -> None:
        """A new pairing (already stored) or an unpairing: the link follows."""
        self._credential = credential
        self.keyring = self._make_keyring()
        if credential is not None:
            self.feed(Paired(self.clock()))
            self.link.wake()
        else:
            self.feed(Unpaired(self.clock()))  # capture closes first, then the link drops
            self.link.drop()

    # -- running ---------------------------------------------------------------------------

    async def run(self, ready: Callable[[], object] | None = None) -> None:
        self._execute(self.machine.initial_actions())
        self.audio_out.start(self.mixer.pull)
        for source in self.inputs:
            await source.start(self._on_edge)
        link_task = asyncio.create_task(self.link.run(), name="link")
        self._tasks.append(link_task)
        log.info("device %s running", self.config.device.name)
        if ready is not None:
            ready()
        try:
            await self._stopping.wait()
        finally:
            await self._shutdown()

    def stop(self) -> None:
        self._stopping.set()

    async def add_input(self, source: Input) -> None:
        """An input added while running (the console's ``bt add``): started at once."""
        if self._stopping.is_set():
            raise RuntimeError("the device is stopping")
        await source.start(self._on_edge)
        self.inputs.append(source)

    async def remove_input(self, name: str) -> bool:
        """Stop and drop the input called ``name`` (``bt forget``); False if there is none.
        Its held buttons are released as it closes, as at shutdown."""
        for source in list(self.inputs):
            if source.name == name:
                self.inputs.remove(source)
                await _closing(f"input {name}", source.close)
                return True
        return False

    async def _shutdown(self) -> None:
        # Capture closes first (the machine orders it), the stream stops, then the link closes.
        self.feed(Shutdown(self.clock()))
        for source in list(self.inputs):  # a snapshot: the console may still change the list
            await _closing(f"input {source.name}", source.close)
        await asyncio.sleep(0)  # let the stop_stream reach the socket before closing it
        await self.link.close()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for handle in self._timers.values():
            handle.cancel()
        await _closing("the microphone", self.audio_in.close)
        await _closing("the speaker", self.audio_out.stop)
        await _closing("the LEDs", self.leds.close)
        log.info("device %s stopped", self.config.device.name)

    # -- events in ------------------------------------------------------------------------

    def feed(self, event: Event) -> None:
        self._execute(self.machine.handle(event))
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def until(self, condition: Callable[[DeviceMachine], bool]) -> None:
        """Wait until ``condition(machine)`` holds (checked after every event); bound it with
        ``asyncio.timeout``."""
        while not condition(self.machine):
            await self._changed.wait()

    def _on_edge(self, edge: ButtonEdge | InputGone) -> None:
        if self._stopping.is_set():
            return  # adapters report releases as they close: the machine has shut down
        if isinstance(edge, InputGone):
            self.feed(InputLost(edge.t, edge.source))
            return
        b = edge.button
        if b in (Button.PTT, Button.EMERGENCY):
            emergency = b is Button.EMERGENCY
            if edge.pressed:
                self._press_t = edge.t
                self.feed(PttPressed(edge.t, emergency, edge.source))
            else:
                self.feed(PttReleased(edge.t, emergency, edge.source))
        elif edge.pressed and b in (Button.ROOM_UP, Button.ROOM_DOWN):
            self.feed(ChangeRoom(edge.t, step=1 if b is Button.ROOM_UP else -1))
        elif edge.pressed and b in (Button.VOLUME_UP, Button.VOLUME_DOWN):
            self.change_volume(VOLUME_STEP if b is Button.VOLUME_UP else -VOLUME_STEP)

    def set_volume(self, volume: int, *, save: bool = True, tone: bool = False) -> int:
        """The one way the volume changes (the buttons, the console's ``config set audio.volume``,
        its factory reset): clamped to 0…100, applied at once, a tone if asked, and saved for
        the next start unless ``save`` is false. StoreError when saving fails: the volume
        applies anyway."""
        volume = max(0, min(100, volume))
        self.mixer.set_volume(volume)
        if tone:
            self._play(Tone.ROOM)
        if save:
            self.store.update_settings(volume=volume)
        return volume

    def change_volume(self, delta: int) -> int:
        """A volume button: a step up or down, with a tone; a failed save is logged."""
        volume = max(0, min(100, self.mixer.volume + delta))
        try:
            self.set_volume(volume, tone=True)
        except StoreError as exc:
            log.error("volume not saved: %s", exc)
        return volume

    def _on_frame(self, frame: Pcm, t: float) -> None:
        for tap in self.frame_taps:
            tap(frame)
        if not self.machine.wants_frames:
            return  # not worth encoding: the machine would drop it
        try:
            payload = self.encoder.encode(frame)
        except CodecError as exc:
            log.warning("frame not encoded: %s", exc)
            return
        self.feed(CapturedFrame(t, payload))

    def _on_link_event(self, event: LinkEvent) -> None:
        if self._stopping.is_set():
            # The machine has shut down (link OFFLINE, LEDs off); the LinkDown the closing link
            # reports would make it 'connecting' again, blink the online LED and play a tone.
            return
        now = self.clock()
        if isinstance(event, p.AudioPacket):
            self.counters.packets_received += 1
            payload = self._opened(event)
            if payload is not None:
                self.mixer.push_packet(event.stream_id, event.packet_id, payload, now)
        elif isinstance(event, p.OnStreamStart):
            self.counters.streams_heard += 1
            encrypted = event.codec_header.sframe_suite is not None
            self._streams[event.stream_id] = (event.channel, encrypted)
            self.mixer.start_stream(event.stream_id, event.codec_header, now)
            self.feed(IncomingStart(now, event.stream_id, event.channel, event.from_))
        elif isinstance(event, p.OnStreamStop):
            self._streams.pop(event.stream_id, None)
            self.mixer.stop_stream(event.stream_id)
            self.feed(IncomingStop(now, event.stream_id))
        elif isinstance(event, p.OnTextMessage):
            # The device has no screen: the message goes no further. Only that it came (who,
            # where, how long) reaches the log; its text is kept nowhere.
            self.counters.texts_received += 1
            self.feed(TextArrived(now, event.channel, event.from_, len(event.text)))
        elif isinstance(event, p.OnRoomKey):
            self._on_room_key(event, now)
        elif isinstance(event, p.OnChannelStatus):
            self._on_room_status(event, now)
        elif isinstance(event, LinkUp):
            self._streams.clear()
            self._link_up(event)
        else:
            if isinstance(event, CredentialRefused) and self.keyring is not None:
                self.keyring.forget()
            self.feed(event)

    # -- end-to-end encryption -------------------------------------------------------------

    def _link_up(self, event: LinkUp) -> None:
        """Online: the encrypted rooms (those the link reports locked, waiting for keys) are
        locked unless the keyring holds their keys already (a reconnection)."""
        encrypted = {room for room, _ in event.locked}
        keyring = self.keyring
        if keyring is None:
            locked = tuple((room, NO_IDENTITY) for room in event.rooms if room in encrypted)
        else:
            for room in event.rooms:
                keyring.set_encrypted(room, room in encrypted)
            locked = keyring.locked(event.rooms)
        was_online = self.machine.link is Link.ONLINE
        self.feed(LinkUp(event.t, event.rooms, locked))
        if not was_online and self.machine.link is Link.ONLINE:
            self.counters.online_times.append(event.t)

    def _on_room_key(self, event: p.OnRoomKey, now: float) -> None:
        keyring = self.keyring
        if keyring is None:
            log.error("a room key for %s came, but %s", event.channel, NO_IDENTITY)
            return
        try:
            key = keyring.accept(event.channel, event.key)
        except KeyRefused as exc:
            log.error("room key for %s refused: %s", event.channel, exc.reason)
            self.feed(RoomLock(now, event.channel, keyring.why_locked(event.channel)))
            return
        log.info(
            "room key for %s: epoch %d, %d members, this device is sender %d",
            event.channel,
            key.epoch,
            len(key.roster),
            key.sender_index,
        )
        try:  # an older epoch is refused after a restart too
            self.store.save_room_epochs(keyring.floors)
        except StoreError as exc:
            log.error("room key epochs not saved: %s", exc)
        self.feed(RoomLock(now, event.channel, None))

    def _on_room_status(self, event: p.OnChannelStatus, now: float) -> None:
        """A room turned encrypted (or clear) while online."""
        room, keyring = event.channel, self.keyring
        if event.status != "online" or room not in self.machine.rooms:
            return
        if keyring is None:
            if event.encrypted:
                self.feed(RoomLock(now, room, NO_IDENTITY))
            return
        if (room in keyring.encrypted) != event.encrypted:
            if not keyring.set_encrypted(room, event.encrypted):
                log.error("room %s: %s", room, keyring.why_locked(room))
            self.feed(RoomLock(now, room, keyring.why_locked(room)))

    def _opened(self, packet: p.AudioPacket) -> bytes | None:
        """An incoming packet's Opus: as it came in a clear stream, opened in an encrypted one
        (None: it does not open; the jitter buffer conceals the gap)."""
        room, encrypted = self._streams.get(packet.stream_id, ("", False))
        keyring = self.keyring
        try:
            if not encrypted:
                if keyring is None or room not in keyring.encrypted:
                    return packet.payload
                raise NoRoomKey("clear audio in an encrypted room")  # not played
            if keyring is None:
                raise NoRoomKey(NO_IDENTITY)
            return keyring.open(room, packet.payload).payload
        except (SFrameError, NoRoomKey) as exc:
            self.counters.packets_unopened += 1
            if doubling(self.counters.packets_unopened):  # a flood cannot flood the log
                log.warning(
                    "packet of stream %d in %s not opened (%d so far): %s",
                    packet.stream_id,
                    room,
                    self.counters.packets_unopened,
                    exc,
                )
            return None

    def _sealed(self, payload: bytes) -> bytes | None:
        """Our packet as it goes out: sealed in an encrypted room (None: no key, not sent). The
        talk's room is the selected one: a room change ends the talk first."""
        room, keyring = self.machine.room, self.keyring
        if room is None or keyring is None or room not in keyring.encrypted:
            return payload
        try:
            return keyring.seal(room, payload)
        except (SFrameError, NoRoomKey) as exc:
            log.error("packet not sent: %s", exc)
            return None

    # -- actions out ----------------------------------------------------------------------

    def _execute(self, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case OpenCapture():
                    self.encoder.reset()
                    self.audio_in.open(self._on_frame)
                case CloseCapture():
                    self.audio_in.close()
                case SendAudio():
                    sealed = self._sealed(action.payload)
                    if sealed is not None:
                        self.link.send_audio(action.stream_id, sealed)
                        self.counters.packets_sent += 1
                case SendStartStream():
                    self.counters.talks += 1
                    suite = None
                    if self.keyring is not None and action.room in self.keyring.encrypted:
                        suite = self.keyring.suite(action.room)
                    self.link.start_stream(action.request, action.room, action.priority, suite)
                case SendStopStream():
                    self.link.stop_stream(action.stream_id, action.room)
                case PlayTone():
                    self.counters.tones.append(action.tone)
                    if action.tone is Tone.TALK_PERMIT and self._press_t is not None:
                        self.counters.access_times.append(self.clock() - self._press_t)
                    self._play(action.tone)
                case SetLed():
                    led = self.leds.all()[action.led]
                    if action.mode == "on":
                        led.on()
                    elif action.mode == "off":
                        led.off()
                    else:
                        led.blink(*BLINK)
                case StartTimer():
                    self._cancel_timer(action.name)
                    self._timers[action.name] = asyncio.get_running_loop().call_later(
                        action.delay, self._fire, action.name
                    )
                case CancelTimer():
                    self._cancel_timer(action.name)
                case MutePlayback():
                    self.mixer.set_muted(action.muted)
                case Report():
                    log.info("%s", action.text)
                case RoomSelected():
                    try:
                        self.store.update_settings(room=action.room)
                    except StoreError as exc:
                        log.error("room selection not saved: %s", exc)
                case StopLink():
                    log.error("the server refused this device's credential: pair it again")

    def _play(self, kind: Tone) -> None:
        self.mixer.play(tone(kind, self.audio_out.sample_rate, self.config.audio.tone_level_db))

    def _fire(self, name: str) -> None:
        self._timers.pop(name, None)
        self.feed(TimerFired(self.clock(), name))

    def _cancel_timer(self, name: str) -> None:
        handle = self._timers.pop(name, None)
        if handle is not None:
            handle.cancel()

    # -- what the console and the demo read --------------------------------------------------

    def status(self) -> DeviceStatus:
        m, credential = self.machine, self._credential
        return DeviceStatus(
            device=credential.device_name if credential else self.config.device.name,
            paired=credential is not None and m.link is not Link.UNPAIRED,
            link=m.link.value,
            server=credential.server_url if credential else self.config.server.url,
            rooms=tuple(m.rooms),
            room=m.room,
            transmitting=m.transmitting,
            mic_open=m.capture_open,
            receiving=bool(m.incoming),
            last_error=m.last_error or self.link.last_error,
            volume=self.mixer.volume,
            uptime_s=round(self.clock() - self.started_at, 1),
            packets_sent=self.counters.packets_sent,
            packets_received=self.counters.packets_received,
            fingerprint=self.fingerprint,
            room_keys=tuple(
                (room, self.keyring.state(room))
                for room in m.rooms
                if self.keyring is not None and room in self.keyring.encrypted
            ),
            accessories=tuple(
                (source.name, state)
                for source in self.inputs
                if isinstance(state := getattr(source, "state", None), str)
            ),
        )

    @property
    def fingerprint(self) -> str | None:
        """The identity key's fingerprint, as the installer reads it to the admin."""
        return str(self.keyring.identity.public.fingerprint) if self.keyring else None


async def _closing(what: str, close: Callable[[], object]) -> None:
    """Close one part at shutdown; a failure is logged, and the other parts close still."""
    try:
        result = close()
        if isinstance(result, Awaitable):
            await result
    except Exception:
        log.exception("closing %s failed", what)
