"""Tests of pttd.radio.audio.codec: Opus settings, encoder ctls, decoding, FEC, PLC, resampling."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import opuslib  # type: ignore[import-untyped]
import opuslib.api.ctl  # type: ignore[import-untyped]
import opuslib.api.encoder  # type: ignore[import-untyped]
import pytest

from pttd.errors import AudioConfigError, AudioError, CodecError, ConfigError
from pttd.radio.audio import Pcm
from pttd.radio.audio.codec import (
    APPLICATION,
    Decoder,
    Encoder,
    OpusSettings,
    decode_rate_for,
)
from pttd.radio.config import AudioConfig
from pttd.wire.messages import CodecHeader


def speech_like(rate: int, seconds: float, seed: int = 1) -> Pcm:
    """A voiced, pitch-gliding, amplitude-modulated harmonic signal with a little noise."""
    t = np.arange(round(rate * seconds)) / rate
    f0 = 150 + 50 * np.sin(2 * np.pi * 1.3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    harmonics = min(14, int(rate / 2 / 250))
    wave: npt.NDArray[np.float64] = np.zeros_like(t)
    for k in range(1, harmonics + 1):
        wave += np.sin(k * phase) / k
    wave = wave * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t))
    noise = np.random.default_rng(seed).normal(0, 0.02, t.shape[0])
    wave = wave / np.max(np.abs(wave)) * 0.4 + noise
    return np.clip(wave * 32767, -32768, 32767).astype(np.int16)


def frames(signal: Pcm, size: int) -> list[Pcm]:
    return [signal[i : i + size] for i in range(0, signal.shape[0] - size + 1, size)]


def rms(x: npt.NDArray[np.floating] | Pcm) -> float:
    return float(np.sqrt(np.mean(np.asarray(x, np.float64) ** 2)))


# --------------------------------------------------------------------------- settings


def test_settings_defaults() -> None:
    s = OpusSettings()
    assert (s.sample_rate, s.frame_ms, s.bitrate, s.complexity) == (48000, 20, 24000, 5)
    assert (s.fec, s.expected_loss_percent, s.dtx) == (True, 5, False)
    assert s.frame_samples == 960
    assert s.packet_duration == 20
    assert s.codec_header() == CodecHeader(48000, 1, 20)


def test_settings_from_the_default_config_are_the_defaults() -> None:
    assert OpusSettings.from_config(AudioConfig()) == OpusSettings()


def test_settings_from_config_take_every_opus_key() -> None:
    audio = AudioConfig(
        sample_rate=16000,
        frame_ms=40,
        bitrate=16000,
        complexity=3,
        fec=False,
        expected_loss_percent=10,
        dtx=True,
        volume=20,  # not an encoder setting
    )
    assert OpusSettings.from_config(audio) == OpusSettings(
        sample_rate=16000,
        frame_ms=40,
        bitrate=16000,
        complexity=3,
        fec=False,
        expected_loss_percent=10,
        dtx=True,
    )


@pytest.mark.parametrize("rate", [8000, 12000, 16000, 24000, 48000])
@pytest.mark.parametrize("frame_ms", [10, 20, 40, 60])
def test_frame_samples_and_header(rate: int, frame_ms: int) -> None:
    s = OpusSettings(sample_rate=rate, frame_ms=frame_ms)
    assert s.frame_samples == rate * frame_ms // 1000
    header = s.codec_header()
    assert CodecHeader.decode(header.encode()) == header
    assert header.packet_duration_ms == frame_ms


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sample_rate", 44100),
        ("sample_rate", 0),
        ("frame_ms", 25),
        ("frame_ms", 5),
        ("bitrate", 100),
        ("bitrate", 600_000),
        ("complexity", -1),
        ("complexity", 11),
        ("expected_loss_percent", 101),
        ("fec", 1),
        ("dtx", "no"),
        ("complexity", True),
    ],
)
def test_settings_validation_names_the_field(field: str, value: object) -> None:
    with pytest.raises(AudioConfigError, match=field) as caught:
        OpusSettings(**{field: value})  # type: ignore[arg-type]
    assert isinstance(caught.value, ConfigError)
    assert isinstance(caught.value, AudioError)
    assert isinstance(caught.value, ValueError)


# --------------------------------------------------------------------------- encoder


def test_encoder_settings_take_effect() -> None:
    applied = Encoder().applied_settings()
    assert applied == {
        "sample_rate": 48000,
        "application": opuslib.APPLICATION_VOIP,
        "bitrate": 24000,
        "complexity": 5,
        "inband_fec": 1,
        "packet_loss_perc": 5,
        "dtx": 0,
    }


def test_encoder_reports_no_mismatch_for_what_it_was_given() -> None:
    s = OpusSettings(complexity=9, fec=False, dtx=True)
    encoder = Encoder(s)
    assert encoder.mismatches() == {}
    assert encoder.applied_settings() == s.ctl_values()
    assert s.ctl_values()["application"] == APPLICATION == opuslib.APPLICATION_VOIP


def test_encoder_mismatches_name_a_setting_changed_behind_its_back() -> None:
    encoder = Encoder(OpusSettings(complexity=5))
    opuslib.api.encoder.encoder_ctl(encoder.state, opuslib.api.ctl.set_complexity, 2)
    opuslib.api.encoder.encoder_ctl(encoder.state, opuslib.api.ctl.set_inband_fec, 0)
    assert encoder.mismatches() == {"complexity": (5, 2), "inband_fec": (1, 0)}


def test_encoder_non_default_settings_take_effect() -> None:
    s = OpusSettings(
        sample_rate=16000,
        bitrate=16000,
        complexity=0,
        fec=False,
        expected_loss_percent=12,
        dtx=True,
    )
    applied = Encoder(s).applied_settings()
    assert applied["sample_rate"] == 16000
    assert applied["bitrate"] == 16000
    assert applied["complexity"] == 0
    assert applied["inband_fec"] == 0
    assert applied["packet_loss_perc"] == 12
    assert applied["dtx"] == 1


@pytest.mark.parametrize(
    "frame",
    [
        np.zeros(959, np.int16),
        np.zeros(961, np.int16),
        np.zeros(960, np.float32),
        np.zeros((960, 1), np.int16),
        np.zeros((480, 2), np.int16),
    ],
)
def test_encode_rejects_wrong_frames(frame: Pcm) -> None:
    with pytest.raises(CodecError, match="960 int16"):
        Encoder().encode(frame)


def test_encode_accepts_non_contiguous_frames() -> None:
    frame = speech_like(48000, 0.02)
    strided = np.repeat(frame, 2)[::2]
    assert not strided.flags.c_contiguous
    assert Encoder().encode(strided) == Encoder().encode(frame)


def test_reset_keeps_settings() -> None:
    enc = Encoder(OpusSettings(bitrate=32000))
    enc.encode(speech_like(48000, 0.02))
    enc.reset()
    assert enc.applied_settings()["bitrate"] == 32000


# --------------------------------------------------------------------------- decoder


@pytest.mark.parametrize("rate", [8000, 16000, 48000])
@pytest.mark.parametrize("frame_ms", [10, 20, 60])
def test_round_trip(rate: int, frame_ms: int) -> None:
    s = OpusSettings(sample_rate=rate, frame_ms=frame_ms, bitrate=32000)
    enc, dec = Encoder(s), Decoder(rate)
    signal = speech_like(rate, 0.6)
    out = np.concatenate([dec.decode(enc.encode(f)) for f in frames(signal, s.frame_samples)])
    assert out.dtype == np.int16
    assert out.shape[0] == (signal.shape[0] // s.frame_samples) * s.frame_samples
    # Compare past the codec's start-up, allowing for its look-ahead delay. A speech codec keeps
    # the sound, not the waveform, so the bar is a loose one.
    skip = rate // 5
    best = max(
        float(np.corrcoef(out[lag + skip :], signal[skip : out.shape[0] - lag])[0, 1])
        for lag in range(0, rate // 100)
    )
    assert best > 0.6
    assert 0.5 < rms(out[skip:]) / rms(signal[skip:]) < 2.0


@pytest.mark.parametrize("stereo", [False, True])
@pytest.mark.parametrize("encoded_rate", [8000, 16000, 48000])
@pytest.mark.parametrize("output_rate", [16000, 48000])
def test_decodes_any_rate_and_channel_count(
    stereo: bool, encoded_rate: int, output_rate: int
) -> None:
    channels = 2 if stereo else 1
    enc = opuslib.Encoder(encoded_rate, channels, opuslib.APPLICATION_AUDIO)
    n = encoded_rate // 50
    mono = speech_like(encoded_rate, 0.02)
    pcm = np.repeat(mono, channels) if stereo else mono
    packet = enc.encode(pcm.tobytes(), n)
    out = Decoder(output_rate).decode(packet)
    assert out.dtype == np.int16
    assert out.ndim == 1
    assert out.shape[0] == output_rate // 50


def test_stereo_decoder_mixes_down_to_mono() -> None:
    enc = opuslib.Encoder(48000, 2, opuslib.APPLICATION_AUDIO)
    mono = speech_like(48000, 0.2)
    dec = Decoder(48000, channels=2)
    outs = [dec.decode(enc.encode(np.repeat(f, 2).tobytes(), 960)) for f in frames(mono, 960)]
    assert all(o.shape == (960,) for o in outs)
    assert rms(np.concatenate(outs)) > 1000


def test_decoder_rejects_bad_channel_count() -> None:
    with pytest.raises(AudioConfigError, match="channels"):
        Decoder(48000, channels=3)


@pytest.mark.parametrize(
    "garbage", [b"", b"\x03", b"garbage!", b"\xff" * 8, b"\x7f\xff\xff\xff\xff"]
)
def test_malformed_packet_raises_codec_error_and_decoder_survives(garbage: bytes) -> None:
    s = OpusSettings()
    enc, dec = Encoder(s), Decoder(48000)
    packets = [enc.encode(f) for f in frames(speech_like(48000, 0.1), 960)]
    dec.decode(packets[0])
    with pytest.raises(CodecError):
        dec.decode(garbage)
    with pytest.raises(CodecError):
        dec.decode_fec(garbage, 960)
    assert dec.decode(packets[1]).shape == (960,)


def test_conceal_continues_the_signal() -> None:
    enc, dec = Encoder(), Decoder(48000)
    for f in frames(speech_like(48000, 0.3), 960):
        dec.decode(enc.encode(f))
    plc = dec.conceal(960)
    assert plc.shape == (960,)
    assert rms(plc) > 100  # PLC extrapolates the voice, it is not silence
    assert dec.conceal(480).shape == (480,)


@pytest.mark.parametrize("samples", [0, -1, 48000 * 125 // 1000])
def test_conceal_rejects_impossible_lengths(samples: int) -> None:
    with pytest.raises(CodecError):
        Decoder(48000).conceal(samples)


def test_fec_recovers_a_lost_packet_better_than_plc() -> None:
    # libopus 1.3 adds FEC data only when the bitrate leaves room for it at the expected loss
    # (16 kHz at 24 kbit/s with 20 % expected loss does; 48 kHz at 24 kbit/s with 5 % does not),
    # and only to frames with enough speech activity in them.
    s = OpusSettings(sample_rate=16000, bitrate=24000, expected_loss_percent=20)
    enc = Encoder(s)
    packets = [enc.encode(f) for f in frames(speech_like(16000, 1.0), s.frame_samples)]
    n = s.frame_samples
    fec_error = plc_error = 0.0
    recovered_differently = tried = 0
    for lost in range(5, len(packets) - 1, 3):
        reference, with_fec, with_plc = Decoder(16000), Decoder(16000), Decoder(16000)
        for p in packets[:lost]:
            for d in (reference, with_fec, with_plc):
                d.decode(p)
        truth = reference.decode(packets[lost]).astype(np.float64)
        recovered = with_fec.decode_fec(packets[lost + 1], n)
        concealed = with_plc.conceal(n)
        assert recovered.shape == concealed.shape == (n,)
        tried += 1
        recovered_differently += not np.array_equal(recovered, concealed)
        fec_error += rms(recovered - truth)
        plc_error += rms(concealed - truth)
        # The next packet itself still decodes normally afterwards.
        assert with_fec.decode(packets[lost + 1]).shape == (n,)
    assert recovered_differently > tried // 2
    assert fec_error < 0.7 * plc_error


def test_fec_without_fec_data_falls_back_to_concealment() -> None:
    enc = Encoder(OpusSettings(fec=False))
    packets = [enc.encode(f) for f in frames(speech_like(48000, 0.3), 960)]
    a, b = Decoder(48000), Decoder(48000)
    for p in packets[:5]:
        a.decode(p)
        b.decode(p)
    assert np.array_equal(a.decode_fec(packets[6], 960), b.conceal(960))


# --------------------------------------------------------------------------- resampling


@pytest.mark.parametrize(
    ("output", "decode"),
    [(8000, 8000), (11025, 12000), (22050, 24000), (32000, 48000), (44100, 48000), (96000, 48000)],
)
def test_decode_rate_for(output: int, decode: int) -> None:
    assert decode_rate_for(output) == decode


def test_decoder_at_44100_gives_882_samples_per_20_ms() -> None:
    enc, dec = Encoder(), Decoder(44100)
    assert dec.decode_rate == 48000
    packets = [enc.encode(f) for f in frames(speech_like(48000, 0.2), 960)]
    lengths = [dec.decode(p).shape[0] for p in packets[:-2]]
    lengths.append(dec.decode_fec(packets[-1], 882).shape[0])
    lengths.append(dec.conceal(882).shape[0])
    assert lengths == [882] * len(lengths)


# --------------------------------------------------------------------------- copy=False


def test_decode_without_copy_is_a_view_the_next_call_reuses() -> None:
    enc = Encoder()
    packets = [enc.encode(f) for f in frames(speech_like(48000, 0.2), 960)]
    owned, viewing = Decoder(48000), Decoder(48000)
    first = viewing.decode(packets[0], copy=False)
    assert np.array_equal(first, owned.decode(packets[0]))
    kept = first.copy()
    second = viewing.decode(packets[1], copy=False)
    assert np.shares_memory(first, second)  # the decoder's own buffer, overwritten
    assert np.array_equal(second, owned.decode(packets[1]))
    assert not np.array_equal(first, kept)
    # FEC recovery and concealment alike, and a copy is never shared.
    assert np.array_equal(
        viewing.decode_fec(packets[3], 960, copy=False), owned.decode_fec(packets[3], 960)
    )
    assert np.array_equal(viewing.conceal(480, copy=False), owned.conceal(480))
    a, b = viewing.decode(packets[4]), viewing.decode(packets[5])
    assert not np.shares_memory(a, b)


@pytest.mark.parametrize(("output_rate", "channels"), [(44100, 1), (48000, 2)])
def test_decode_without_copy_when_converting_gives_new_arrays(
    output_rate: int, channels: int
) -> None:
    enc = opuslib.Encoder(48000, channels, opuslib.APPLICATION_AUDIO)
    mono = speech_like(48000, 0.06)
    dec = Decoder(output_rate, channels=channels)
    outs = [
        dec.decode(enc.encode(np.repeat(f, channels).tobytes(), 960), copy=False)
        for f in frames(mono, 960)
    ]
    assert not np.shares_memory(outs[0], outs[1])
