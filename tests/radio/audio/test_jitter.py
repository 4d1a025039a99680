"""Tests of pttd.radio.audio.jitter: scripted arrivals and pops, with made-up times (no clocks)."""

from __future__ import annotations

import math
import random

import pytest

from pttd.errors import AudioConfigError
from pttd.radio.audio.jitter import (
    Action,
    JitterBuffer,
    JitterConfig,
    JitterStats,
    Playout,
)

FRAME = 0.020  # seconds per packet in these tests
WIDE = JitterConfig(max_depth_ms=1000)  # room for scripted bursts without overflow


def pkt(i: int) -> bytes:
    return f"p{i}".encode()


def step(jb: JitterBuffer, now: float) -> tuple[Action, int | None]:
    p = jb.pop(now)
    return p.action, p.packet_id


def pops(jb: JitterBuffer, count: int, now: float = 0.0) -> list[tuple[Action, int | None]]:
    return [step(jb, now + i * FRAME) for i in range(count)]


PLAY, FEC, PLC, SILENT = Action.PLAY, Action.RECOVER_FEC, Action.CONCEAL, Action.SILENCE


def simulate(
    jb: JitterBuffer, arrivals: list[tuple[float, int]], start: float, end: float
) -> list[Playout]:
    """Arrivals (time, packet_id) and a pop every FRAME from ``start``, in time order."""
    events = sorted(arrivals)
    out: list[Playout] = []
    i = 0
    now = start
    while now < end:
        while i < len(events) and events[i][0] <= now:
            t, pid = events[i]
            jb.push(pid, pkt(pid), t)
            i += 1
        out.append(jb.pop(now))
        now += FRAME
    return out


# --------------------------------------------------------------------------- basics


def test_silence_before_anything_arrives() -> None:
    jb = JitterBuffer(20)
    assert step(jb, 0.0) == (SILENT, None)
    assert not jb.finished
    assert not jb.playing


def test_in_order_plays_every_packet() -> None:
    jb = JitterBuffer(20)
    played = []
    for i in range(10):
        assert jb.push(i, pkt(i), i * FRAME)
        p = jb.pop(i * FRAME + 0.001)
        assert p.action is PLAY
        assert p.payload == pkt(i)
        played.append(p.packet_id)
    assert played == list(range(10))
    s = jb.stats()
    assert (s.received, s.played, s.late, s.duplicates, s.concealed) == (10, 10, 0, 0, 0)
    assert s.jitter == pytest.approx(0.0, abs=1e-9)
    assert s.target_depth == 1


def test_reordered_packets_play_in_order() -> None:
    jb = JitterBuffer(20, JitterConfig(min_depth=3))
    jb.push(0, pkt(0), 0.0)
    jb.push(2, pkt(2), 0.02)
    assert step(jb, 0.021) == (PLAY, 0)
    jb.push(1, pkt(1), 0.03)
    assert pops(jb, 3, 0.04) == [(PLAY, 1), (PLAY, 2), (PLC, 3)]
    assert jb.stats().late == 0


def test_duplicates_are_dropped_and_counted() -> None:
    jb = JitterBuffer(20, JitterConfig(min_depth=2))
    assert jb.push(0, pkt(0), 0.0)
    assert not jb.push(0, b"again", 0.001)  # while buffered
    jb.push(1, pkt(1), 0.02)
    p = jb.pop(0.02)
    assert (p.action, p.payload) == (PLAY, pkt(0))
    assert not jb.push(0, b"again", 0.03)  # after it was played
    assert step(jb, 0.04) == (PLAY, 1)
    s = jb.stats()
    assert (s.duplicates, s.late, s.received, s.played) == (2, 0, 4, 2)


# --------------------------------------------------------------------------- loss


def test_one_lost_packet_is_recovered_from_the_next_ones_fec() -> None:
    jb = JitterBuffer(20, JitterConfig(min_depth=3))
    for i in (0, 2, 3):
        jb.push(i, pkt(i), i * FRAME)
    assert step(jb, 0.07) == (PLAY, 0)
    p = jb.pop(0.09)
    assert (p.action, p.packet_id, p.payload) == (FEC, 1, pkt(2))
    assert pops(jb, 2, 0.11) == [(PLAY, 2), (PLAY, 3)]
    s = jb.stats()
    assert (s.recovered_fec, s.concealed, s.played) == (1, 0, 3)


def test_lost_packet_is_concealed_when_the_next_is_missing_too() -> None:
    jb = JitterBuffer(20, JitterConfig(min_depth=4))
    for i in (0, 3):
        jb.push(i, pkt(i), i * FRAME)
    assert pops(jb, 4, 0.07) == [(PLAY, 0), (PLC, 1), (FEC, 2), (PLAY, 3)]
    s = jb.stats()
    assert (s.concealed, s.recovered_fec, s.played) == (1, 1, 2)


