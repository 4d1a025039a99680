"""The device state machine: scripted rules, then a stateful property test of its invariants."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from pttd.radio.config import PTT_Z_SERVICE
from pttd.radio.inputs import Button
from pttd.radio.inputs.ble_protocol import (
    BATTERY_LEVEL,
    BATTERY_SERVICE,
    PTT_Z_CHARACTERISTIC,
    BleButtonSpec,
    BleDecoder,
    Characteristic,
)
from pttd.radio.machine import (
    REQUEST_TIMER,
    TALK_TIMER,
    Action,
    AudioTest,
    CancelTimer,
    CapturedFrame,
    ChangeRoom,
    CloseCapture,
    CredentialRefused,
    DeviceMachine,
    IncomingStart,
    IncomingStop,
    InputLost,
    Link,
    LinkDown,
    LinkUp,
    MachineSettings,
    MutePlayback,
    OpenCapture,
    OwnStreamStopped,
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
    StreamGranted,
    StreamRefused,
    Talk,
    TextArrived,
    TimerFired,
    Tone,
    Unpaired,
)


def online(toggle: bool = False, **kw: Any) -> DeviceMachine:
    m = DeviceMachine(MachineSettings(toggle=toggle, **kw))
    m.handle(LinkUp(0.0, ("ops", "yard")))
    return m


def of(actions: list[Action], kind: type[Any]) -> list[Any]:
    return [a for a in actions if isinstance(a, kind)]


def press_and_grant(m: DeviceMachine, stream_id: int = 7) -> list[Action]:
    start = of(m.handle(PttPressed(1.0)), SendStartStream)[0]
    return m.handle(StreamGranted(1.1, start.request, stream_id))


# ---------------------------------------------------------------------------- scripted rules


def test_press_opens_capture_at_once_and_asks_for_the_floor() -> None:
    m = online()
    actions = m.handle(PttPressed(1.0))
    assert isinstance(actions[0], OpenCapture)
    assert SendStartStream(1, "ops", "normal") in actions
    assert StartTimer(TALK_TIMER, 60.0) in actions
    assert MutePlayback(True) in actions
    assert SetLed("transmit", "on") in actions
    assert m.capture_open and m.talk is Talk.REQUESTING


def test_frames_before_the_grant_are_held_then_sent_first() -> None:
    m = online()
    m.handle(PttPressed(1.0))
    for i in range(3):
        assert m.handle(CapturedFrame(1.0 + i * 0.02, bytes([i]))) == []
    actions = m.handle(StreamGranted(1.1, 1, 42))
    sent = of(actions, SendAudio)
    assert [(s.stream_id, s.payload) for s in sent] == [(42, b"\0"), (42, b"\1"), (42, b"\2")]
    assert PlayTone(Tone.TALK_PERMIT) in actions
    assert actions.index(PlayTone(Tone.TALK_PERMIT)) < actions.index(sent[0])
    assert m.handle(CapturedFrame(1.2, b"live")) == [SendAudio(42, b"live", 1.2)]


def test_refusal_closes_capture_drops_held_audio_and_plays_busy() -> None:
    m = online()
    m.handle(PttPressed(1.0))
    m.handle(CapturedFrame(1.02, b"secret"))
    actions = m.handle(StreamRefused(1.1, 1, "busy", "bob"))
    assert isinstance(actions[0], CloseCapture)
    assert PlayTone(Tone.BUSY) in actions
    assert not of(actions, SendAudio)
    assert m.held_frames == 0 and not m.capture_open
    assert "bob" in m.last_error
    # Still holding the button: nothing reopens; a fresh press after release does.
    assert of(m.handle(PttPressed(1.2)), OpenCapture) == []
    m.handle(PttReleased(1.3))
    assert of(m.handle(PttPressed(1.4)), OpenCapture) == [OpenCapture()]


def test_release_before_the_answer_cancels_and_a_late_grant_is_stopped() -> None:
    m = online()
    m.handle(PttPressed(1.0))
    m.handle(CapturedFrame(1.02, b"held"))
    actions = m.handle(PttReleased(1.05))
    assert isinstance(actions[0], CloseCapture)
    assert not of(actions, SendStopStream)  # nothing granted yet
    late = m.handle(StreamGranted(1.2, 1, 9))
    assert late[0] == SendStopStream(9, None)
    assert not of(late, SendAudio) and not m.capture_open


def test_release_after_grant_stops_the_stream() -> None:
    m = online(roger_beep=True)
    press_and_grant(m)
    actions = m.handle(PttReleased(2.0))
    assert actions[0] == PlayTone(Tone.ROGER) or isinstance(actions[0], CloseCapture)
    assert actions.index(CloseCapture()) < actions.index(SendStopStream(7, "ops"))
    assert MutePlayback(False) in actions and SetLed("transmit", "off") in actions


def test_transmit_timeout_closes_stops_warns_and_needs_a_new_press() -> None:
    m = online()
    press_and_grant(m)
    actions = m.handle(TimerFired(61.0, TALK_TIMER))
    assert actions[0] == CloseCapture()
    assert SendStopStream(7, "ops") in actions
    assert PlayTone(Tone.TIMEOUT_WARNING) in actions
    assert m.handle(CapturedFrame(61.1, b"x")) == []
    m.handle(PttReleased(62.0))
    assert OpenCapture() in m.handle(PttPressed(63.0))


def test_toggle_mode_press_starts_press_stops_and_timeout_unlatches() -> None:
    m = online(toggle=True)
    m.handle(PttPressed(1.0))
    m.handle(PttReleased(1.1))
    assert m.capture_open  # latched
    m.handle(StreamGranted(1.2, 1, 5))
    actions = m.handle(PttPressed(2.0))
    assert actions[0] == CloseCapture() and SendStopStream(5, "ops") in actions
    m.handle(PttReleased(2.1))
    m.handle(PttPressed(3.0))
    m.handle(PttReleased(3.1))
    m.handle(TimerFired(63.0, TALK_TIMER))
    assert not m.capture_open
    assert OpenCapture() in m.handle(PttPressed(64.0))  # a new press works at once


def test_link_loss_closes_capture_first() -> None:
    m = online()
    press_and_grant(m)
    actions = m.handle(LinkDown(2.0, "server gone"))
    assert actions[0] == CloseCapture()
    assert not of(actions, SendStopStream)  # no link to send it on
    assert PlayTone(Tone.DISCONNECTED) in actions
    assert SetLed("online", "blink") in actions
    assert m.link is Link.CONNECTING
    m.handle(LinkUp(3.0, ("ops",)))
    assert not m.capture_open  # still held, but a new press is needed


def test_press_while_offline_or_unpaired_plays_error_and_opens_nothing() -> None:
    for m in (DeviceMachine(), DeviceMachine(paired=False)):
        actions = m.handle(PttPressed(1.0))
        assert PlayTone(Tone.ERROR) in actions
        assert not of(actions, OpenCapture) and not of(actions, SendStartStream)


def test_credential_refused_shows_unpaired_and_stops_the_link() -> None:
    m = online()
    actions = m.handle(CredentialRefused(1.0))
    assert StopLink() in actions and SetLed("error", "blink") in actions
    assert m.link is Link.UNPAIRED
    m.handle(LinkUp(2.0, ("ops",)))  # a stale event cannot bring it online
    assert m.link is Link.UNPAIRED


def test_room_change_closes_capture_and_selects() -> None:
    m = online()
    press_and_grant(m)
    actions = m.handle(ChangeRoom(2.0, step=1))
    assert actions[0] == CloseCapture()
    assert RoomSelected("yard") in actions and PlayTone(Tone.ROOM) in actions
    assert m.room == "yard"
    assert RoomSelected("ops") in m.handle(ChangeRoom(3.0, step=1))  # wraps around
    assert PlayTone(Tone.ERROR) in m.handle(ChangeRoom(4.0, name="nowhere"))


def test_server_ending_our_stream() -> None:
    m = online()
    press_and_grant(m)
    actions = m.handle(OwnStreamStopped(30.0, 7, "preempted"))
    assert actions[0] == CloseCapture()
    assert not of(actions, SendStopStream)
    assert PlayTone(Tone.BUSY) in actions


def test_no_answer_to_start_stream_gives_up() -> None:
    m = online()
    m.handle(PttPressed(1.0))
    actions = m.handle(TimerFired(6.0, REQUEST_TIMER))
    assert actions[0] == CloseCapture() and PlayTone(Tone.ERROR) in actions


def test_receive_led_and_incoming_streams() -> None:
    m = online()
    assert SetLed("receive", "on") in m.handle(IncomingStart(1.0, 3, "ops", "bob"))
    assert SetLed("receive", "off") in m.handle(IncomingStop(2.0, 3))


def test_audio_test_opens_capture_but_never_sends() -> None:
    m = online()
    actions = m.handle(AudioTest(1.0, True))
    assert OpenCapture() in actions and SetLed("transmit", "on") in actions
    assert m.handle(CapturedFrame(1.1, b"x")) == []
    assert CloseCapture() in m.handle(AudioTest(2.0, False))


def test_shutdown_closes_capture_then_stops_stream() -> None:
    m = online()
    press_and_grant(m)
    actions = m.handle(Shutdown(5.0))
    assert actions[0] == CloseCapture() and SendStopStream(7, "ops") in actions
    assert CancelTimer(TALK_TIMER) in actions


def reports(actions: list[Action]) -> list[str]:
    return [a.text for a in of(actions, Report)]


def test_the_operators_log_says_who_where_and_why() -> None:
    m = online()
    assert reports(m.handle(PttPressed(1.0))) == ["PTT pressed: asking to talk in ops"]
    assert reports(m.handle(StreamGranted(1.1, 1, 7))) == ["talk permitted in ops"]
    assert reports(m.handle(PttReleased(2.0))) == ["talk in ops ended: PTT released"]
    m.handle(PttPressed(3.0, emergency=True))
    assert reports(m.handle(StreamRefused(3.1, 2, "busy", "bob"))) == [
        "talk in ops refused: busy (bob is talking)"
    ]
    assert reports(m.handle(PttReleased(3.2, emergency=True))) == ["emergency button released"]
    assert reports(m.handle(IncomingStart(4.0, 3, "yard", "bob"))) == ["bob talks in yard"]
    assert reports(m.handle(IncomingStop(5.0, 3))) == ["bob stopped talking in yard"]
    assert reports(m.handle(IncomingStop(5.1, 3))) == []  # a stream it never heard start
    assert reports(m.handle(TextArrived(6.0, "ops", "bob", 11))) == [
        "text message from bob in ops (11 characters)"
    ]
    assert reports(m.handle(ChangeRoom(7.0, name="yard"))) == ["room yard selected"]
    press_and_grant(m)
    assert reports(m.handle(TimerFired(70.0, TALK_TIMER))) == [
        "talk in yard cut: transmit time-out"
    ]
    assert reports(m.handle(PttPressed(71.0))) == ["PTT pressed: ignored until every button is up"]


def test_an_emergency_press_and_a_press_that_cannot_talk_are_reported() -> None:
    m = online()
    assert reports(m.handle(PttPressed(1.0, emergency=True))) == [
        "emergency button pressed: asking to talk in ops with emergency priority"
    ]
    assert reports(m.handle(LinkDown(2.0, "gone"))) == ["talk in ops cut: link lost"]
    m.handle(PttReleased(2.5, emergency=True))
    assert reports(m.handle(PttPressed(3.0))) == ["PTT pressed: cannot talk: link connecting"]
    assert reports(DeviceMachine(paired=False).handle(PttPressed(1.0))) == [
        "PTT pressed: cannot talk: link unpaired, no room"
    ]


def test_toggle_mode_reports_presses_not_releases() -> None:
    m = online(toggle=True)
    assert reports(m.handle(PttPressed(1.0))) == ["PTT pressed: asking to talk in ops"]
    assert reports(m.handle(PttReleased(1.1))) == []
    assert reports(m.handle(PttPressed(2.0))) == ["talk in ops ended: PTT pressed again"]


@pytest.mark.parametrize("event", [CredentialRefused(2.0), Unpaired(2.0)])
def test_losing_the_credential_forgets_the_rooms_and_the_selected_room(event: Any) -> None:
    m = online()
    m.handle(ChangeRoom(1.0, name="yard"))
    m.handle(IncomingStart(1.5, 3, "ops", "bob"))
    actions = m.handle(event)
    assert RoomSelected(None) in actions  # the daemon forgets the saved one too
    assert m.rooms == () and m.room is None and not m.incoming
    assert of(m.handle(event), RoomSelected) == []  # once


def test_two_ptt_inputs_the_talk_ends_when_the_last_one_is_released() -> None:
    m = online()
    start = of(m.handle(PttPressed(1.0, source="gpio:17")), SendStartStream)[0]
    m.handle(StreamGranted(1.1, start.request, 7))
    pedal = m.handle(PttPressed(2.0, source="serial:/dev/ttyUSB0"))
    assert not of(pedal, SendStartStream) and not of(pedal, OpenCapture)  # the same talk
    actions = m.handle(PttReleased(3.0, source="gpio:17"))
    assert actions == [Report("PTT released")]  # the pedal still holds the talk
    assert m.capture_open and m.talk is Talk.TRANSMITTING
    assert m.handle(CapturedFrame(3.1, b"x")) == [SendAudio(7, b"x", 3.1)]
    actions = m.handle(PttReleased(4.0, source="serial:/dev/ttyUSB0"))
    assert actions[0] == CloseCapture() and SendStopStream(7, "ops") in actions
    assert not m.held_buttons


def test_two_ptt_inputs_a_press_that_went_nowhere_waits_for_both_to_be_up() -> None:
    m = online()
    m.handle(PttPressed(1.0, source="a"))
    m.handle(StreamRefused(1.1, 1, "busy", "bob"))
    m.handle(PttPressed(1.2, source="b"))
    m.handle(PttReleased(1.3, source="a"))
    assert m.blocked and not m.capture_open  # b is still down
    assert of(m.handle(PttPressed(1.4, source="a")), OpenCapture) == []
    m.handle(PttReleased(1.5, source="a"))
    m.handle(PttReleased(1.6, source="b"))
    assert not m.blocked
    assert of(m.handle(PttPressed(2.0, source="b")), OpenCapture) == [OpenCapture()]


def test_a_ptt_and_an_emergency_key_of_one_input_are_two_keys() -> None:
    m = online()
    m.handle(PttPressed(1.0, emergency=True, source="serial"))
    m.handle(PttPressed(1.1, source="serial"))
    m.handle(PttReleased(1.2, emergency=True, source="serial"))
    assert m.capture_open  # the PTT key of the same accessory is still down
    m.handle(PttReleased(1.3, source="serial"))
    assert not m.capture_open


def test_toggle_mode_with_two_inputs_each_press_switches() -> None:
    m = online(toggle=True)
    m.handle(PttPressed(1.0, source="a"))
    m.handle(PttReleased(1.1, source="a"))
    assert m.capture_open  # latched on by a
    m.handle(PttPressed(2.0, source="b"))  # b switches it off
    assert not m.capture_open and not m.latched
    m.handle(PttReleased(2.1, source="b"))
    m.handle(PttPressed(3.0, source="a"))  # held through b's press and release: no matter
    assert m.capture_open
    m.handle(PttPressed(3.1, source="b"))
    m.handle(PttReleased(3.2, source="a"))
    assert not m.capture_open  # switched off by b; a's release means nothing


# ---------------------------------------------------------------------------- an input vanishes

PEDAL, HAND = "serial:/dev/ttyUSB0", "gpio:17"


def test_toggle_mode_the_input_that_latched_the_talk_vanishes() -> None:
    """The accessory that switched talk on is unplugged: the talk ends at once, capture first
    (a release would mean nothing in toggle mode)."""
    m = online(toggle=True)
    m.handle(PttPressed(1.0, source=PEDAL))
    m.handle(PttReleased(1.1, source=PEDAL))
    m.handle(StreamGranted(1.2, m.request or 0, 7))
    assert m.capture_open and m.latched_by == PEDAL
    actions = m.handle(InputLost(3.0, PEDAL))
    assert actions[0] == CloseCapture() and SendStopStream(7, "ops") in actions
    assert actions.index(CloseCapture()) < actions.index(SendStopStream(7, "ops"))
    assert reports(actions) == [f"talk in ops ended: input {PEDAL} gone"]
    assert CancelTimer(TALK_TIMER) in actions and SetLed("transmit", "off") in actions
    assert not m.capture_open and not m.latched and m.talk is Talk.IDLE and not m.blocked
    assert not of(actions, PlayTone)
    # Plugged back in: its next press is a fresh talk.
    assert OpenCapture() in m.handle(PttPressed(4.0, source=PEDAL))


def test_toggle_mode_vanishing_while_asking_for_the_floor() -> None:
    m = online(toggle=True)
    m.handle(PttPressed(1.0, source=PEDAL))
    m.handle(CapturedFrame(1.02, b"held"))
    actions = m.handle(InputLost(1.05, PEDAL))
    assert actions[0] == CloseCapture() and not of(actions, SendStopStream)
    assert m.held_frames == 0 and m.request is None
    late = m.handle(StreamGranted(1.2, 1, 9))
    assert late[0] == SendStopStream(9, None) and not of(late, SendAudio)


def test_toggle_mode_another_input_vanishing_leaves_the_latch() -> None:
    """Decided: a talk latched by the hand button goes on when the pedal is unplugged, whether
    the pedal was up or down; the hand button is still there to switch it off."""
    m = online(toggle=True)
    press_and_grant(m)  # latched by the default source
    m.handle(PttPressed(2.0, source=PEDAL))  # switched off by the pedal…
    m.handle(PttPressed(2.5, source=HAND))  # …and on again by the hand button
    assert m.latched_by == HAND and m.capture_open
    assert m.handle(InputLost(3.0, PEDAL)) == []  # the pedal, held down, goes
    assert m.capture_open and m.talk is Talk.REQUESTING and m.latched_by == HAND
    assert not [b for b in m.held_buttons if b[1] == PEDAL]
    assert m.handle(InputLost(3.1, "evdev:/dev/input/event3")) == []  # never seen at all
    actions = m.handle(PttPressed(4.0, source=HAND))
    assert actions[0] == CloseCapture() and not m.latched


def test_hold_mode_an_input_vanishing_is_its_release() -> None:
    m = online()
    start = of(m.handle(PttPressed(1.0, source=HAND)), SendStartStream)[0]
    m.handle(StreamGranted(1.1, start.request, 7))
    m.handle(PttPressed(2.0, source=PEDAL))
    m.handle(PttPressed(2.1, emergency=True, source=PEDAL))
    actions = m.handle(InputLost(3.0, PEDAL))  # the hand button still holds the talk
    assert actions == [Report(f"input {PEDAL} gone: its buttons are up")]
    assert m.held_buttons == {("ptt", HAND)} and m.capture_open
    m.handle(PttReleased(3.5, source=HAND))
    m.handle(PttPressed(4.0, source=PEDAL))  # the pedal back, alone this time
    actions = m.handle(InputLost(5.0, PEDAL))
    assert actions[0] == CloseCapture()
    assert reports(actions) == [f"talk in ops ended: input {PEDAL} gone"]
    assert not m.held_buttons and not m.capture_open


def test_hold_mode_a_press_that_went_nowhere_is_unblocked_when_its_input_vanishes() -> None:
    m = online()
    m.handle(PttPressed(1.0, source=PEDAL))
    m.handle(StreamRefused(1.1, 1, "busy", "bob"))
    assert m.blocked
    assert reports(m.handle(InputLost(2.0, PEDAL))) == [f"input {PEDAL} gone: its buttons are up"]
    assert not m.blocked and not m.held_buttons
    assert OpenCapture() in m.handle(PttPressed(3.0, source=HAND))


# ---------------------------------------------------------------------------- locked rooms

WAITING = "waiting for its room key (not approved by the key authority yet?)"
REFUSED = "room key refused: not signed by this room's key authority"


def locked_online(toggle: bool = False, locked: tuple[tuple[str, str], ...] = ()) -> DeviceMachine:
    m = DeviceMachine(MachineSettings(toggle=toggle))
    m.handle(LinkUp(0.0, ("ops", "yard"), locked))
    return m


@pytest.mark.parametrize("toggle", [False, True])
def test_a_press_in_a_locked_room_plays_the_error_tone_and_never_opens_the_microphone(
    toggle: bool,
) -> None:
    m = locked_online(toggle, (("ops", WAITING),))
    assert m.locked == {"ops": WAITING} and m.room == "ops"
    actions = m.handle(PttPressed(1.0))
    assert PlayTone(Tone.ERROR) in actions
    assert not of(actions, OpenCapture) and not of(actions, SendStartStream)
    assert not of(actions, StartTimer) and not of(actions, MutePlayback)
    assert m.last_error == f"cannot talk in ops: {WAITING}"
    assert reports(actions) == [f"PTT pressed: cannot talk in ops: {WAITING}"]
    assert not m.capture_open and m.talk is Talk.IDLE and not m.latched
    assert m.handle(CapturedFrame(1.1, b"x")) == []


def test_the_room_key_coming_unlocks_the_room_for_the_next_press() -> None:
    m = locked_online(locked=(("ops", WAITING),))
    m.handle(PttPressed(1.0))
    assert m.handle(RoomLock(2.0, "ops", None)) == [Report("room ops: room key ready")]
    assert m.locked == {} and not m.capture_open  # still held: a fresh press is needed
    assert m.handle(RoomLock(2.1, "ops", None)) == []  # ready already: nothing to say
    m.handle(PttReleased(3.0))
    actions = m.handle(PttPressed(4.0))
    assert actions[0] == OpenCapture() and SendStartStream(1, "ops", "normal") in actions


def test_another_room_stays_usable_while_one_is_locked() -> None:
    m = locked_online(locked=(("yard", WAITING),))
    start = of(m.handle(PttPressed(1.0)), SendStartStream)[0]
    assert start.room == "ops"
    m.handle(StreamGranted(1.1, start.request, 7))
    actions = m.handle(RoomLock(2.0, "yard", REFUSED))  # not the room talked in
    assert actions == [Report(f"room yard: cannot talk there: {REFUSED}")]
    assert m.capture_open and m.talk is Talk.TRANSMITTING
    assert m.handle(CapturedFrame(2.1, b"on")) == [SendAudio(7, b"on", 2.1)]
    m.handle(PttReleased(3.0))
    m.handle(ChangeRoom(4.0, name="yard"))
    actions = m.handle(PttPressed(5.0))
    assert PlayTone(Tone.ERROR) in actions and not of(actions, OpenCapture)
    assert m.last_error == f"cannot talk in yard: {REFUSED}"


def test_a_room_locked_while_talking_in_it_ends_the_talk_capture_first() -> None:
    m = online()
    press_and_grant(m)
    actions = m.handle(RoomLock(2.0, "ops", REFUSED))
    assert actions[0] == CloseCapture()
    assert actions.index(CloseCapture()) < actions.index(SendStopStream(7, "ops"))
    assert PlayTone(Tone.ERROR) in actions and not of(actions, OpenCapture)
    assert CancelTimer(TALK_TIMER) in actions and SetLed("transmit", "off") in actions
    assert reports(actions) == [
        f"talk in ops cut: {REFUSED}",
        f"room ops: cannot talk there: {REFUSED}",
    ]
    assert m.last_error == f"cannot talk in ops: {REFUSED}"
    assert not m.capture_open and m.talk is Talk.IDLE and m.stream_id is None
    assert m.handle(CapturedFrame(2.1, b"late")) == []  # a frame still in flight: dropped
    # Still held: nothing reopens; released and pressed again, the room is still locked.
    assert not of(m.handle(PttPressed(2.5, source="pedal")), OpenCapture)
    m.handle(PttReleased(2.6, source="pedal"))
    m.handle(PttReleased(3.0))
    assert PlayTone(Tone.ERROR) in m.handle(PttPressed(4.0))
    assert not m.capture_open


def test_a_room_locked_while_asking_for_the_floor_drops_the_held_audio() -> None:
    m = online(toggle=True)
    m.handle(PttPressed(1.0))
    m.handle(CapturedFrame(1.02, b"held"))
    actions = m.handle(RoomLock(1.05, "ops", WAITING))
    assert actions[0] == CloseCapture() and PlayTone(Tone.ERROR) in actions
    assert not of(actions, SendAudio) and not of(actions, SendStopStream)  # nothing granted
    assert m.held_frames == 0 and not m.latched
    late = m.handle(StreamGranted(1.2, 1, 9))
    assert late[0] == SendStopStream(9, None) and not of(late, SendAudio)
    assert not m.capture_open


def test_a_logon_that_finds_the_room_talked_in_locked_ends_the_talk() -> None:
    m = online()
    press_and_grant(m)
    actions = m.handle(LinkUp(2.0, ("ops", "yard"), (("ops", REFUSED),)))
    assert actions[0] == CloseCapture()
    assert actions.index(CloseCapture()) < actions.index(SendStopStream(7, "ops"))
    assert PlayTone(Tone.ERROR) in actions and PlayTone(Tone.CONNECTED) in actions
    assert m.last_error == f"cannot talk in ops: {REFUSED}"
    assert not m.capture_open and m.talk is Talk.IDLE and m.room == "ops"


def test_link_up_replaces_the_locked_rooms() -> None:
    m = locked_online(locked=(("ops", WAITING),))
    m.handle(RoomLock(1.0, "yard", REFUSED))
    assert m.locked == {"ops": WAITING, "yard": REFUSED}
    m.handle(LinkDown(2.0, "gone"))
    assert m.locked == {"ops": WAITING, "yard": REFUSED}  # kept until the next logon says
    m.handle(LinkUp(3.0, ("ops", "yard"), (("yard", WAITING),)))
    assert m.locked == {"yard": WAITING}
    assert OpenCapture() in m.handle(PttPressed(4.0))  # ops is open now
    m.handle(PttReleased(4.5))
    m.handle(LinkUp(5.0, ("ops", "yard")))
    assert m.locked == {}


@pytest.mark.parametrize("event", [CredentialRefused(2.0), Unpaired(2.0)])
def test_losing_the_credential_forgets_the_locked_rooms(event: Any) -> None:
    m = locked_online(locked=(("ops", WAITING), ("yard", REFUSED)))
    m.handle(event)
    assert m.locked == {}
    m.handle(Paired(3.0))
    m.handle(LinkUp(4.0, ("ops",)))  # paired again: a room not encrypted any more
    assert m.locked == {} and OpenCapture() in m.handle(PttPressed(5.0))


# ---------------------------------------------------------------------------- stateful property


INPUTS = ["gpio:17", "serial:/dev/ttyUSB0"]  # two PTT inputs, held and released independently
ROOMS = ["ops", "yard", "dock"]
WHYS = [WAITING, REFUSED]  # why a room is locked (the keyring's words)

# A third input: a BLE PTT-Z button with an SOS button, through the real decoder. Its two buttons
# are one source; its link drops (the input gone) and comes back.
SOS_CHARACTERISTIC = "0000ffe2-0000-1000-8000-00805f9b34fb"
BLE_SPEC = BleButtonSpec("AA:BB:CC:DD:EE:FF", sos_characteristic=SOS_CHARACTERISTIC)
BLE = BLE_SPEC.source  # "ble:AA:BB:CC:DD:EE:FF"
BLE_PTT = Characteristic(PTT_Z_CHARACTERISTIC, PTT_Z_SERVICE, ("read", "notify"))
BLE_SOS = Characteristic(SOS_CHARACTERISTIC, PTT_Z_SERVICE, ("read", "notify"))
BLE_BATTERY = Characteristic(BATTERY_LEVEL, BATTERY_SERVICE, ("read", "notify"))
BLE_UUIDS = [BLE_PTT.uuid, BLE_SOS.uuid, BLE_BATTERY.uuid]
BLE_VALUES = [b"\x01", b"\x00", b"\x01\x7f", b"\x00\x01", b"\x02", b""]  # starts-with matches


class Machine(RuleBasedStateMachine):
    """Random event sequences; after each, the invariants of the issue must hold.

    Hold mode; :class:`ToggleMachine` runs the same rules in toggle mode. Either way an input
    may vanish at any time (and come back with its next press), and a room may be locked (an
    encrypted room without a usable key) or unlocked at any time, by a logon or on its own."""

    toggle = False

    def __init__(self) -> None:
        super().__init__()
        self.m = DeviceMachine(MachineSettings(toggle=self.toggle))
        self.held: dict[str, bool] = dict.fromkeys(INPUTS, False)  # PTT input -> held
        self.emergency: dict[str, bool] = dict.fromkeys(INPUTS, False)  # … as an emergency key
        self.spoiled = False  # the current press went nowhere (refused, timed out, cut…)
        self.latch: str | None = None  # toggle mode: the input whose press switched talk on
        self.gone: set[str] = set()  # inputs vanished (and not pressed since)
        self.latch_lost = False  # the input that latched the talk vanished; no press since
        self.request: int | None = None
        self.granted: int | None = None
        self.next_stream = 100
        self.epoch = 0  # counts capture openings
        self.frame_epoch: dict[bytes, int] = {}
        self.frames = 0
        self.leds: dict[str, str] = {}
        self.open_count = 0
        self.locked: dict[str, str] = {}  # encrypted rooms without a usable key -> why
        self.decoder = BleDecoder(BLE_SPEC)
        self.decoder.plan([BLE_PTT, BLE_SOS, BLE_BATTERY])  # what the adapter does on connecting
        self.ble_linked = True
        self.ble_sos = True  # the SOS characteristic was found (subscribed to)
        self.ble_held: dict[Button, bool] = {Button.PTT: False, Button.EMERGENCY: False}

    def feed(self, event: Any) -> list[Action]:
        actions = self.m.handle(event)
        for i, a in enumerate(actions):
            if isinstance(a, OpenCapture):
                self.open_count += 1
                assert self.open_count == 1, "capture opened twice"
                self.epoch += 1
            elif isinstance(a, CloseCapture):
                self.open_count -= 1
                assert self.open_count == 0, "capture closed twice"
                later = actions[i:]
                assert not of(later, SendAudio), "audio sent after capture closed"
            elif isinstance(a, SendStartStream):
                assert self.request is None and self.granted is None, "two streams at once"
                self.request = a.request
            elif isinstance(a, SendStopStream):
                assert not [x for x in actions[i:] if isinstance(x, OpenCapture)]
                if a.stream_id == self.granted:
                    self.granted = None
            elif isinstance(a, SendAudio):
                assert self.m.talk is Talk.TRANSMITTING and a.stream_id == self.granted
                assert self.frame_epoch[a.payload] == self.epoch, "audio of an earlier talk"
            elif isinstance(a, SetLed):
                self.leds[a.led] = a.mode
        if CloseCapture() in actions:
            close_at = actions.index(CloseCapture())
            stops = [i for i, a in enumerate(actions) if isinstance(a, SendStopStream)]
            assert all(close_at < i for i in stops), "capture must close first"
        if self.m.talk is Talk.IDLE:
            self.request = None
            self.granted = None
        return actions

    def can_talk(self) -> bool:
        return (
            self.m.link is Link.ONLINE
            and self.m.room is not None
            and self.m.room not in self.locked
        )

    @property
    def any_held(self) -> bool:
        return any(self.held.values()) or any(self.ble_held.values())

    @initialize()
    def start(self) -> None:
        """Online in a room, where talking happens (the rules below take it down often)."""
        self.feed(LinkUp(0.0, ("ops", "yard")))

    @precondition(lambda self: self.can_talk() and not self.any_held and not self.m.blocked)
    @rule(pick=st.integers(0, 1), emergency=st.booleans())
    def press_to_talk(self, pick: int, emergency: bool) -> None:
        """A press where it can talk (the other rules leave the link down much of the time)."""
        self.press(pick, emergency)

    @rule(pick=st.integers(0, 1), emergency=st.booleans())
    def press(self, pick: int, emergency: bool) -> None:
        up = [source for source in INPUTS if not self.held[source]]
        if not up:
            return
        source = up[pick % len(up)]

        def hold() -> None:
            self.held[source] = True
            self.emergency[source] = emergency

        self.pressed(source, emergency, hold)

    def pressed(self, source: str, emergency: bool, hold: Callable[[], None]) -> None:
        """A button of ``source`` that was up goes down (``hold`` marks it held in the model)."""
        self.gone.discard(source)  # a press: it is back
        self.latch_lost = False
        if self.toggle:  # any press switches: on where it can talk, else off
            self.latch = source if self.latch is None and self.can_talk() else None
        elif not self.any_held:  # a fresh press; else it joins a talk, or a spoiled press
            self.spoiled = not self.can_talk()
        hold()
        self.feed(PttPressed(0.0, emergency=emergency, source=source))
        if self.m.talk is not Talk.IDLE:
            self.spoiled = False

    @precondition(lambda self: self.any_held and not all(self.held.values()))
    @rule(emergency=st.booleans())
    def the_other_input_joins(self, emergency: bool) -> None:
        """While one input is held, the other is pressed (two hands, a pedal and a button)."""
        self.press(0, emergency)

    @precondition(lambda self: all(self.held.values()))
    @rule(pick=st.integers(0, 1))
    def one_of_two_is_released(self, pick: int) -> None:
        self.release(pick)

    @rule(pick=st.integers(0, 1))
    def release(self, pick: int) -> None:
        down = [source for source in INPUTS if self.held[source]]
        if not down:
            return
        source = down[pick % len(down)]
        self.held[source] = False
        if not self.any_held:
            self.spoiled = False
        self.feed(PttReleased(0.0, emergency=self.emergency[source], source=source))

    @rule(pick=st.integers(0, 1))
    def input_vanishes(self, pick: int) -> None:
        """Unplugged, held or not: in hold mode as if its buttons were released; in toggle mode
        the talk it latched on ends, one latched by the other input goes on."""
        source = INPUTS[pick]
        talking = self.m.talk is not Talk.IDLE
        self.held[source] = False
        if not self.any_held:
            self.spoiled = False
        self.gone.add(source)
        latched_by_the_other = self.latch is not None and self.latch != source
        if self.latch == source:
            self.latch = None
            self.latch_lost = True
        actions = self.feed(InputLost(0.0, source))
        if self.toggle and latched_by_the_other:
            assert actions == [] and (self.m.talk is not Talk.IDLE) == talking

    # -- the BLE button: notifications through the real decoder, its link lost and back

    @precondition(lambda self: self.ble_linked)
    @rule(
        uuid=st.sampled_from(BLE_UUIDS), value=st.sampled_from(BLE_VALUES) | st.binary(max_size=3)
    )
    def ble_notification(self, uuid: str, value: bytes) -> None:
        """A notification from the button, decoded as the adapter decodes it; its edge goes on
        only if it is a change (the adapter's EdgeSink drops a press of a button held, a release
        of one up), as a press or release of source ``ble:…`` (SOS: the emergency button)."""
        edge = self.decoder.notification(uuid, value)
        expected = {b"\x01": True, b"\x00": False}.get(value[:1])
        if uuid == BLE_BATTERY.uuid:
            assert edge is None  # the battery level is no button (the adapter reads it apart)
        elif uuid == BLE_SOS.uuid and not self.ble_sos:
            assert edge is None  # not subscribed to: means nothing
        else:
            button = Button.PTT if uuid == BLE_PTT.uuid else Button.EMERGENCY
            assert edge == (None if expected is None else (button, expected))
        if edge is None:
            return
        button, down = edge
        emergency = button is Button.EMERGENCY
        if self.ble_held[button] == down:
            return  # not a change: the sink passes nothing
        if down:

            def hold() -> None:
                self.ble_held[button] = True

            self.pressed(BLE, emergency, hold)
        else:
            self.ble_held[button] = False
            if not self.any_held:
                self.spoiled = False
            self.feed(PttReleased(0.0, emergency=emergency, source=BLE))

    @precondition(
        lambda self: (
            self.ble_linked and self.can_talk() and not self.any_held and not self.m.blocked
        )
    )
    @rule(sos=st.booleans())
    def ble_press_to_talk(self, sos: bool) -> None:
        self.ble_notification(BLE_SOS.uuid if sos and self.ble_sos else BLE_PTT.uuid, b"\x01")

    @precondition(lambda self: self.ble_linked and any(self.ble_held.values()))
    @rule(sos=st.booleans())
    def ble_release(self, sos: bool) -> None:
        """A button held is let go (SOS if ``sos`` and it is held)."""
        sos = (sos and self.ble_held[Button.EMERGENCY]) or not self.ble_held[Button.PTT]
        self.ble_notification(BLE_SOS.uuid if sos else BLE_PTT.uuid, b"\x00")

    @precondition(lambda self: self.ble_linked)
    @rule()
    def ble_link_lost(self) -> None:
        """The button sleeps or goes out of range: the adapter reports the input gone, never a
        release; whatever it held is up, a talk it latched on ends, one latched by another
        input goes on."""
        talking = self.m.talk is not Talk.IDLE
        self.ble_linked = False
        self.ble_held = dict.fromkeys(self.ble_held, False)
        if not self.any_held:
            self.spoiled = False
        self.gone.add(BLE)
        latched_by_another = self.latch is not None and self.latch != BLE
        if self.latch == BLE:
            self.latch = None
            self.latch_lost = True
        actions = self.feed(InputLost(0.0, BLE))
        if self.toggle and latched_by_another:
            assert actions == [] and (self.m.talk is not Talk.IDLE) == talking

    @precondition(lambda self: not self.ble_linked)
    @rule(sos=st.booleans())
    def ble_reconnects(self, sos: bool) -> None:
        """The link is back: the adapter subscribes again (``sos``: the SOS characteristic is
        found this time; without it, its notifications mean nothing). Nothing reaches the
        machine until a button is pressed."""
        found = [BLE_PTT, BLE_BATTERY] + ([BLE_SOS] if sos else [])
        plan = self.decoder.plan(found)
        assert plan[BLE_PTT.uuid] is Button.PTT
        assert (plan.get(BLE_SOS.uuid) is Button.EMERGENCY) == sos
        assert BLE_BATTERY.uuid not in plan
        self.ble_linked = True
        self.ble_sos = sos

    @rule(
        rooms=st.lists(st.sampled_from(ROOMS), unique=True, max_size=3),
        locked=st.sets(st.sampled_from(ROOMS)),
        why=st.sampled_from(WHYS),
    )
    def link_up(self, rooms: list[str], locked: set[str], why: str) -> None:
        """A logon: its rooms, and which of them are encrypted without a key here (the daemon
        asks its keyring); that set replaces the one before."""
        before = self.m.room
        locks = tuple((room, why) for room in rooms if room in locked)
        if self.m.link is not Link.UNPAIRED:
            self.locked = dict(locks)
            if before is not None and (before not in rooms or before in self.locked):
                self.spoil_if_held()  # the room we talk in is gone, or its key: the talk ends
        self.feed(LinkUp(0.0, tuple(rooms), locks))

    @rule(room=st.sampled_from(ROOMS), why=st.sampled_from([None, *WHYS]))
    def room_lock(self, room: str, why: str | None) -> None:
        """A room key came (None: the room opens) or was refused, or a room turned encrypted
        or clear while online."""
        if why is None:
            self.locked.pop(room, None)
        else:
            self.locked[room] = why
            if room == self.m.room:
                self.spoil_if_held()  # a talk there ends at once
        self.feed(RoomLock(0.0, room, why))

    @precondition(lambda self: self.m.talk is not Talk.IDLE)
    @rule(why=st.sampled_from(WHYS))
    def the_key_of_the_room_talked_in_goes(self, why: str) -> None:
        assert self.m.room is not None
        self.room_lock(self.m.room, why)

    @rule()
    def link_down(self) -> None:
        self.spoil_if_held()
        self.feed(LinkDown(0.0, "test"))

    @rule()
    def credential_refused(self) -> None:
        self.spoil_if_held()
        self.locked.clear()  # no rooms any more, locked or not
        self.feed(CredentialRefused(0.0))

    @rule()
    def paired(self) -> None:
        self.feed(Paired(0.0))

    @precondition(lambda self: self.request is not None)
    @rule(stale=st.booleans())
    def grant(self, stale: bool) -> None:
        assert self.request is not None
        self.next_stream += 1
        request = self.request - 1 if stale else self.request
        if not stale:  # the held frames go out while the grant is handled: it is granted now
            self.granted = self.next_stream
        actions = self.feed(StreamGranted(0.0, request, self.next_stream))
        if not stale and self.m.stream_id == self.next_stream:
            self.request = None
        else:
            if self.granted == self.next_stream:
                self.granted = None
            assert SendStopStream(self.next_stream, None) in actions or stale

    @precondition(lambda self: self.request is not None)
    @rule()
    def refuse(self) -> None:
        assert self.request is not None
        self.spoil_if_held()
        self.feed(StreamRefused(0.0, self.request, "busy", "x"))

    @precondition(lambda self: self.granted is not None)
    @rule()
    def server_ends_stream(self) -> None:
        assert self.granted is not None
        self.spoil_if_held()
        self.feed(OwnStreamStopped(0.0, self.granted, "timeout"))

    @rule(name=st.sampled_from([TALK_TIMER, REQUEST_TIMER]))
    def timer(self, name: str) -> None:
        if name == TALK_TIMER and self.m.talk is not Talk.IDLE:
            self.spoil_if_held()
        if name == REQUEST_TIMER and self.m.talk is Talk.REQUESTING:
            self.spoil_if_held()
        self.feed(TimerFired(0.0, name))

    @rule()
    def frame(self) -> None:
        self.frames += 1
        payload = self.frames.to_bytes(4, "big")
        self.frame_epoch[payload] = self.epoch if self.m.capture_open else -1
        self.feed(CapturedFrame(0.0, payload))

    @rule(step=st.sampled_from([1, -1]), name=st.sampled_from(["", "ops", "dock", "nowhere"]))
    def change_room(self, step: int, name: str) -> None:
        before = self.m.room
        self.feed(ChangeRoom(0.0, step=step, name=name))
        if self.m.room != before:
            self.spoil_if_held()

    @rule(sid=st.integers(1, 3), start=st.booleans())
    def incoming(self, sid: int, start: bool) -> None:
        self.feed(IncomingStart(0.0, sid, "ops", "bob") if start else IncomingStop(0.0, sid))

    @rule(on=st.booleans())
    def audio_test(self, on: bool) -> None:
        self.latch_lost = False  # the installer's test opens capture: not a talk
        self.feed(AudioTest(0.0, on))

    @rule()
    def shutdown(self) -> None:
        self.spoil_if_held()
        self.feed(Shutdown(0.0))

    def spoil_if_held(self) -> None:
        """The talk is cut (or a press would go nowhere): held, it waits for every button to be
        up; latched, the latch drops."""
        if self.any_held:
            self.spoiled = True
        self.latch = None

    @invariant()
    def capture_open_exactly_while_it_should(self) -> None:
        """Hold mode: capture is open ⇔ at least one PTT input is held, in a joined room, and
        the talk was neither refused, timed out nor cut (or the audio test runs). Toggle mode:
        ⇔ a press latched it on in a joined room, and no press since switched it off, nothing cut
        it, and the input that latched it is still there."""
        if self.toggle:
            should_talk = self.latch is not None
        else:
            should_talk = self.any_held and self.can_talk() and not self.spoiled
        assert self.m.capture_open == (should_talk or self.m.audio_test)
        assert (self.m.talk is not Talk.IDLE) == should_talk

    @invariant()
    def a_vanished_input_holds_nothing_and_latches_nothing(self) -> None:
        """After the input that latched the talk is gone, capture is closed (and stays so until
        a press); a vanished input holds no button."""
        if self.latch_lost:
            assert not self.m.capture_open and self.m.talk is Talk.IDLE
        assert self.m.latched_by == self.latch
        assert self.m.latched_by not in self.gone
        assert not [button for button in self.m.held_buttons if button[1] in self.gone]

    @invariant()
    def the_microphone_never_opens_in_a_room_without_a_valid_key(self) -> None:
        """While the selected room is locked (encrypted, no usable room key) nobody talks from
        here: no talk, and capture is open only for the installer's audio test."""
        assert self.m.locked == self.locked
        if self.m.room in self.m.locked:
            assert self.m.talk is Talk.IDLE and self.m.stream_id is None
            assert not self.m.capture_open or self.m.audio_test

    @invariant()
    def the_ble_buttons_held_are_the_machines(self) -> None:
        """Hold mode: the machine holds exactly the BLE buttons the decoded notifications left
        down (none once the link is lost)."""
        if self.toggle:
            return  # a press that switches talk off is not held: releases mean nothing
        held = {button for button in self.m.held_buttons if button[1] == BLE}
        assert held == {
            ("emergency" if b is Button.EMERGENCY else "ptt", BLE)
            for b, down in self.ble_held.items()
            if down
        }
        if not self.ble_linked:
            assert not held

    @invariant()
    def transmit_led_follows_capture(self) -> None:
        assert self.leds.get("transmit", "off") == ("on" if self.m.capture_open else "off")

    @invariant()
    def at_most_one_stream(self) -> None:
        assert not (self.m.request is not None and self.m.stream_id is not None)


