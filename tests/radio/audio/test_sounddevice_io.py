"""The real PortAudio path, through ALSA, with no sound card: ALSA's ``file`` plugin stands in.

Each test writes an ALSA configuration into its tmp_path and runs a child process
(``alsa_child.py``) with ``ALSA_CONFIG_PATH`` set to ``<system alsa.conf>:<that file>``: ALSA
reads the files of the list in order, so the system's definitions (``null`` and the rest) stay
and ours are added. ``ALSA_CONFIG_PATH`` alone would replace alsa.conf and leave no ``null`` plugin
to write to. (Setting HOME and writing ``$HOME/.asoundrc`` works too, since alsa.conf loads it;
the explicit list does not depend on that hook.) HOME is pointed at tmp_path as well, so that a
developer's own ``~/.asoundrc`` stays out of it. A child per test, because PortAudio initialises
ALSA once per process.

The two test devices:

* ``pttd_capture``: an ``asym`` pcm whose capture side is a ``file`` plugin over ``null`` with
  ``infile`` a raw S16_LE mono file. The ``file`` plugin reads ``infile`` (only ``format "raw"``
  is supported for reading) with no header and no conversion, in whatever format and rate the
  stream was opened with, and ``null`` takes any format, rate and channel count. So the stream
  asks for int16 mono (at any rate, 48 kHz here) and gets the file's samples exactly; no format
  or rate setting is needed in the pcm. Past the end of ``infile`` the plugin delivers stale
  buffer contents (not silence), so only the file's length is compared.
* ``pttd_playback``: an ``asym`` pcm whose playback side is a ``file`` plugin over ``null``
  writing raw samples to ``out.raw`` (truncated when the stream opens).

``asym`` gives each device one direction only, so PortAudio reports 0 output channels for the
capture device and 0 input channels for the playback device (a bare ``file``/``null`` pcm shows
128 of both). Each has a ``hint { show on description "…" }`` block: PortAudio lists an ALSA pcm
of the configuration only when it has one. Neither is paced in real time (``null`` consumes and
produces as fast as asked), which is fine for exact-sample checks and means PortAudio's callback
runs flat out: the capture child closes with frames still queued for the loop, which is exactly
what the no-frame-after-close guard is for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ALSA_CONF = Path("/usr/share/alsa/alsa.conf")
CHILD = Path(__file__).with_name("alsa_child.py")
RATE = 48000
FRAME = 960
SIGNAL_SAMPLES = RATE  # one second of known signal


def _portaudio_missing() -> bool:
    probe = subprocess.run(
        [sys.executable, "-c", "import sounddevice"], capture_output=True, check=False
    )
    return probe.returncode != 0


pytestmark = [
    pytest.mark.skipif(not ALSA_CONF.exists(), reason=f"no {ALSA_CONF} (ALSA not installed)"),
    pytest.mark.skipif(_portaudio_missing(), reason="PortAudio (libportaudio2) not installed"),
]


def known_signal(n: int = SIGNAL_SAMPLES) -> np.ndarray[Any, np.dtype[np.int16]]:
    """Seeded noise: no two windows of it look alike, so a match found is the right one."""
    return np.random.default_rng(20240601).integers(-20000, 20000, n, dtype=np.int16)


class AlsaTest:
    """A test ALSA configuration in ``root`` and the environment that selects it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.infile = root / "in.raw"
        self.outfile = root / "out.raw"
        self.conf = root / "asound-test.conf"
        self.signal = known_signal()
        self.signal.astype("<i2").tofile(self.infile)
        self.conf.write_text(
            f"""
pcm.pttd_capture {{
    type asym
    capture.pcm {{
        type file
        slave.pcm "null"
        file "/dev/null"
        infile "{self.infile}"
        format "raw"
    }}
    hint {{ show on description "pttd test capture" }}
}}
pcm.pttd_playback {{
    type asym
    playback.pcm {{
        type file
        slave.pcm "null"
        file "{self.outfile}"
        format "raw"
    }}
    hint {{ show on description "pttd test playback" }}
}}
"""
        )
        self.env = {
            **os.environ,
            "ALSA_CONFIG_PATH": f"{ALSA_CONF}:{self.conf}",
            "HOME": str(root),
            "XDG_CONFIG_HOME": str(root / ".config"),
        }

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args,
            env=self.env,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def child(self, *args: str) -> dict[str, Any]:
        proc = self.run(sys.executable, str(CHILD), *args)
        assert proc.returncode == 0, proc.stderr
        result: dict[str, Any] = json.loads(proc.stdout)
        return result