def test_burst_loss() -> None:
    jb = JitterBuffer(20, WIDE)
    for i in [*range(5), *range(10, 13)]:
        jb.push(i, pkt(i), 0.0)
    got = pops(jb, 13, 0.001)
    assert got == (
        [(PLAY, i) for i in range(5)]
        + [(PLC, i) for i in range(5, 9)]
        + [(FEC, 9)]
        + [(PLAY, i) for i in range(10, 13)]
    )
    s = jb.stats()
    assert (s.played, s.concealed, s.recovered_fec, s.underruns) == (8, 4, 1, 0)


def test_late_packet_is_discarded() -> None:
    jb = JitterBuffer(20)
    jb.push(0, pkt(0), 0.0)
    jb.push(2, pkt(2), 0.02)
    assert pops(jb, 2, 0.021) == [(PLAY, 0), (FEC, 1)]
    assert not jb.push(1, pkt(1), 0.05)  # its slot was recovered already
    assert step(jb, 0.061) == (PLAY, 2)
    s = jb.stats()
    assert (s.late, s.played, s.recovered_fec) == (1, 2, 1)


def test_starved_buffer_holds_then_plays_the_late_packet() -> None:
    jb = JitterBuffer(20)
    jb.push(0, pkt(0), 0.0)
    assert step(jb, 0.001) == (PLAY, 0)
    assert step(jb, 0.021) == (PLC, 1)  # nothing there: conceal, but keep slot 1 open
    jb.push(1, pkt(1), 0.035)
    jb.push(2, pkt(2), 0.040)
    assert pops(jb, 2, 0.041) == [(PLAY, 1), (PLAY, 2)]
    s = jb.stats()
    assert (s.played, s.concealed, s.late, s.underruns) == (3, 1, 0, 0)


def test_concealment_run_is_limited_then_underrun_and_rebuffer() -> None:
    jb = JitterBuffer(20, JitterConfig(max_conceal=3))
    jb.push(0, pkt(0), 0.0)
    got = pops(jb, 6, 0.001)
    assert got == [(PLAY, 0), (PLC, 1), (PLC, 1), (PLC, 1), (SILENT, None), (SILENT, None)]
    s = jb.stats()
    assert (s.concealed, s.underruns) == (3, 1)
    assert not jb.playing
    assert not jb.finished
    # The stream comes back: packets older than the slot it stopped at are late; newer ones play.
    jb.push(5, pkt(5), 0.1)  # on time for its id: the jitter estimate stays at zero
    assert step(jb, 0.101) == (PLAY, 5)
    assert not jb.push(4, pkt(4), 0.11)
    assert jb.stats().late == 1


def test_packet_ids_wrap_around_at_2_32() -> None:
    first = 2**32 - 3
    ids = [(first + i) % 2**32 for i in range(6)]
    jb = JitterBuffer(20, JitterConfig(min_depth=3))
    for i, pid in enumerate(ids):
        if pid != 0:  # lose the one after the wrap
            jb.push(pid, pkt(pid), i * FRAME)
    got = pops(jb, 6, 0.2)
    assert got == [
        (PLAY, 2**32 - 3),
        (PLAY, 2**32 - 2),
        (PLAY, 2**32 - 1),
        (FEC, 0),
        (PLAY, 1),
        (PLAY, 2),
    ]
    assert not jb.push(2**32 - 1, b"x", 0.4)  # played before the wrap: a duplicate, not new
    assert not jb.push(0, b"x", 0.4)  # recovered already: late
    s = jb.stats()
    assert (s.duplicates, s.late) == (1, 1)


def test_arrivals_straddling_the_wrap_out_of_order() -> None:
    jb = JitterBuffer(20, JitterConfig(min_depth=4))
    for pid in (1, 2**32 - 1, 0, 2**32 - 2):
        jb.push(pid, pkt(pid), 0.0)
    assert [pid for _, pid in pops(jb, 4, 0.001)] == [2**32 - 2, 2**32 - 1, 0, 1]


# --------------------------------------------------------------------------- limits


def test_too_deep_a_buffer_drops_the_oldest() -> None:
    jb = JitterBuffer(20, JitterConfig(max_depth_ms=200))  # 10 frames
    for i in range(30):
        jb.push(i, pkt(i), 0.0)
    assert jb.depth == 10
    assert jb.stats().dropped == 20
    assert step(jb, 0.001) == (PLAY, 20)


def test_a_packet_far_ahead_moves_playout_forward() -> None:
    jb = JitterBuffer(20, JitterConfig(max_depth_ms=200))
    jb.push(0, pkt(0), 0.0)
    assert step(jb, 0.001) == (PLAY, 0)
    jb.push(1, pkt(1), 0.02)
    jb.push(100, pkt(100), 0.03)
    assert jb.stats().dropped == 1
    assert step(jb, 0.031) == (PLC, 91)
    assert not jb.push(50, pkt(50), 0.04)
    assert jb.stats().late == 1


