"""Child process for the real-PortAudio tests of test_sounddevice_io.py: ``alsa_child.py CMD …``.

PortAudio initialises ALSA once per process, with the configuration ALSA_CONFIG_PATH names at that
moment; so each test runs its own child with its own test configuration. The child prints one
JSON object on stdout; samples go through .npy files.

    devices                       list the devices and try a set of device specs
    capture N OUT.npy             capture N frames from "PTTD_Capture", then close
    open-gone INFILE              choose "pttd_capture", delete INFILE, then open: must fail
    playback REF.npy [FAIL_AT]    play REF (then silence) to "pttd_playback"; with FAIL_AT,
                                  the pull raises on that call (0-based)
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

import numpy as np

from pttd.errors import PttdError
from pttd.radio.audio import Pcm
from pttd.radio.audio.capture import SoundDeviceInput
from pttd.radio.audio.devices import list_devices, select_input_device, select_output_device
from pttd.radio.audio.playback import SoundDeviceOutput

RATE = 48000
FRAME = 960


def devices() -> dict[str, Any]:
    out: dict[str, Any] = {"devices": [d.to_json() for d in list_devices()]}
    tries: dict[str, Any] = {
        "input CAPTURE": lambda: select_input_device("CAPTURE", sample_rate=RATE),
        "output Pttd_Play": lambda: select_output_device("Pttd_Play", sample_rate=RATE),
        "input index": lambda: select_input_device(out["input CAPTURE"]["index"], sample_rate=RATE),
        "input index str": lambda: select_input_device(
            str(out["input CAPTURE"]["index"]), sample_rate=RATE
        ),
        "input pttd_": lambda: select_input_device("pttd_", sample_rate=RATE),
        "input playback": lambda: select_input_device("pttd_playback", sample_rate=RATE),
        "output capture": lambda: select_output_device("pttd_capture", sample_rate=RATE),
        "input nosuch": lambda: select_input_device("no such mic", sample_rate=RATE),
        "output 99": lambda: select_output_device(99, sample_rate=RATE),
        "input 1 MHz": lambda: select_input_device("pttd_capture", sample_rate=1_000_000),
    }
    for name, attempt in tries.items():
        try:
            out[name] = attempt().to_json()
        except PttdError as exc:
            out[name] = {"error": type(exc).__name__, "message": str(exc)}
    return out


async def capture(n: int, path: str) -> dict[str, Any]:
    source = SoundDeviceInput("PTTD_Capture", sample_rate=RATE, frame_samples=FRAME)
    frames: list[Pcm] = []
    times: list[float] = []
    enough = asyncio.Event()

    def deliver(frame: Pcm, t: float) -> None:
        frames.append(frame)
        times.append(t)
        if len(frames) >= n:
            enough.set()

    opened = time.monotonic()
    source.open(deliver)
    was_open = source.is_open
    await asyncio.wait_for(enough.wait(), 10)
    source.close()
    closed = time.monotonic()
    at_close = len(frames)
    # The file plugin is not paced: the callback ran flat out, so posted frames were queued
    # when close() returned (the stream stopped: no callback runs after it); none of them may
    # arrive once the loop has run them.
    await asyncio.sleep(0)
    np.save(path, np.concatenate(frames))
    return {
        "was_open": was_open,
        "is_open": source.is_open,
        "at_close": at_close,
        "after_close": len(frames) - at_close,
        "shapes": sorted({f.shape[0] for f in frames}),
        "dtypes": sorted({str(f.dtype) for f in frames}),
        "times_sorted": times == sorted(times),
        "first_time_after_open": times[0] - opened,
        "last_time_before_close": closed - times[-1],
        "overflows": source.overflows,
        "delivered": source.frames_delivered,
    }


async def open_gone(infile: str) -> dict[str, Any]:
    source = SoundDeviceInput("pttd_capture", sample_rate=RATE, frame_samples=FRAME)
    os.remove(infile)  # the device goes away between start-up and the button press
    try:
        source.open(lambda frame, t: None)
    except PttdError as exc:
        return {"error": type(exc).__name__, "message": str(exc), "is_open": source.is_open}
    source.close()
    return {"error": None}


async def playback(ref_path: str, fail_at: int | None) -> dict[str, Any]:
    ref = np.load(ref_path)
    sink = SoundDeviceOutput("pttd_playback", sample_rate=RATE, frame_samples=FRAME)
    pos = 0
    calls = 0
    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    def pull(n: int) -> Pcm:  # on PortAudio's thread
        nonlocal pos, calls
        calls += 1
        if calls - 1 == fail_at:
            pos += n
            raise RuntimeError("pull failed on purpose")
        block = np.zeros(n, dtype=np.int16)
        part = ref[pos : pos + n]
        block[: len(part)] = part
        pos += n
        if pos >= len(ref) + 4 * n:
            loop.call_soon_threadsafe(done.set)
        return block

    sink.start(pull)
    running = sink.is_running
    await asyncio.wait_for(done.wait(), 10)
    sink.stop()
    return {
        "was_running": running,
        "is_running": sink.is_running,
        "pull_errors": sink.pull_errors,
        "blocks": sink.blocks,
        "underflows": sink.underflows,
    }


def main(argv: list[str]) -> int:
    cmd = argv[0]
    if cmd == "devices":
        result = devices()
    elif cmd == "capture":
        result = asyncio.run(capture(int(argv[1]), argv[2]))
    elif cmd == "open-gone":
        result = asyncio.run(open_gone(argv[1]))
    elif cmd == "playback":
        result = asyncio.run(playback(argv[1], int(argv[2]) if len(argv) > 2 else None))
    else:
        print(f"unknown command {cmd}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
