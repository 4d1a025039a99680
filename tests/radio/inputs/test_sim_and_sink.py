"""The simulated button, and through it the one loop crossing every adapter shares (EdgeSink)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

import pytest

from pttd.radio.inputs import Button, ButtonEdge, EdgeSink, InputGone
from pttd.sim.inputs import SimulatedButton


async def test_press_and_release_from_other_threads(recorder):
    sim = SimulatedButton()
    await sim.start(recorder)

    def user() -> None:
        for _ in range(50):
            sim.press()
            sim.release()

    workers = [threading.Thread(target=user) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=5)
    await recorder.settle()
    edges = recorder.edges
    assert edges, "no edges"
    # Strictly alternating press/release, whatever the interleaving of the threads.
    assert [edge.pressed for edge in edges] == [True, False] * (len(edges) // 2)
    assert {edge.source for edge in edges} == {"sim"}
    recorder.check_delivery()
    await sim.close()


async def test_the_handler_runs_later_on_the_loop_not_inside_press(recorder):
    sim = SimulatedButton()
    await sim.start(recorder)
    sim.press(Button.EMERGENCY)
    assert recorder.edges == []  # scheduled with call_soon_threadsafe, not called inline
    await recorder.wait_for(1)
    assert recorder.summary() == [(Button.EMERGENCY, True)]
    await sim.close()


async def test_repeats_are_not_edges_and_buttons_are_independent(recorder):
    sim = SimulatedButton()
    await sim.start(recorder)
    sim.press()
    sim.press()
    sim.press(Button.ROOM_UP)
    sim.release(Button.VOLUME_DOWN)  # never pressed
    sim.release()
    sim.release()
    await recorder.settle()
    assert recorder.summary() == [
        (Button.PTT, True),
        (Button.ROOM_UP, True),
        (Button.PTT, False),
    ]
    assert sim.is_held(Button.ROOM_UP)
    await sim.close()  # releases what is still held
    await recorder.wait_for(4)
    assert recorder.summary()[-1] == (Button.ROOM_UP, False)


async def test_nothing_before_start_or_after_close(recorder):
    sim = SimulatedButton()
    sim.press()  # before start: dropped, and not remembered as held
    await sim.start(recorder)
    sim.release()
    await recorder.settle()
    assert recorder.edges == []
    await sim.close()
    sim.press()
    await recorder.settle()
    assert recorder.edges == []


def test_edges_are_frozen_values():
    edge = ButtonEdge(Button.PTT, True, 1.0, "sim")
    with pytest.raises(dataclasses.FrozenInstanceError):
        edge.pressed = False  # type: ignore[misc]


def test_sink_drops_edges_once_the_loop_is_closed():
    sink = EdgeSink("test")
    loop = asyncio.new_event_loop()
    try:

        async def connect() -> None:
            sink.connect(lambda edge: None)

        loop.run_until_complete(connect())
    finally:
        loop.close()
    assert sink.edge(Button.PTT, True, "x") is False  # no exception from a closed loop
    assert not sink.is_held(Button.PTT, "x")


async def test_release_all_only_for_one_source(recorder):
    sink = EdgeSink("test")
    sink.connect(recorder)
    sink.edge(Button.PTT, True, "a")
    sink.edge(Button.PTT, True, "b")  # the same button from another source is its own edge
    sink.release_all("a")
    await recorder.wait_for(3)
    assert [(e.pressed, e.source) for e in recorder.edges] == [
        (True, "a"),
        (True, "b"),
        (False, "a"),
    ]
    assert sink.is_held(Button.PTT, "b")


async def test_lost_forgets_one_source_and_says_so_after_its_edges(recorder):
    sink = EdgeSink("test")
    sink.connect(recorder)
    sink.edge(Button.PTT, True, "a")
    sink.edge(Button.EMERGENCY, True, "a")
    sink.edge(Button.PTT, True, "b")
    assert sink.lost("a")
    await recorder.wait_gone(1)
    assert recorder.summary() == [(Button.PTT, True), (Button.EMERGENCY, True), (Button.PTT, True)]
    assert isinstance(recorder.items[-1], InputGone) and recorder.gone[0].source == "a"
    assert not sink.is_held(Button.PTT, "a") and not sink.is_held(Button.EMERGENCY, "a")
    assert sink.is_held(Button.PTT, "b")
    sink.edge(Button.PTT, True, "a")  # the device is back: its press is a fresh edge
    await recorder.wait_for(4)
    recorder.check_delivery()


async def test_lost_is_said_with_nothing_held_but_not_when_not_started(recorder):
    sink = EdgeSink("test")
    assert not sink.lost("a")  # before start: dropped
    sink.connect(recorder)
    assert sink.lost("a")  # a toggle latch holds no button: the notice comes all the same
    await recorder.wait_gone(1)
    sink.disconnect()
    assert not sink.lost("a")
    await recorder.settle()
    assert len(recorder.gone) == 1 and recorder.edges == []


async def test_simulated_button_vanishes(recorder):
    sim = SimulatedButton("sim:pedal")
    await sim.start(recorder)
    sim.press()
    sim.vanish()
    gone = await recorder.wait_gone(1)
    assert gone == [InputGone(gone[0].t, "sim:pedal")]
    assert not sim.is_held()
    await sim.close()  # nothing held: no release
    await recorder.settle()
    assert recorder.summary() == [(Button.PTT, True)]
