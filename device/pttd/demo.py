"""``pttd demo``: the whole system on one machine, nothing to wire.

A room server runs in-process on loopback with a temporary database; two simulated devices pair
with it through the real pairing flow, into an end-to-end encrypted room (:data:`CREW`: a key
authority made on the fly approves each device by the fingerprint its console shows, and seals the
room key for it; the server relays SFrame packets it cannot open) and a clear one; device A is
keyed up with a speech sample on its simulated
microphone; device B plays what it hears into a simulated speaker. Then a short report, each
figure saying what it measures:

* ``ptt_held_s``: how long A held the PTT: the speech sample's length, then 0.2 s more;
* ``speech_sample_s``: the length of the speech sample (``pttd/data/speech.wav``);
* ``audio_sent_s``: the audio A sent, its packets times the frame length (A sends from the talk
  permit to the release, so a little less than it held the PTT);
* ``speech_span_s`` and ``heard_speech_span_s``: the speech from its first to its last audible
  sample (:data:`AUDIBLE` of the loudest), in the sample and in what B's speaker played. B's
  speaker plays nothing else (the tones are A's), so the two agree to within a frame or so when
  the whole speech came through; silence before and after is not counted in either;
* ``heard_rms``: the RMS level (int16 scale) of everything B's speaker played from the press on,
  silence included: above 100, it played something;
* ``access_time_ms``: A's press → talk permit; ``mouth_to_ear_ms``: the speech onset leaving A's
  microphone → leaving B's speaker; ``underruns``, ``concealed``, ``late``: B's jitter buffer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

import numpy as np

from pttd.cliargs import add_log_level
from pttd.errors import PttdError
from pttd.radio.audio import Pcm
from pttd.radio.config import AudioConfig
from pttd.redact import setup_logging
from pttd.sim.audio import read_wav, silence
from pttd.sim.loopback import ROOM, loopback

log = logging.getLogger(__name__)

CREW = "crew"  # the encrypted room the demo talks in (sorted first: the devices select it)
KEYS_WAIT_S = 10.0
TALK_TAIL_S = 0.2  # A holds the PTT this long after the speech sample ends
AUDIBLE = 0.02  # of the loudest sample: where speech starts and ends (-34 dB)


def speech_sample(sample_rate: int) -> Pcm:
    """The shipped speech sample (espeak-ng, 16 kHz) at ``sample_rate``."""
    with resources.as_file(resources.files("pttd") / "data" / "speech.wav") as path:
        return read_wav(path, sample_rate=sample_rate)


def onset(signal: Pcm, fraction: float = 0.1) -> int:
    """Index of the first sample above ``fraction`` of the signal's peak."""
    peak = int(np.max(np.abs(signal.astype(np.int32))))
    above = np.flatnonzero(np.abs(signal.astype(np.int32)) >= max(1, int(peak * fraction)))
    return int(above[0]) if above.size else 0


def speech_span(signal: Pcm, sample_rate: int, fraction: float = AUDIBLE) -> float:
    """Seconds from the first to the last sample at ``fraction`` of the loudest or above: the
    speech in ``signal``, without the silence around it. 0 for silence."""
    level = np.abs(signal.astype(np.int32))
    peak = int(level.max()) if level.size else 0
    if not peak:
        return 0.0
    above = np.flatnonzero(level >= max(1, round(peak * fraction)))
    return float(above[-1] - above[0] + 1) / sample_rate


