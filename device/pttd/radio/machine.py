"""The device state machine, sans-I/O: one object decides everything.

Events go in (button edges with timestamps, link up/down, floor granted/refused, incoming streams,
timers, captured audio); actions come out (open/close capture, send start/stop_stream and audio,
play a tone, set LEDs, start/cancel timers, mute playback). The daemon carries actions out in the
order given. Time is passed in; nothing here sleeps, reads a clock or touches a device.

What the operator's log says about talking comes from here too, as :class:`Report` actions the
daemon logs at INFO: presses, talk permits, refusals (with the reason and who holds the floor),
the end of each talk, other talkers starting and stopping, text messages arriving. Who, which
room, why: never what was said or written.

The privacy rule lives here and only here: the microphone (capture) is open exactly while at least
one PTT input is held (or talk is latched on, in toggle mode) in a joined room and the talk was
neither refused nor timed out — or while the installer's explicit audio test runs. A device may
have several PTT inputs (a GPIO button, a serial accessory, a pedal…): each press and release says
which (its ``source``), and in hold mode a talk ends only when the last one held is released. In
toggle mode each press of any of them switches talk on or off; releases mean nothing.

An input can vanish (a USB pedal unplugged, a serial accessory's link dropped): its adapter says
so with :class:`InputLost`, never with a release (a release means nothing in toggle mode). Every
button it held is up, as if released, and a talk it latched on (toggle mode) ends at once: whoever
switched it on with that accessory can no longer switch it off. A talk latched by another input
goes on: that input is still there to switch it off, and a pedal unplugged on the floor says
nothing about the talk a hand button started (in hold mode likewise, a talk another input holds
goes on).

An encrypted room where the device holds no usable room key (not approved yet, a key refused, a
rotation that left it out) is *locked*: a press there plays the error tone and the microphone
never opens; a talk in a room that becomes locked ends at once. Which rooms are locked, and why,
the daemon learns from its keyring and says with :class:`LinkUp` and :class:`RoomLock`.

Every way out of talking closes capture first. Captured audio is sent only under a stream the
server granted; audio captured before the grant is held and sent first once it comes, and
dropped unsent on refusal.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

# --------------------------------------------------------------------------- vocabulary


class Link(enum.Enum):
    UNPAIRED = "unpaired"  # no credential, or the server refused it
    OFFLINE = "offline"  # not connected (and not trying: shutdown)
    CONNECTING = "connecting"
    ONLINE = "online"  # logged on, rooms joined


class Talk(enum.Enum):
    IDLE = "idle"
    REQUESTING = "requesting"  # capture open, frames held, start_stream sent
    TRANSMITTING = "transmitting"  # floor granted, frames flowing


class Tone(enum.StrEnum):
    TALK_PERMIT = "talk_permit"
    BUSY = "busy"
    ROGER = "roger"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    TIMEOUT_WARNING = "timeout_warning"
    ERROR = "error"  # press while offline or unpaired
    ROOM = "room"  # room selection changed


LedName: TypeAlias = Literal["online", "transmit", "receive", "error"]
LedMode: TypeAlias = Literal["on", "off", "blink"]
Priority: TypeAlias = Literal["normal", "emergency"]

TALK_TIMER = "talk"  # the transmit time-out
REQUEST_TIMER = "request"  # no answer to start_stream


# Events ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PttPressed:
    t: float
    emergency: bool = False  # the emergency button rather than a PTT
    source: str = ""  # which input: "gpio:17", "serial:/dev/ttyUSB0", "sim" …


@dataclass(frozen=True, slots=True)
class PttReleased:
    t: float
    emergency: bool = False
    source: str = ""


@dataclass(frozen=True, slots=True)
class InputLost:
    """The input ``source`` vanished: its buttons are up; a talk it latched on ends."""

    t: float
    source: str


@dataclass(frozen=True, slots=True)
class LinkConnecting:
    t: float


@dataclass(frozen=True, slots=True)
class LinkUp:
    t: float
    rooms: tuple[str, ...]
    locked: tuple[tuple[str, str], ...] = ()  # (room, why no talk there): encrypted, no key


@dataclass(frozen=True, slots=True)
class RoomLock:
    """An encrypted room's key changed: ``why`` the device cannot talk there (None: it can)."""

    t: float
    room: str
    why: str | None