def test_playout_starts_after_the_target_wait_even_without_enough_packets() -> None:
    jb = JitterBuffer(20, JitterConfig(min_depth=3))
    jb.push(0, pkt(0), 0.0)
    assert step(jb, 0.02) == (SILENT, None)
    assert step(jb, 0.04) == (SILENT, None)
    assert step(jb, 0.06) == (PLAY, 0)


def test_packet_id_must_be_u32() -> None:
    jb = JitterBuffer(20)
    with pytest.raises(ValueError, match="u32"):
        jb.push(2**32, b"x", 0.0)
    with pytest.raises(ValueError, match="u32"):
        jb.push(-1, b"x", 0.0)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("min_depth", 0),
        ("max_depth_ms", 0),
        ("max_conceal", -1),
        ("jitter_window", 1),
        ("shrink_window", 0),
        ("min_depth", 1.5),
    ],
)
def test_config_validation_names_the_field(field: str, value: object) -> None:
    with pytest.raises(AudioConfigError, match=field):
        JitterConfig(**{field: value})  # type: ignore[arg-type]


def test_frame_ms_must_be_positive() -> None:
    with pytest.raises(AudioConfigError, match="frame_ms"):
        JitterBuffer(0)


def test_max_depth_in_frames() -> None:
    assert JitterConfig().max_depth(20) == 10
    assert JitterConfig().max_depth(60) == 3
    assert JitterConfig(min_depth=4, max_depth_ms=40).max_depth(20) == 4


# --------------------------------------------------------------------------- stop


def test_stop_drains_then_finishes() -> None:
    jb = JitterBuffer(20, JitterConfig(min_depth=3))
    for i in (0, 1, 3, 4):
        jb.push(i, pkt(i), i * FRAME)
    assert step(jb, 0.1) == (PLAY, 0)
    jb.stop()
    assert not jb.finished
    assert pops(jb, 6, 0.12) == [
        (PLAY, 1),
        (FEC, 2),
        (PLAY, 3),
        (PLAY, 4),
        (SILENT, None),
        (SILENT, None),
    ]
    assert jb.finished
    assert not jb.push(5, pkt(5), 0.3)  # nothing more is taken after the end


def test_stop_before_playout_starts_plays_what_is_there() -> None:
    jb = JitterBuffer(20, JitterConfig(min_depth=5))
    jb.push(0, pkt(0), 0.0)
    jb.push(1, pkt(1), 0.02)
    jb.stop()
    assert pops(jb, 3, 0.021) == [(PLAY, 0), (PLAY, 1), (SILENT, None)]
    assert jb.finished


def test_stop_with_nothing_buffered_finishes_at_once() -> None:
    jb = JitterBuffer(20)
    jb.stop()
    assert jb.finished
    assert step(jb, 0.0) == (SILENT, None)


def test_stop_while_holding_ends_the_concealment() -> None:
    jb = JitterBuffer(20)
    jb.push(0, pkt(0), 0.0)
    assert pops(jb, 2, 0.001) == [(PLAY, 0), (PLC, 1)]
    jb.stop()
    assert step(jb, 0.041) == (SILENT, None)
    assert jb.finished


def test_stop_after_an_underrun() -> None:
    jb = JitterBuffer(20, JitterConfig(max_conceal=0))
    jb.push(0, pkt(0), 0.0)
    assert pops(jb, 2, 0.001) == [(PLAY, 0), (SILENT, None)]
    assert jb.stats().underruns == 1
    jb.stop()
    assert jb.finished


# --------------------------------------------------------------------------- adaptation


def jittery_arrivals(
    first: int, count: int, t0: float, spread: float, seed: int
) -> list[tuple[float, int]]:
    rng = random.Random(seed)
    return [(t0 + (first + i) * FRAME + rng.uniform(0, spread), first + i) for i in range(count)]


def test_jitter_raises_the_target_and_the_depth_follows() -> None:
    jb = JitterBuffer(20)
    calm = [(0.005 + i * FRAME, i) for i in range(50)]
    out = simulate(jb, calm, 0.01, 1.0)
    assert all(p.action is PLAY for p in out[:49])
    calm_depth = jb.stats()
    assert calm_depth.target_depth == 1
    assert calm_depth.jitter == pytest.approx(0.0, abs=1e-9)

    rough = jittery_arrivals(50, 150, 0.005, spread=0.070, seed=3)
    out = simulate(jb, rough, 1.0, 4.0)
    s = jb.stats()
    assert 0.050 < s.jitter <= 0.070
    assert s.target_depth >= 4
    assert s.concealed > 0  # it took some holds to learn
    # By the last second the buffer is deep enough: nothing is concealed any more.
    last = [p.packet_id or 0 for p in out[-40:-5] if p.action is PLAY]
    assert len(last) == 35
    assert last == list(range(last[0], last[0] + 35))