async def run_demo(progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    rate = AudioConfig().sample_rate
    speech = speech_sample(rate)
    async with loopback() as bench:
        bench.add_encrypted_room(CREW)
        progress(
            f"room server on {bench.server.url}, rooms '{CREW}' (end-to-end encrypted), '{ROOM}'"
        )
        a = await bench.add_device("device-a", speech, rooms=(CREW, ROOM))
        b = await bench.add_device("device-b", silence(1.0, sample_rate=rate), rooms=(CREW, ROOM))
        await a.online()
        await b.online()
        progress("device-a and device-b paired with one-time codes and online")
        for sim in (a, b):
            await bench.approve(sim)
            progress(
                f"{sim.name} approved by the key authority: fingerprint {sim.device.fingerprint}"
            )
        async with asyncio.timeout(KEYS_WAIT_S):
            for sim in (a, b):
                await sim.device.until(lambda m: m.room == CREW and CREW not in m.locked)
        state = a.device.keyring.state(CREW) if a.device.keyring else "?"
        progress(f"both hold the room key of '{CREW}' ({state})")
        await asyncio.sleep(0.3)  # let the 'connected' tones play out
        b.speaker.clear()
        speech_s = len(speech) / rate
        talk = speech_s + TALK_TAIL_S
        progress(
            f"device-a: PTT pressed; holding it {talk:.2f} s (the {speech_s:.2f} s speech sample, "
            f"then {TALK_TAIL_S:g} s)"
        )
        a.button.press()
        await asyncio.sleep(talk)
        a.button.release()
        progress("device-a: PTT released")
        await asyncio.sleep(0.5)  # the tail drains from device-b's jitter buffer
        heard = b.speaker.recording()
        stats = b.device.mixer.stats
        # Mouth to ear: the speech onset leaving A's microphone vs leaving B's speaker.
        k = onset(speech)
        captured = [t for pos, t in a.mic.capture_times if pos <= k < pos + a.mic.frame_samples]
        t_mouth = captured[0] + (k % a.mic.frame_samples) / rate if captured else None
        peak = int(np.max(np.abs(speech.astype(np.int32))))
        t_ear = b.speaker.first_above(int(peak * 0.1))
        mouth_to_ear = (t_ear - t_mouth) * 1000 if t_ear and t_mouth else None
        access = a.device.counters.access_times
        sent, received = a.device.counters.packets_sent, b.device.counters.packets_received
        frame_s = a.mic.frame_samples / rate
        energy = float(np.sqrt(np.mean(heard.astype(np.float64) ** 2))) if heard.size else 0.0
        report: dict[str, Any] = {
            "ok": sent > 0
            and received == sent
            and mouth_to_ear is not None
            and energy > 100
            and b.device.counters.packets_unopened == 0,
            "server": bench.server.url,
            "packets_sent": sent,
            "packets_received": received,
            "access_time_ms": round(access[0] * 1000, 1) if access else None,
            "mouth_to_ear_ms": round(mouth_to_ear, 1) if mouth_to_ear is not None else None,
            "ptt_held_s": round(talk, 2),
            "speech_sample_s": round(speech_s, 2),
            "audio_sent_s": round(sent * frame_s, 2),
            "speech_span_s": round(speech_span(speech, rate), 2),
            "heard_speech_span_s": round(speech_span(heard, rate), 2),
            "heard_rms": round(energy, 1),
            "underruns": stats.underruns,
            "concealed": stats.concealed,
            "late": stats.late,
            "tones_a": [t.value for t in a.device.counters.tones],
            "room": CREW,
            "encrypted": True,
            "packets_unopened": b.device.counters.packets_unopened,
        }
    return report


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser("demo", help="two simulated devices talk through a local room server")
    demo.add_argument("--json", action="store_true", help="print one JSON object")
    add_log_level(demo, "WARNING")
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    started = time.monotonic()
    say: Callable[[str], None] = (lambda _: None) if args.json else (lambda s: print(f"  {s}"))
    if not args.json:
        print("pttd demo: everything simulated, nothing to wire")
    try:
        report = asyncio.run(run_demo(say))
    except (PttdError, TimeoutError) as exc:
        raise PttdError(f"demo failed: {exc}") from exc
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    if args.json:
        print(json.dumps(report))
    else:
        r = report
        print(
            f"  device-a sent {r['audio_sent_s']:.2f} s of audio ({r['packets_sent']} packets, "
            f"SFrame-encrypted in '{r['room']}'); device-b received {r['packets_received']} of "
            f"them and opened {r['packets_received'] - r['packets_unopened']}\n"
            f"  speech, first to last audible sample: {r['speech_span_s']:.2f} s in the sample, "
            f"{r['heard_speech_span_s']:.2f} s as device-b played it\n"
            f"  access time (press → talk permit): {r['access_time_ms']} ms\n"
            f"  mouth-to-ear latency (speech onset, device-a's microphone → device-b's speaker): "
            f"{r['mouth_to_ear_ms']} ms\n"
            f"  device-b's jitter buffer: {r['underruns']} underruns, {r['concealed']} concealed, "
            f"{r['late']} late\n"
            f"{'OK' if r['ok'] else 'FAILED'} in {r['elapsed_s']} s"
        )
    return 0 if report["ok"] else 1