@dataclass(frozen=True, slots=True)
class LinkDown:
    t: float
    reason: str = ""


@dataclass(frozen=True, slots=True)
class CredentialRefused:
    """The server refused the stored credential (revoked, unknown): stop, show unpaired."""

    t: float


@dataclass(frozen=True, slots=True)
class Paired:
    t: float


@dataclass(frozen=True, slots=True)
class Unpaired:
    """The installer gave the credential up (console ``unpair``, factory reset): show unpaired,
    without the error a refused credential is."""

    t: float


@dataclass(frozen=True, slots=True)
class StreamGranted:
    t: float
    request: int
    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamRefused:
    t: float
    request: int
    reason: str = ""
    talker: str = ""


@dataclass(frozen=True, slots=True)
class OwnStreamStopped:
    """The server ended our stream (its time-out, an emergency pre-empting us)."""

    t: float
    stream_id: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class IncomingStart:
    t: float
    stream_id: int
    room: str
    talker: str


@dataclass(frozen=True, slots=True)
class IncomingStop:
    t: float
    stream_id: int


@dataclass(frozen=True, slots=True)
class TimerFired:
    t: float
    name: str


@dataclass(frozen=True, slots=True)
class CapturedFrame:
    """One encoded frame from the microphone (Opus packet)."""

    t: float
    payload: bytes


@dataclass(frozen=True, slots=True)
class TextArrived:
    """A text message reached this device: who sent it, in which room, how long it was. Its
    text does not come here: nothing keeps or logs it."""

    t: float
    room: str
    sender: str
    length: int


@dataclass(frozen=True, slots=True)
class ChangeRoom:
    t: float
    step: int = 0  # +1 / -1: next / previous room
    name: str = ""  # or a room by name


@dataclass(frozen=True, slots=True)
class AudioTest:
    t: float
    on: bool


@dataclass(frozen=True, slots=True)
class Shutdown:
    t: float


Event: TypeAlias = (
    PttPressed
    | PttReleased
    | InputLost
    | LinkConnecting
    | LinkUp
    | RoomLock
    | LinkDown
    | CredentialRefused
    | Paired
    | Unpaired
    | StreamGranted
    | StreamRefused
    | OwnStreamStopped
    | IncomingStart
    | IncomingStop
    | TimerFired
    | CapturedFrame
    | ChangeRoom
    | AudioTest
    | TextArrived
    | Shutdown
)

# Actions ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenCapture:
    pass


@dataclass(frozen=True, slots=True)
class CloseCapture:
    pass


@dataclass(frozen=True, slots=True)
class SendStartStream:
    request: int
    room: str
    priority: Priority


@dataclass(frozen=True, slots=True)
class SendStopStream:
    stream_id: int
    room: str | None


@dataclass(frozen=True, slots=True)
class SendAudio:
    stream_id: int
    payload: bytes
    t: float  # when it was captured


@dataclass(frozen=True, slots=True)
class PlayTone:
    tone: Tone


@dataclass(frozen=True, slots=True)
class SetLed:
    led: LedName
    mode: LedMode


@dataclass(frozen=True, slots=True)
class StartTimer:
    name: str
    delay: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    name: str


@dataclass(frozen=True, slots=True)
class MutePlayback:
    muted: bool


@dataclass(frozen=True, slots=True)
class RoomSelected:
    """For the daemon to persist; None: no room selected any more (unpaired, revoked)."""

    room: str | None


@dataclass(frozen=True, slots=True)
class Report:
    """A line for the operator's log (INFO): what happened, never what was said."""

    text: str


@dataclass(frozen=True, slots=True)
class StopLink:
    """Stop connecting (the credential was refused): wait for a new pairing."""


Action: TypeAlias = (
    OpenCapture
    | CloseCapture
    | SendStartStream
    | SendStopStream
    | SendAudio
    | PlayTone
    | SetLed
    | StartTimer
    | CancelTimer
    | MutePlayback
    | RoomSelected
    | Report
    | StopLink
)


@dataclass(frozen=True, slots=True)
class MachineSettings:
    toggle: bool = False  # press to start, press to stop
    talk_timeout: float = 60.0
    request_timeout: float = 5.0  # no answer to start_stream within this: give up
    max_held_frames: int = 250  # audio held while waiting for the floor (5 s at 20 ms)
    simplex: bool = True  # own transmission mutes playback
    roger_beep: bool = False