class ToggleMachine(Machine):
    """The same rules in toggle mode: a press switches talk on or off, a release means nothing."""

    toggle = True


TestMachineProperties = Machine.TestCase
TestMachineProperties.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
TestToggleMachineProperties = ToggleMachine.TestCase
TestToggleMachineProperties.settings = settings(
    max_examples=300, stateful_step_count=40, deadline=None
)


@pytest.mark.parametrize("toggle", [True])
def test_toggle_mode_never_opens_without_a_latch(toggle: bool) -> None:
    m = online(toggle=toggle)
    for _ in range(3):
        m.handle(PttPressed(1.0))
        m.handle(PttReleased(1.1))
        m.handle(PttPressed(2.0))
        m.handle(PttReleased(2.1))
        assert not m.capture_open


def test_unpaired_closes_capture_first_and_shows_unpaired_without_an_error() -> None:
    m = online()
    m.handle(PttPressed(1.0))
    m.handle(StreamGranted(1.1, m.request or 0, 7))
    actions = m.handle(Unpaired(2.0))
    assert isinstance(actions[0], CloseCapture)
    assert of(actions, SendStopStream) and not of(actions, StopLink)
    assert m.link is Link.UNPAIRED and not m.paired and not m.capture_open
    assert m.last_error == "" and m.rooms == ()
    assert SetLed("error", "blink") in actions and SetLed("transmit", "off") in actions
    assert m.handle(LinkUp(3.0, ("ops",))) == [] and m.link is Link.UNPAIRED  # a stale logon
    m.handle(PttReleased(3.5))
    m.handle(AudioTest(4.0, True))
    assert m.capture_open  # the installer's audio test still works unpaired
    m.handle(Unpaired(5.0))
    assert not m.capture_open and not m.audio_test