def test_calm_traffic_brings_the_depth_back_down() -> None:
    jb = JitterBuffer(20)
    rough = jittery_arrivals(0, 100, 0.0, spread=0.080, seed=5)
    simulate(jb, rough, 0.005, 2.0)
    deep = jb.stats()
    assert deep.depth >= 4

    calm = [(0.001 + i * FRAME, i) for i in range(100, 400)]  # as early as the earliest were
    out = simulate(jb, calm, 2.005, 6.0)  # packets keep coming after this
    s = jb.stats()
    assert s.target_depth == 1
    assert s.depth == 0
    assert out[-1].packet_id == 299  # the newest packet, which arrived 4 ms before this pop
    assert s.dropped >= deep.depth - 2  # one skipped frame per window on the way down
    assert s.concealed == deep.concealed  # and no concealment on the way
    played = [p.packet_id or 0 for p in out if p.action is PLAY]
    assert played == sorted(played)


def test_stats_snapshot() -> None:
    jb = JitterBuffer(20)
    jb.push(0, pkt(0), 0.0)
    jb.push(1, pkt(1), 0.05)
    s = jb.stats()
    assert isinstance(s, JitterStats)
    assert s.received == 2
    assert s.depth == 2
    assert s.jitter == pytest.approx(0.03)
    assert s.target_depth == 3


# --------------------------------------------------------------------------- fast paths


def sorted_window_jitter(transits: list[float], window: int) -> float:
    """The estimate as first written: sort the last ``window`` transits at every arrival."""
    last = sorted(transits[-window:])
    if len(last) < 2:
        return 0.0
    return last[round(0.95 * (len(last) - 1))] - last[0]


@pytest.mark.parametrize("window", [2, 7, 100])
def test_jitter_estimate_is_that_of_sorting_the_window(window: int) -> None:
    rng = random.Random(window)
    jb = JitterBuffer(20, JitterConfig(jitter_window=window, max_depth_ms=10_000))
    transits: list[float] = []
    estimate = 0.0
    for i in range(400):
        pid = max(0, i + rng.choice([0, 0, 0, 1, -1, -3]))  # reordered, duplicated, late
        now = 1.0 + i * FRAME + rng.choice([0.0, 0.0, 0.004, 0.02, rng.uniform(0, 0.09)])
        counted = jb.stats().duplicates
        jb.push(pid, pkt(pid), now)
        if jb.stats().duplicates == counted:  # duplicates are not measured
            transits.append(now - pid * FRAME)
            if len(transits) >= 2:
                estimate = sorted_window_jitter(transits, window)
        assert jb.jitter == estimate  # exactly: the same values, the same order statistic
        extra = math.ceil(estimate / FRAME - 1e-9)
        assert jb.target_depth == min(jb.config.max_depth(20), max(1, 1 + extra))
        if rng.random() < 0.9:
            jb.pop(now)


def test_pop_action_is_pop_without_the_playout_object() -> None:
    arrivals = [(0.005 + i * FRAME + (0.05 if i % 7 == 3 else 0.0), i) for i in range(60)]
    arrivals = [a for a in arrivals if a[1] not in (10, 20, 21)]  # FEC, then concealment
    a, b = JitterBuffer(20, WIDE), JitterBuffer(20, WIDE)
    events = sorted(arrivals)
    k = 0
    for step_ in range(90):
        now = 0.01 + step_ * FRAME
        while k < len(events) and events[k][0] <= now:
            t, pid = events[k]
            a.push(pid, pkt(pid), t)
            b.push(pid, pkt(pid), t)
            k += 1
        if step_ == 70:
            a.stop()
            b.stop()
        playout = a.pop(now)
        assert b.pop_action(now) == (playout.action, playout.payload)
    assert a.stats() == b.stats()
    assert a.finished and b.finished


def test_counts_are_the_stats_fields_in_order() -> None:
    jb = JitterBuffer(20)
    for i in (0, 1, 1, 3):
        jb.push(i, pkt(i), i * FRAME + 0.001 * i)
    pops(jb, 3, 0.1)
    assert JitterStats(*jb.counts()) == jb.stats()


def test_duplicates_are_told_from_late_packets_for_the_last_64_played() -> None:
    jb = JitterBuffer(20)
    for i in range(100):
        jb.push(i, pkt(i), i * FRAME)
        jb.pop(i * FRAME + 0.001)
    assert not jb.push(99, pkt(99), 2.0)
    assert not jb.push(36, pkt(36), 2.0)  # the 64th most recent: still remembered
    assert not jb.push(35, pkt(35), 2.0)  # played before those: late
    s = jb.stats()
    assert (s.duplicates, s.late) == (2, 1)