# --------------------------------------------------------------------------- the machine


@dataclass
class DeviceMachine:
    """Feed events to :meth:`handle`; carry out the returned actions in order."""

    settings: MachineSettings = field(default_factory=MachineSettings)
    paired: bool = True
    link: Link = Link.OFFLINE
    talk: Talk = Talk.IDLE
    rooms: tuple[str, ...] = ()
    room: str | None = None  # the selected room (transmit); the device listens to all
    locked: dict[str, str] = field(default_factory=dict)  # room -> why no talk (no room key)
    capture_open: bool = False
    audio_test: bool = False
    # A press that went nowhere (refused, timed out, cut by link loss or room change): nothing
    # opens again until every button is released.
    blocked: bool = False
    # The PTT inputs held: ("ptt" or "emergency", the input's source).
    held_buttons: set[tuple[str, str]] = field(default_factory=set)
    latched_by: str | None = None  # toggle mode: talk switched on, by this input's press
    stream_id: int | None = None  # our granted stream
    request: int | None = None  # our outstanding start_stream
    incoming: dict[int, str] = field(default_factory=dict)  # stream_id -> talker
    incoming_rooms: dict[int, str] = field(default_factory=dict)  # stream_id -> room
    muted: bool = False
    last_error: str = ""
    _requests: int = 0
    _held: deque[CapturedFrame] = field(default_factory=deque)
    _leds: dict[str, LedMode] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.paired:
            self.link = Link.UNPAIRED

    # -- derived state ---------------------------------------------------------------------

    @property
    def latched(self) -> bool:
        """Toggle mode: talk is switched on."""
        return self.latched_by is not None

    @property
    def wants_talk(self) -> bool:
        """A PTT is held (hold mode) or latched on (toggle mode)."""
        return self.latched if self.settings.toggle else bool(self.held_buttons)

    @property
    def wants_frames(self) -> bool:
        """Captured frames may go somewhere (the floor asked for or granted): encode them.
        False during the audio test and after capture closed (a frame still in flight)."""
        return self.capture_open and not self.audio_test

    @property
    def transmitting(self) -> bool:
        return self.talk is Talk.TRANSMITTING

    @property
    def held_frames(self) -> int:
        return len(self._held)

    def initial_actions(self) -> list[Action]:
        """Actions that put LEDs in line with the starting state."""
        return self._leds_now()

    # -- the one entry point ---------------------------------------------------------------

    def handle(self, event: Event) -> list[Action]:
        out: list[Action] = []
        match event:
            case PttPressed():
                self._on_press(event, out)
            case PttReleased():
                self._on_release(event, out)
            case InputLost():
                self._on_input_lost(event, out)
            case CapturedFrame():
                self._on_frame(event, out)
            case StreamGranted():
                self._on_granted(event, out)
            case StreamRefused():
                self._on_refused(event, out)
            case OwnStreamStopped():
                self._on_own_stopped(event, out)
            case IncomingStart():
                self.incoming[event.stream_id] = event.talker
                self.incoming_rooms[event.stream_id] = event.room
                out.append(Report(f"{event.talker} talks in {event.room}"))
            case IncomingStop():
                talker = self.incoming.pop(event.stream_id, None)
                room = self.incoming_rooms.pop(event.stream_id, None)
                if talker is not None:
                    out.append(Report(f"{talker} stopped talking in {room}"))
            case TextArrived():
                out.append(
                    Report(
                        f"text message from {event.sender} in {event.room} "
                        f"({event.length} characters)"
                    )
                )
            case TimerFired():
                self._on_timer(event, out)
            case LinkConnecting():
                if self.link is not Link.UNPAIRED:
                    self.link = Link.CONNECTING
            case LinkUp():
                self._on_link_up(event, out)
            case RoomLock():
                self._on_room_lock(event, out)
            case LinkDown():
                self._on_link_down(event, out)
            case CredentialRefused():
                self._end_talk(out, block=True, stop=False, why="cut: credential refused")
                self._forget_pairing(out)
                self.last_error = "credential refused"
                out.append(StopLink())
            case Paired():
                self.paired = True
                if self.link is Link.UNPAIRED:
                    self.link = Link.OFFLINE
            case Unpaired():
                self._end_talk(out, block=True, why="ended: unpaired")
                self._set_audio_test(False, out)
                self._forget_pairing(out)
                self.last_error = ""
            case ChangeRoom():
                self._on_change_room(event, out)
            case AudioTest():
                self._on_audio_test(event, out)
            case Shutdown():
                self._end_talk(out, block=True, why="ended: shutting down")
                self._set_audio_test(False, out)
                self.link = Link.OFFLINE
                self._clear_incoming()
        out.extend(self._leds_now())
        return out

    # -- talking ---------------------------------------------------------------------------

    def _may_talk(self) -> bool:
        return (
            self.link is Link.ONLINE
            and self.room is not None
            and self.room not in self.locked
            and not self.blocked
        )

    def _on_press(self, event: PttPressed, out: list[Action]) -> None:
        button = ("emergency" if event.emergency else "ptt", event.source)
        pressed = "emergency button pressed" if event.emergency else "PTT pressed"
        if self.settings.toggle:
            if self.latched or self.talk is not Talk.IDLE:
                self.latched_by = None
                if self.talk is Talk.IDLE:
                    out.append(Report(pressed))
                self._end_talk(out, block=False, why=f"ended: {pressed} again")
                return
            self.latched_by = event.source
        self.held_buttons.add(button)
        if self.talk is not Talk.IDLE or self.blocked:
            blocked = self.talk is Talk.IDLE
            out.append(Report(pressed + (": ignored until every button is up" if blocked else "")))
            return
        if not self._may_talk():
            out.append(PlayTone(Tone.ERROR))
            if self.link is Link.ONLINE and self.room in self.locked:
                self.last_error = f"cannot talk in {self.room}: {self.locked[self.room]}"
            else:
                self.last_error = f"cannot talk: link {self.link.value}" + (
                    "" if self.room else ", no room"
                )
            out.append(Report(f"{pressed}: {self.last_error}"))
            self._block()
            return
        self._set_audio_test(False, out)
        assert self.room is not None
        self._requests += 1
        self.request = self._requests
        self.talk = Talk.REQUESTING
        self._set_capture(True, out)  # at once: no syllable spoken at the press is lost
        out.append(
            SendStartStream(self.request, self.room, "emergency" if event.emergency else "normal")
        )
        out.append(StartTimer(TALK_TIMER, self.settings.talk_timeout))
        out.append(StartTimer(REQUEST_TIMER, self.settings.request_timeout))
        priority = " with emergency priority" if event.emergency else ""
        out.append(Report(f"{pressed}: asking to talk in {self.room}{priority}"))

    def _on_release(self, event: PttReleased, out: list[Action]) -> None:
        self.held_buttons.discard(("emergency" if event.emergency else "ptt", event.source))
        released = "emergency button released" if event.emergency else "PTT released"
        if self.settings.toggle:
            return  # a release means nothing in toggle mode
        if self.held_buttons:  # another input still holds the talk
            out.append(Report(released))
            return
        if self.talk is Talk.TRANSMITTING and self.settings.roger_beep:
            out.append(PlayTone(Tone.ROGER))
        if self.talk is Talk.IDLE:
            out.append(Report(released))
        self._end_talk(out, block=False, why=f"ended: {released}")
        self.blocked = False

    def _on_input_lost(self, event: InputLost, out: list[Action]) -> None:
        held = {button for button in self.held_buttons if button[1] == event.source}
        self.held_buttons -= held
        why = f"ended: input {event.source} gone"
        if self.settings.toggle:
            if self.latched_by == event.source:
                self.latched_by = None
                self._end_talk(out, block=False, why=why)
            return  # a talk latched by another input goes on: that one can switch it off
        if not held:
            return
        if self.held_buttons or self.talk is Talk.IDLE:  # no talk ends: say what happened
            out.append(Report(f"input {event.source} gone: its buttons are up"))
        if not self.held_buttons:  # as at the last release
            self._end_talk(out, block=False, why=why)
            self.blocked = False

    def _on_frame(self, event: CapturedFrame, out: list[Action]) -> None:
        if not self.wants_frames:
            return  # late frame after close, or the audio test: never sent
        if self.talk is Talk.TRANSMITTING and self.stream_id is not None:
            out.append(SendAudio(self.stream_id, event.payload, event.t))
        elif self.talk is Talk.REQUESTING:
            if len(self._held) >= self.settings.max_held_frames:
                self._held.popleft()
            self._held.append(event)

    def _on_granted(self, event: StreamGranted, out: list[Action]) -> None:
        if self.talk is Talk.REQUESTING and event.request == self.request:
            self.talk = Talk.TRANSMITTING
            self.stream_id = event.stream_id
            self.request = None
            out.append(CancelTimer(REQUEST_TIMER))
            out.append(PlayTone(Tone.TALK_PERMIT))
            while self._held:
                frame = self._held.popleft()
                out.append(SendAudio(event.stream_id, frame.payload, frame.t))
            out.append(Report(f"talk permitted in {self.room}"))
            return
        # A grant for a talk already given up (released, timed out, cut): stop it at once.
        out.append(SendStopStream(event.stream_id, None))

    def _on_refused(self, event: StreamRefused, out: list[Action]) -> None:
        if self.talk is not Talk.REQUESTING or event.request != self.request:
            return
        why = f"{event.reason or 'refused'}" + (
            f" ({event.talker} is talking)" if event.talker else ""
        )
        self.last_error = f"floor refused: {why}"
        self._end_talk(out, block=True, stop=False, why=f"refused: {why}")
        out.append(PlayTone(Tone.BUSY))

    def _on_own_stopped(self, event: OwnStreamStopped, out: list[Action]) -> None:
        if self.stream_id != event.stream_id:
            return
        self.stream_id = None  # the server ended it: no stop_stream to send
        reason = event.reason or "stopped"
        self.last_error = f"transmission ended by the server: {reason}"
        self._end_talk(out, block=True, stop=False, why=f"ended by the server: {reason}")
        out.append(PlayTone(Tone.TIMEOUT_WARNING if event.reason == "timeout" else Tone.BUSY))

    def _on_timer(self, event: TimerFired, out: list[Action]) -> None:
        if event.name == TALK_TIMER and self.talk is not Talk.IDLE:
            self.last_error = "transmit time-out"
            self._end_talk(out, block=True, why="cut: transmit time-out")
            out.append(PlayTone(Tone.TIMEOUT_WARNING))
        elif event.name == REQUEST_TIMER and self.talk is Talk.REQUESTING:
            self.last_error = "no answer from the server"
            self._end_talk(out, block=True, why="given up: no answer from the server")
            out.append(PlayTone(Tone.ERROR))

    def _end_talk(self, out: list[Action], *, block: bool, why: str, stop: bool = True) -> None:
        """Leave talking: capture closes first, then the stream stops, then the rest; the
        operator's log says ``talk in ROOM {why}``."""
        if self.talk is Talk.IDLE:
            if block:
                self._block()
            return
        self._set_capture(False, out)
        out.append(Report(f"talk in {self.room} {why}"))
        if stop and self.stream_id is not None and self.room is not None:
            out.append(SendStopStream(self.stream_id, self.room))
        self._held.clear()  # never sent: audio held for a talk that did not happen
        self.talk = Talk.IDLE
        self.stream_id = None
        self.request = None
        out.append(CancelTimer(TALK_TIMER))
        out.append(CancelTimer(REQUEST_TIMER))
        if block:
            self._block()
        self.latched_by = None

    def _forget_pairing(self, out: list[Action]) -> None:
        """No credential any more (given up or refused): no rooms, no selected room."""
        self.paired = False
        self.link = Link.UNPAIRED
        self.rooms = ()
        self.locked.clear()
        self._clear_incoming()
        if self.room is not None:
            self.room = None
            out.append(RoomSelected(None))

    def _clear_incoming(self) -> None:
        self.incoming.clear()
        self.incoming_rooms.clear()

    def _block(self) -> None:
        """A talk that went nowhere: in hold mode nothing opens until every button is up; in
        toggle mode the latch drops, so the next press starts afresh."""
        if not self.settings.toggle:
            self.blocked = bool(self.held_buttons)
        self.latched_by = None

    def _set_capture(self, on: bool, out: list[Action]) -> None:
        if on == self.capture_open:
            return
        self.capture_open = on
        out.append(OpenCapture() if on else CloseCapture())
        if self.settings.simplex and not self.audio_test and self.muted != on:
            self.muted = on
            out.append(MutePlayback(on))

    def _set_audio_test(self, on: bool, out: list[Action]) -> None:
        if on == self.audio_test:
            return
        if on:
            self.audio_test = True
            self._set_capture(True, out)
        else:
            self._set_capture(False, out)
            self.audio_test = False

    def _on_audio_test(self, event: AudioTest, out: list[Action]) -> None:
        if event.on and (self.talk is not Talk.IDLE or self.wants_talk):
            self.last_error = "audio test refused: talking"
            return
        self._set_audio_test(event.on, out)

    # -- link and rooms ----------------------------------------------------------------------

    def _on_link_up(self, event: LinkUp, out: list[Action]) -> None:
        if self.link is Link.UNPAIRED:
            return
        self.link = Link.ONLINE
        self.rooms = event.rooms
        self.locked = dict(event.locked)
        if self.room not in self.rooms:
            self._end_talk(out, block=True, why="cut: the room is gone")
            room = self.rooms[0] if self.rooms else None
            if room != self.room:
                self.room = room
                out.append(RoomSelected(room))
                out.append(Report(f"room {room} selected" if room else "no room to talk in"))
        elif self.room in self.locked and self.talk is not Talk.IDLE:  # its key is gone
            why = self.locked[self.room]
            self.last_error = f"cannot talk in {self.room}: {why}"
            self._end_talk(out, block=True, why=f"cut: {why}")
            out.append(PlayTone(Tone.ERROR))
        out.append(PlayTone(Tone.CONNECTED))

    def _on_room_lock(self, event: RoomLock, out: list[Action]) -> None:
        if event.why is None:
            if self.locked.pop(event.room, None) is not None:
                out.append(Report(f"room {event.room}: room key ready"))
            return
        self.locked[event.room] = event.why
        if event.room == self.room and self.talk is not Talk.IDLE:
            self.last_error = f"cannot talk in {event.room}: {event.why}"
            self._end_talk(out, block=True, why=f"cut: {event.why}")  # capture closes first
            out.append(PlayTone(Tone.ERROR))
        out.append(Report(f"room {event.room}: cannot talk there: {event.why}"))

    def _on_link_down(self, event: LinkDown, out: list[Action]) -> None:
        was_online = self.link is Link.ONLINE
        self._end_talk(out, block=True, stop=False, why="cut: link lost")
        self._clear_incoming()
        if self.link is not Link.UNPAIRED:
            self.link = Link.CONNECTING
        if was_online:
            self.last_error = f"link lost: {event.reason}" if event.reason else "link lost"
            out.append(PlayTone(Tone.DISCONNECTED))

    def _on_change_room(self, event: ChangeRoom, out: list[Action]) -> None:
        if not self.rooms:
            out.append(PlayTone(Tone.ERROR))
            return
        if event.name:
            if event.name not in self.rooms:
                self.last_error = f"no room {event.name!r}"
                out.append(PlayTone(Tone.ERROR))
                return
            target = event.name
        else:
            index = self.rooms.index(self.room) if self.room in self.rooms else 0
            target = self.rooms[(index + event.step) % len(self.rooms)]
        if target == self.room:
            return
        self._end_talk(out, block=True, why=f"ended: room changed to {target}")
        self.room = target
        out.append(RoomSelected(target))
        out.append(Report(f"room {target} selected"))
        out.append(PlayTone(Tone.ROOM))

    # -- indicators -----------------------------------------------------------------------

    def _leds_now(self) -> list[Action]:
        wanted: dict[str, LedMode] = {
            "online": "on"
            if self.link is Link.ONLINE
            else "blink"
            if self.link is Link.CONNECTING
            else "off",
            "transmit": "on" if self.capture_open else "off",
            "receive": "on" if self.incoming and self.link is Link.ONLINE else "off",
            "error": "blink" if self.link is Link.UNPAIRED else "off",
        }
        changes: list[Action] = []
        for led, mode in wanted.items():
            if self._leds.get(led) != mode:
                self._leds[led] = mode
                changes.append(SetLed(led, mode))  # type: ignore[arg-type]
        return changes