@pytest.fixture
def alsa(tmp_path: Path) -> AlsaTest:
    return AlsaTest(tmp_path)


def find(haystack: np.ndarray[Any, Any], needle: np.ndarray[Any, Any]) -> int | None:
    """Index where ``needle`` occurs in ``haystack`` exactly, or None."""
    head = needle[:32]
    windows = np.lib.stride_tricks.sliding_window_view(haystack, len(head))
    for i in np.flatnonzero((windows == head).all(axis=1)):
        if np.array_equal(haystack[i : i + len(needle)], needle):
            return int(i)
    return None


# --- devices ----------------------------------------------------------------------------------


@pytest.fixture
def devices(alsa: AlsaTest) -> dict[str, Any]:
    return alsa.child("devices")


def test_lists_the_test_devices(devices: dict[str, Any]) -> None:
    by_name = {d["name"]: d for d in devices["devices"]}
    capture, playback = by_name["pttd_capture"], by_name["pttd_playback"]
    assert capture["hostapi"] == "ALSA"
    assert capture["max_input_channels"] > 0
    assert capture["max_output_channels"] == 0
    assert playback["max_output_channels"] > 0
    assert playback["max_input_channels"] == 0
    assert capture["default_samplerate"] > 0


def test_finds_devices_by_name_substring_and_index(devices: dict[str, Any]) -> None:
    assert devices["input CAPTURE"]["name"] == "pttd_capture"
    assert devices["output Pttd_Play"]["name"] == "pttd_playback"
    assert devices["input index"] == devices["input CAPTURE"]
    assert devices["input index str"] == devices["input CAPTURE"]
    # "pttd_" matches both, but only one of them has input channels.
    assert devices["input pttd_"]["name"] == "pttd_capture"


def test_wrong_name_lists_what_exists(devices: dict[str, Any]) -> None:
    err = devices["input nosuch"]
    assert err["error"] == "AudioDeviceError"
    assert "no audio device matches 'no such mic'" in err["message"]
    assert "pttd_capture" in err["message"]  # the input devices there are
    assert "pttd_playback" not in err["message"]  # not an input device


def test_wrong_index_lists_what_exists(devices: dict[str, Any]) -> None:
    err = devices["output 99"]
    assert err["error"] == "AudioDeviceError"
    assert "no audio device #99" in err["message"]
    assert "pttd_playback" in err["message"]


def test_device_without_channels_in_that_direction(devices: dict[str, Any]) -> None:
    err = devices["input playback"]
    assert err["error"] == "AudioDeviceError"
    assert "no input channels" in err["message"]
    err = devices["output capture"]
    assert err["error"] == "AudioDeviceError"
    assert "no output channels" in err["message"]


def test_unsupported_sample_rate(devices: dict[str, Any]) -> None:
    err = devices["input 1 MHz"]
    assert err["error"] == "AudioDeviceError"
    assert "1000000 Hz" in err["message"]
    assert "pttd_capture" in err["message"]


# --- capture ----------------------------------------------------------------------------------


