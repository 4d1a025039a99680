"""Tests of pttd.radio.audio.mixer: streams mixed, volume, mute, tones, odd blocks, stream
lifecycle."""

from __future__ import annotations

import threading

import numpy as np
import numpy.typing as npt
import pytest

from pttd.radio.audio import Pcm
from pttd.radio.audio.codec import Decoder, Encoder, OpusSettings
from pttd.radio.audio.jitter import JitterConfig
from pttd.radio.audio.mixer import (
    MAX_GAIN_DB,
    MAX_INBOX,
    MIN_GAIN_DB,
    TONE_MIN_GAIN_DB,
    Mixer,
    MixerStats,
    volume_to_db,
)
from pttd.radio.audio.tones import ToneKind, tone
from pttd.wire.messages import CodecHeader

RATE = 48000
FRAME = 960
HEADER = CodecHeader(48000, 1, 20)
DEEP = JitterConfig(max_depth_ms=5000)  # takes a whole scripted burst without dropping


class Clock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def sine(freq: float, seconds: float, amplitude: float, rate: int = RATE) -> Pcm:
    t = np.arange(round(seconds * rate)) / rate
    return np.rint(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def encode(signal: Pcm, settings: OpusSettings | None = None) -> list[bytes]:
    enc = Encoder(settings)
    n = enc.settings.frame_samples
    return [enc.encode(signal[i : i + n]) for i in range(0, signal.shape[0] - n + 1, n)]


def reference(packets: list[bytes], rate: int = RATE) -> npt.NDArray[np.float32]:
    dec = Decoder(rate)
    return np.concatenate([dec.decode(p) for p in packets]).astype(np.float32)


def gain(volume: int) -> np.float32:
    return np.float32(10 ** (volume_to_db(volume) / 20))


def expected(mix: npt.NDArray[np.float32], volume: int) -> Pcm:
    out: Pcm = np.clip(np.rint(mix * gain(volume)), -32768, 32767).astype(np.int16)
    return out


def burst(mixer: Mixer, stream_id: int, packets: list[bytes], now: float = 0.0) -> None:
    mixer.start_stream(stream_id, HEADER, now)
    for i, p in enumerate(packets):
        mixer.push_packet(stream_id, i, p, now)
    mixer.stop_stream(stream_id)


def pull_all(mixer: Mixer, total: int, block: int = FRAME) -> Pcm:
    out = [mixer.pull(min(block, total - i)) for i in range(0, total, block)]
    return np.concatenate(out)


def close(a: Pcm, b: Pcm) -> None:
    assert a.shape == b.shape
    assert np.max(np.abs(a.astype(np.int32) - b.astype(np.int32))) <= 1


# --------------------------------------------------------------------------- basics


@pytest.mark.parametrize("n", [0, 1, 441, 960, 4096])
def test_idle_mixer_gives_exactly_n_samples_of_silence(n: int) -> None:
    out = Mixer(RATE, FRAME).pull(n)
    assert out.dtype == np.int16
    assert out.shape == (n,)
    assert not out.any()


def test_one_stream_plays_its_decoded_packets() -> None:
    packets = encode(sine(440, 0.4, 8000))
    mixer = Mixer(RATE, FRAME, jitter=DEEP, clock=Clock(0.001))
    burst(mixer, 7, packets)
    out = pull_all(mixer, len(packets) * FRAME)
    close(out, expected(reference(packets), mixer.volume))
    s = mixer.stats
    assert (s.received, s.played, s.concealed, s.late) == (len(packets), len(packets), 0, 0)


def test_two_streams_are_mixed() -> None:
    a = encode(sine(440, 0.3, 6000))
    b = encode(sine(1000, 0.3, 6000))
    mixer = Mixer(RATE, FRAME, jitter=DEEP, clock=Clock(0.001))
    burst(mixer, 1, a)
    burst(mixer, 2, b)
    first = mixer.pull(FRAME)
    assert mixer.stats.per_stream.keys() == {1, 2}
    out = np.concatenate([first, pull_all(mixer, (len(a) - 1) * FRAME)])
    close(out, expected(reference(a) + reference(b), mixer.volume))
    assert mixer.stats.streams == 0


def test_gain_is_applied_and_the_mix_saturates() -> None:
    a = encode(sine(300, 0.3, 30000))
    b = encode(sine(300, 0.3, 30000))
    mixer = Mixer(RATE, FRAME, jitter=DEEP, volume=100, clock=Clock(0.001))
    burst(mixer, 1, a)
    burst(mixer, 2, b)
    out = pull_all(mixer, len(a) * FRAME)
    mix = (reference(a) + reference(b)) * gain(100)
    close(out, expected(reference(a) + reference(b), 100))
    assert np.max(mix) > 40000  # well past full scale
    assert out.max() == 32767
    assert out.min() == -32768
    # Saturated, not wrapped: wherever the sum is beyond full scale, so is the output.
    assert np.all(out[mix > 32767] == 32767)
    assert np.all(out[mix < -32768] == -32768)


def test_volume_curve_and_limits() -> None:
    assert volume_to_db(0) == float("-inf")
    assert volume_to_db(1) == MIN_GAIN_DB
    assert volume_to_db(100) == MAX_GAIN_DB
    assert volume_to_db(50) < volume_to_db(51)
    mixer = Mixer(RATE, FRAME)
    mixer.set_volume(150)
    assert mixer.volume == 100
    mixer.set_volume(-3)
    assert mixer.volume == 0
    mixer.set_volume(42)
    assert mixer.volume == 42


def test_volume_zero_is_silent_and_volume_changes_take_effect() -> None:
    packets = encode(sine(440, 0.2, 8000))
    mixer = Mixer(RATE, FRAME, jitter=DEEP, volume=0, clock=Clock(0.001))
    burst(mixer, 1, packets)
    assert not mixer.pull(FRAME * 5).any()
    mixer.set_volume(60)
    ref = reference(packets)
    close(mixer.pull(FRAME * 5), expected(ref[FRAME * 5 : FRAME * 10], 60))


# --------------------------------------------------------------------------- mute and tones


def test_mute_silences_received_audio_but_keeps_the_stream_going() -> None:
    packets = encode(sine(440, 0.4, 8000))
    ref = reference(packets)
    mixer = Mixer(RATE, FRAME, jitter=DEEP, clock=Clock(0.001))
    burst(mixer, 1, packets)
    v = mixer.volume
    close(mixer.pull(5 * FRAME), expected(ref[: 5 * FRAME], v))
    mixer.set_muted(True)
    assert mixer.muted
    assert not mixer.pull(5 * FRAME).any()
    assert mixer.stats.played == 10  # consumed while muted, not stored up
    mixer.set_muted(False)
    close(mixer.pull(5 * FRAME), expected(ref[10 * FRAME : 15 * FRAME], v))


def test_tones_play_over_mute_in_order() -> None:
    mixer = Mixer(RATE, FRAME)
    mixer.set_muted(True)
    first, second = tone(ToneKind.TALK_PERMIT, RATE), tone(ToneKind.ROGER, RATE)
    mixer.play(first)
    mixer.play(second)
    total = first.shape[0] + second.shape[0]
    out = pull_all(mixer, total + 3 * FRAME, block=1000)
    g = np.float32(10 ** (max(TONE_MIN_GAIN_DB, min(0.0, volume_to_db(mixer.volume))) / 20))
    both = np.concatenate([first, second]).astype(np.float32)
    close(out[:total], np.rint(both * g).astype(np.int16))
    assert not out[total:].any()


def test_tones_are_heard_even_at_volume_zero_and_never_boosted() -> None:
    beep = tone(ToneKind.BUSY, RATE)
    peak = int(np.max(np.abs(beep.astype(np.int32))))
    for volume, level_db in ((0, TONE_MIN_GAIN_DB), (100, 0.0)):
        mixer = Mixer(RATE, FRAME, volume=volume)
        mixer.play(beep)
        out = mixer.pull(beep.shape[0])
        got = int(np.max(np.abs(out.astype(np.int32))))
        assert got == pytest.approx(peak * 10 ** (level_db / 20), abs=1)


def test_tone_mixes_with_a_stream() -> None:
    packets = encode(sine(440, 0.2, 8000))
    beep = tone(ToneKind.ROGER, RATE)
    mixer = Mixer(RATE, FRAME, jitter=DEEP, volume=100, clock=Clock(0.001))
    burst(mixer, 1, packets)
    mixer.play(beep)
    out = mixer.pull(FRAME * 6)
    speech = reference(packets)[: FRAME * 6] * gain(100)
    speech[: beep.shape[0]] += beep.astype(np.float32)  # tone gain capped at 0 dB
    close(out, np.clip(np.rint(speech), -32768, 32767).astype(np.int16))


def test_play_rejects_non_pcm() -> None:
    with pytest.raises(ValueError, match="int16"):
        Mixer(RATE, FRAME).play(np.zeros(10, np.float32))


# --------------------------------------------------------------------------- blocks, lifecycle


def test_odd_block_sizes_give_the_same_audio() -> None:
    packets = encode(sine(523, 1.0, 8000))
    ref = expected(reference(packets), 80)
    mixer = Mixer(RATE, FRAME, jitter=DEEP, volume=80, clock=Clock(0.001))
    burst(mixer, 3, packets)
    sizes = [1, 7, 441, 960, 1500, 333, 4096, 2, 959, 961, 1024]
    out: list[Pcm] = []
    total = 0
    while total < ref.shape[0] + 2000:
        n = sizes[len(out) % len(sizes)]
        block = mixer.pull(n)
        assert block.shape == (n,)
        out.append(block)
        total += n
    joined = np.concatenate(out)
    close(joined[: ref.shape[0]], ref)
    assert not joined[ref.shape[0] :].any()


def test_stopped_stream_drains_then_is_freed() -> None:
    packets = encode(sine(440, 0.2, 8000))
    mixer = Mixer(RATE, FRAME, jitter=DEEP, clock=Clock(0.001))
    burst(mixer, 9, packets)  # start, ten packets, stop
    mixer.pull(FRAME * 4)
    assert mixer.stats.streams == 1
    mixer.pull(FRAME * 5 + 100)
    assert mixer.stats.streams == 1  # 860 samples still to play
    mixer.pull(860)
    assert mixer.stats.streams == 0  # the last samples went out: dropped
    s = mixer.stats
    assert (s.received, s.played) == (10, 10)  # and its counters are kept
    assert not mixer.pull(FRAME).any()


def test_packets_for_unknown_streams_are_dropped() -> None:
    mixer = Mixer(RATE, FRAME)
    mixer.push_packet(5, 0, b"x", 0.0)
    mixer.stop_stream(5)
    assert not mixer.pull(FRAME).any()
    assert mixer.stats.dropped == 1


def test_restarting_a_stream_id_replaces_it() -> None:
    a, b = encode(sine(440, 0.1, 8000)), encode(sine(880, 0.1, 8000))
    mixer = Mixer(RATE, FRAME, jitter=DEEP, clock=Clock(0.001))
    mixer.start_stream(1, HEADER, 0.0)
    for i, p in enumerate(a):
        mixer.push_packet(1, i, p, 0.0)
    burst(mixer, 1, b)
    close(mixer.pull(len(b) * FRAME), expected(reference(b), mixer.volume))
    assert mixer.stats.received == len(a) + len(b)


def test_garbage_packet_is_concealed_not_played() -> None:
    packets = encode(sine(440, 0.2, 8000))
    packets[5] = b"garbage!"
    mixer = Mixer(RATE, FRAME, jitter=DEEP, clock=Clock(0.001))
    burst(mixer, 1, packets)
    out = mixer.pull(len(packets) * FRAME)
    assert mixer.stats.decode_errors == 1
    assert np.max(np.abs(out.astype(np.int32))) < 9000  # a concealed frame, not noise


def test_idle_stream_is_dropped_after_the_timeout() -> None:
    clock = Clock(0.0)
    mixer = Mixer(RATE, FRAME, clock=clock, idle_timeout=5.0)
    mixer.start_stream(1, HEADER, 0.0)
    mixer.push_packet(1, 0, encode(sine(440, 0.02, 8000))[0], 0.0)
    mixer.pull(FRAME)
    clock.t = 4.0
    mixer.pull(FRAME)
    assert mixer.stats.streams == 1
    clock.t = 5.5
    mixer.pull(FRAME)
    assert mixer.stats.streams == 0


def test_non_opus_output_rate() -> None:
    packets = encode(sine(440, 0.2, 8000))
    mixer = Mixer(44100, 882, jitter=DEEP, clock=Clock(0.001))
    burst(mixer, 1, packets)
    out = mixer.pull(len(packets) * 882)
    close(out, expected(reference(packets, 44100), mixer.volume))


def test_sixty_ms_packets_at_16_khz() -> None:
    settings = OpusSettings(sample_rate=16000, frame_ms=60)
    packets = encode(sine(440, 0.6, 8000, rate=16000), settings)
    mixer = Mixer(RATE, FRAME, jitter=DEEP, clock=Clock(0.001))
    mixer.start_stream(1, settings.codec_header(), 0.0)
    for i, p in enumerate(packets):
        mixer.push_packet(1, i, p, 0.0)
    mixer.stop_stream(1)
    out = mixer.pull(len(packets) * 2880)
    close(out, expected(reference(packets), mixer.volume))


def test_inbox_is_bounded_when_nobody_pulls() -> None:
    mixer = Mixer(RATE, FRAME)
    mixer.start_stream(1, HEADER, 0.0)
    for i in range(MAX_INBOX + 5):
        mixer.push_packet(1, i, b"x", 0.0)
    mixer.pull(1)
    assert mixer.stats.received == MAX_INBOX
    assert mixer.stats.dropped >= 5


def test_packet_id_is_checked_on_the_callers_thread() -> None:
    with pytest.raises(ValueError, match="u32"):
        Mixer(RATE, FRAME).push_packet(1, 2**32, b"x", 0.0)


# --------------------------------------------------------------------------- real-time shape


def test_real_time_feed_with_portaudio_blocks_settles_without_glitches() -> None:
    """Packets every 20 ms, pulls of 1024 samples (21.3 ms): after start-up, no concealment."""
    packets = encode(sine(440, 3.0, 8000))
    clock = Clock(0.0)
    mixer = Mixer(RATE, 1024, clock=clock)
    mixer.start_stream(1, HEADER, 0.0)
    pushed = 0
    played = 0.0
    while played < 2.9:
        while pushed < len(packets) and pushed * 0.020 + 0.002 <= clock.t:
            mixer.push_packet(1, pushed, packets[pushed], pushed * 0.020 + 0.002)
            pushed += 1
        mixer.pull(1024)
        played += 1024 / RATE
        clock.t = played
        if played < 0.5:
            settled = mixer.stats
    s = mixer.stats
    assert s.concealed == settled.concealed  # nothing concealed after the first half second
    assert s.underruns == 0
    assert s.late == 0
    assert s.played >= 140


def test_pull_on_another_thread_while_the_loop_pushes() -> None:
    packets = encode(sine(440, 0.5, 8000))
    mixer = Mixer(RATE, FRAME, jitter=DEEP)
    done = threading.Event()
    errors: list[BaseException] = []
    blocks: list[int] = []

    def audio_thread() -> None:
        try:
            while not done.is_set():
                blocks.append(mixer.pull(441).shape[0])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    worker = threading.Thread(target=audio_thread)
    worker.start()
    try:
        for round_ in range(20):
            mixer.start_stream(round_, HEADER, 0.0)
            for i, p in enumerate(packets):
                mixer.push_packet(round_, i, p, 0.0)
            mixer.set_volume(round_ * 5)
            mixer.set_muted(round_ % 2 == 0)
            mixer.play(tone(ToneKind.ROGER, RATE))
            mixer.stop_stream(round_)
            _ = mixer.stats
    finally:
        done.set()
        worker.join(timeout=10)
    assert not errors
    assert blocks
    assert set(blocks) == {441}


# --------------------------------------------------------------------------- fast paths


def exact(mix: npt.NDArray[np.float32], volume: int) -> Pcm:
    """Bit for bit what the mixer computes: float32 sum, float32 gain, round, saturate."""
    out: Pcm = np.clip(np.rint(mix * gain(volume)), -32768, 32767).astype(np.int16)
    return out


@pytest.mark.parametrize("volume", [1, 50, 80, 87, 88, 100])
def test_one_stream_is_bit_exact_and_saturates_when_boosted(volume: int) -> None:
    packets = encode(sine(300, 0.3, 30000))
    mixer = Mixer(RATE, FRAME, jitter=DEEP, volume=volume, clock=Clock(0.001))
    burst(mixer, 1, packets)
    out = pull_all(mixer, len(packets) * FRAME)
    assert np.array_equal(out, exact(reference(packets), volume))
    if volume == 100:
        assert out.max() == 32767
        assert out.min() == -32768


def test_two_streams_and_a_tone_are_bit_exact() -> None:
    a, b = encode(sine(440, 0.3, 9000)), encode(sine(1000, 0.3, 9000))
    beep = tone(ToneKind.ROGER, RATE)
    mixer = Mixer(RATE, FRAME, jitter=DEEP, volume=95, clock=Clock(0.001))
    burst(mixer, 1, a)
    burst(mixer, 2, b)
    mixer.play(beep)
    out = pull_all(mixer, len(a) * FRAME)
    mix = (reference(a) + reference(b)) * gain(95)
    mix[: beep.shape[0]] += beep.astype(np.float32)  # the tone's gain is capped at 0 dB
    assert np.array_equal(out, np.clip(np.rint(mix), -32768, 32767).astype(np.int16))


@pytest.mark.parametrize("case", ["one stream", "muted", "tone", "two streams", "idle"])
def test_pulled_blocks_are_the_callers_own(case: str) -> None:
    """No block shares memory with the mixer's buffers or with another block."""
    mixer = Mixer(RATE, FRAME, jitter=DEEP, clock=Clock(0.001))
    if case != "idle":
        burst(mixer, 1, encode(sine(440, 0.2, 8000)))
    if case == "two streams":
        burst(mixer, 2, encode(sine(660, 0.2, 8000)))
    if case == "tone":
        mixer.play(tone(ToneKind.BUSY, RATE))
    mixer.set_muted(case == "muted")
    blocks = [mixer.pull(FRAME) for _ in range(4)]
    kept = [b.copy() for b in blocks]
    for _ in range(4):
        mixer.pull(FRAME)
    for block, copy in zip(blocks, kept, strict=True):
        assert np.array_equal(block, copy)
    assert not any(np.shares_memory(x, y) for i, x in enumerate(blocks) for y in blocks[i + 1 :])


def test_stats_are_those_of_the_last_pull_and_kept_until_the_next() -> None:
    packets = encode(sine(440, 0.2, 8000))
    mixer = Mixer(RATE, FRAME, jitter=DEEP, clock=Clock(0.001))
    assert mixer.stats == MixerStats()
    burst(mixer, 4, packets)
    assert mixer.stats.received == 0  # nothing pulled yet: the packets wait in the inbox
    mixer.pull(FRAME)
    first = mixer.stats
    assert first is mixer.stats  # no pull since: the same snapshot
    assert (first.received, first.played, first.streams) == (len(packets), 1, 1)
    assert first.per_stream[4].depth == len(packets) - 1
    mixer.pull(FRAME)
    assert mixer.stats.played == 2
    assert first.played == 1  # a snapshot does not change


def test_stats_read_on_another_thread_are_consistent_snapshots() -> None:
    packets = encode(sine(440, 1.0, 8000))
    mixer = Mixer(RATE, FRAME, jitter=DEEP, clock=Clock(0.001))
    mixer.start_stream(1, HEADER, 0.0)
    for i, p in enumerate(packets):
        mixer.push_packet(1, i, p, 0.0)
    mixer.stop_stream(1)
    pulls = 0
    reading = threading.Event()

    def audio_thread() -> None:
        nonlocal pulls
        reading.wait(10)  # the reader is reading: the pulls overlap its reads, however loaded
        while pulls < 1000 and (mixer.stats.streams or not mixer.stats.played):
            mixer.pull(441)
            pulls += 1

    worker = threading.Thread(target=audio_thread)
    worker.start()
    reads, played = 0, 0
    try:
        while reads == 0 or worker.is_alive():
            s = mixer.stats
            reading.set()
            reads += 1
            assert s.streams == len(s.per_stream)
            assert s.played + sum(j.depth for j in s.per_stream.values()) <= s.received
            assert s.played >= played
            played = s.played
    finally:
        worker.join(timeout=10)
    assert reads
    assert mixer.stats.played == len(packets)
    assert mixer.stats.streams == 0