def test_capture_delivers_the_file_samples_exactly(alsa: AlsaTest) -> None:
    frames = 2 * SIGNAL_SAMPLES // FRAME  # well past the end of the file
    out = alsa.root / "captured.npy"
    r = alsa.child("capture", str(frames), str(out))
    assert r["was_open"] and not r["is_open"]
    assert r["shapes"] == [FRAME] and r["dtypes"] == ["int16"]
    assert r["at_close"] >= frames
    assert r["delivered"] == r["at_close"]
    assert r["after_close"] == 0
    assert r["times_sorted"]
    # Each frame's time is that of its first sample: at least a frame before it was delivered,
    # and within the open/close window give or take one frame period.
    assert r["first_time_after_open"] > -FRAME / RATE - 0.05
    assert r["last_time_before_close"] >= FRAME / RATE * 0.99
    captured = np.load(out)
    start = find(captured, alsa.signal)
    assert start is not None, "the file's samples were not captured intact"
    assert start < 4 * FRAME  # 0 here; a host API may lead with a little silence


def test_open_failure_is_a_clear_error(alsa: AlsaTest) -> None:
    r = alsa.child("open-gone", str(alsa.infile))
    assert r["error"] == "AudioStreamError"
    assert "cannot open input device #" in r["message"] and "pttd_capture" in r["message"]
    assert r["is_open"] is False


# --- playback ---------------------------------------------------------------------------------


def test_playback_writes_the_pulled_samples_exactly(alsa: AlsaTest) -> None:
    ref = alsa.root / "ref.npy"
    np.save(ref, alsa.signal)
    r = alsa.child("playback", str(ref))
    assert r["was_running"] and not r["is_running"]
    assert r["pull_errors"] == 0
    assert r["blocks"] >= SIGNAL_SAMPLES // FRAME
    written = np.fromfile(alsa.outfile, dtype="<i2")
    start = find(written, alsa.signal)
    assert start is not None, "the pulled samples were not played intact"
    assert not written[:start].any()  # PortAudio primes the device with silence first


def test_playback_plays_silence_when_pull_fails(alsa: AlsaTest) -> None:
    ref = alsa.root / "ref.npy"
    np.save(ref, alsa.signal)
    fail_at = 3
    r = alsa.child("playback", str(ref), str(fail_at))
    assert r["pull_errors"] == 1
    assert not r["is_running"]
    written = np.fromfile(alsa.outfile, dtype="<i2")
    # Blocks 0..2 and 4.. arrive intact; block 3 is silence in their place.
    before, failed, after = (
        alsa.signal[: fail_at * FRAME],
        alsa.signal[fail_at * FRAME : (fail_at + 1) * FRAME],
        alsa.signal[(fail_at + 1) * FRAME :],
    )
    start = find(written, before)
    assert start is not None
    gap = written[start + len(before) : start + len(before) + FRAME]
    assert not gap.any() and failed.any()
    assert np.array_equal(written[start + len(before) + FRAME :][: len(after)], after)


# --- pttd audio list --------------------------------------------------------------------------


def test_cli_audio_list_json(alsa: AlsaTest) -> None:
    proc = alsa.run(sys.executable, "-m", "pttd.cli", "audio", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    listed = {d["name"]: d for d in json.loads(proc.stdout)["devices"]}
    assert listed["pttd_capture"]["max_input_channels"] > 0
    assert listed["pttd_playback"]["max_output_channels"] > 0
    assert set(listed["pttd_capture"]) == {
        "index",
        "name",
        "hostapi",
        "max_input_channels",
        "max_output_channels",
        "default_samplerate",
        "default_input",
        "default_output",
    }
    assert sum(d["default_input"] for d in listed.values()) <= 1


def test_cli_audio_list_table(alsa: AlsaTest) -> None:
    proc = alsa.run(sys.executable, "-m", "pttd.cli", "audio", "list")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["#", "name", "host", "API", "in", "out", "rate", "default"]
    capture = next(line for line in lines if "pttd_capture" in line).split()
    playback = next(line for line in lines if "pttd_playback" in line).split()
    # index, name, host API, in, out, rate[, default]
    assert capture[1:3] == ["pttd_capture", "ALSA"] and int(capture[3]) > 0 and capture[4] == "0"
    assert playback[1:4] == ["pttd_playback", "ALSA", "0"] and int(playback[4]) > 0
