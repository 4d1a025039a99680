"""``pttd bench latency``: sane figures from the quick run (never checked against the targets:
each verdict only has to agree with its figure), and the clipping measure on signals whose
answers are known."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bench_checks import finite, positive, verdict_agrees

from pttd.bench.browser import click_train
from pttd.bench.latency import (
    IMPULSE_AT_S,
    RATE,
    SYSTEM_BUS,
    LatencySettings,
    Stamped,
    ble_presses,
    clipped_ms,
    codec_reference,
    format_report,
    import_floor,
    imported_modules,
    is_pttd,
    mic_signal,
    system_bus,
)
from pttd.bench.server import BenchError
from pttd.radio.config import AudioConfig
from pttd.radio.inputs import Button, ButtonEdge, InputGone
from pttd.sim.inputs import SimulatedButton

DISTRIBUTIONS = ("access_time_ms", "mouth_to_ear_ms", "late_entry_ms")

Run = tuple[dict[str, Any], Path]  # the session's `pttd bench --quick` (conftest.py)


def test_distributions_are_sane(quick_run: Run) -> None:
    report = quick_run[0]["latency"]
    settings = report["settings"]
    counts = {
        "access_time_ms": settings["presses"],
        "mouth_to_ear_ms": settings["presses"],
        "late_entry_ms": settings["late_entries"],
    }
    for key in DISTRIBUTIONS:
        d = report[key]
        assert positive(d["p50"]) and positive(d["p95"]), (key, d)
        assert d["min"] <= d["p50"] <= d["p95"] <= d["max"], (key, d)
        assert d["n"] == len(d["samples"]) == counts[key]
    # The impulse cannot arrive before it has been captured, encoded and sent: at least a frame.
    assert report["mouth_to_ear_ms"]["min"] >= settings["frame_ms"]


def test_the_encrypted_room_is_measured_the_same_way(quick_run: Run) -> None:
    report = quick_run[0]["latency"]
    encrypted = report["encrypted"]
    assert encrypted["room"] and encrypted["lost"] == 0 and encrypted["packets_unopened"] == 0
    assert encrypted["clipped_ms"] >= 0
    for key in ("access_time_ms", "mouth_to_ear_ms"):
        d = encrypted[key]
        assert positive(d["p50"]) and positive(d["p95"]), (key, d)
        assert d["min"] <= d["p50"] <= d["p95"] <= d["max"], (key, d)
        assert d["n"] == len(d["samples"]) == report["settings"]["presses"]
    assert encrypted["mouth_to_ear_ms"]["min"] >= report["settings"]["frame_ms"]
    delta = report["e2ee_delta_p95_ms"]
    assert set(delta) == {"access_time", "mouth_to_ear"}
    for key, value in delta.items():  # signed: encrypted less clear
        clear = report[f"{key}_ms"]["p95"]
        assert value == pytest.approx(encrypted[f"{key}_ms"]["p95"] - clear, abs=0.011), key


def test_the_ble_button_is_measured_beside_a_gpio_button(quick_run: Run) -> None:
    report = quick_run[0]["latency"]
    ble = report["ble"]
    presses = report["settings"]["presses"]
    assert ble["address"] and isinstance(ble["gpio_pin"], int)
    for key in ("access_time_ms", "gpio_access_time_ms", "edge_ms", "gpio_edge_ms"):
        d = ble[key]
        assert positive(d["p50"]) and positive(d["p95"]), (key, d)
        assert d["min"] <= d["p50"] <= d["p95"] <= d["max"], (key, d)
        assert d["n"] == len(d["samples"]) == presses, (key, d)
    # Each access runs from the instant before the press was sent, past the edge's stamp.
    for access, edge in (("access_time_ms", "edge_ms"), ("gpio_access_time_ms", "gpio_edge_ms")):
        assert all(
            a > e for a, e in zip(ble[access]["samples"], ble[edge]["samples"], strict=True)
        ), access
    assert ble["battery"] == 87 and ble["connects"] == 1  # the stand-in's button, one link
    delta = ble["access_time_ms"]["p95"] - ble["gpio_access_time_ms"]["p95"]
    assert report["ble_delta_p95_ms"] == pytest.approx(delta, abs=0.011)  # signed: BLE less GPIO


def test_clipping_rss_and_loss(quick_run: Run) -> None:
    report = quick_run[0]["latency"]
    assert report["clipped_ms"] >= 0
    assert len(report["clipped_ms_per_press"]) == report["settings"]["presses"]
    assert report["lost"] == 0
    assert positive(report["device_rss_mb"]) and positive(report["import_floor_rss_mb"])
    assert report["device_peak_rss_mb"] >= report["device_rss_mb"]
    probe = report["rss_probe"]
    assert probe["packets_heard"] > 0  # the device process really transmitted
    # pttd's own share is the device's RSS less the floor's (each rounded to 0.1 MB first).
    own = report["device_rss_mb"] - report["import_floor_rss_mb"]
    assert report["device_own_rss_mb"] == probe["own_rss_mb"] == pytest.approx(own, abs=0.11)
    assert probe["modules_imported"] > 0 and probe["pttd_modules"] > 0
    assert not any(is_pttd(m) for m in probe["floor_import_failures"])


def test_targets_are_reported_beside_the_figures(quick_run: Run) -> None:
    report = quick_run[0]["latency"]
    targets, met = report["targets"], report["targets_met"]
    figures = {
        "access_time_p95_ms": report["access_time_ms"]["p95"],
        "mouth_to_ear_p95_ms": report["mouth_to_ear_ms"]["p95"],
        "late_entry_p95_ms": report["late_entry_ms"]["p95"],
        "clipped_ms": report["clipped_ms"],
        "device_own_rss_mb": report["device_own_rss_mb"],
        # |encrypted p95 - clear p95|: the verdict is on the size of the difference
        "access_time_e2ee_delta_p95_ms": abs(report["e2ee_delta_p95_ms"]["access_time"]),
        "mouth_to_ear_e2ee_delta_p95_ms": abs(report["e2ee_delta_p95_ms"]["mouth_to_ear"]),
        "access_time_ble_delta_p95_ms": abs(report["ble_delta_p95_ms"]),
        "browser_to_radio_p95_ms": report["web_console"]["browser_to_radio_ms"]["p95"],
        "radio_to_browser_p95_ms": report["web_console"]["radio_to_browser_ms"]["p95"],
    }
    assert set(targets) == set(met) == set(figures)
    for key, target in targets.items():
        assert finite(target) and target >= 0, (key, target)
        if figures[key] is None:  # not measured (no /proc): no verdict
            assert met[key] is None, key
        else:
            assert verdict_agrees(met[key], figures[key], target, at_most=True), key
    text = format_report(report)
    assert text.count("PASS") + text.count("FAIL") == len(targets)
    assert "import floor" in text and "pttd's own" in text and "encrypted" in text
    assert "BLE" in text and "GPIO" in text


def test_without_dbus_daemon_the_ble_run_says_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("pttd.sim.bluez.dbus_daemon", lambda: None)
    with pytest.raises(BenchError, match="dbus-daemon") as caught:
        asyncio.run(ble_presses(AudioConfig(), 1))
    assert "\n" not in str(caught.value)


def test_the_system_bus_is_set_for_the_block_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SYSTEM_BUS, raising=False)
    with system_bus("unix:path=/tmp/x"):
        assert os.environ[SYSTEM_BUS] == "unix:path=/tmp/x"
    assert SYSTEM_BUS not in os.environ
    monkeypatch.setenv(SYSTEM_BUS, "unix:path=/run/dbus/system_bus_socket")
    with pytest.raises(RuntimeError), system_bus("unix:path=/tmp/y"):
        raise RuntimeError
    assert os.environ[SYSTEM_BUS] == "unix:path=/run/dbus/system_bus_socket"


async def test_a_stamped_input_keeps_its_press_stamps_and_passes_everything_on() -> None:
    button = SimulatedButton("sim:x")
    stamped = Stamped(button)
    seen: list[ButtonEdge | InputGone] = []
    await stamped.start(seen.append)
    button.press()
    button.release()
    button.press(Button.EMERGENCY)
    button.vanish()
    for _ in range(3):
        await asyncio.sleep(0)
    await stamped.close()
    assert stamped.name == "sim:x"
    edges = [x for x in seen if isinstance(x, ButtonEdge)]
    assert [(e.button, e.pressed) for e in edges] == [
        (Button.PTT, True),
        (Button.PTT, False),
        (Button.EMERGENCY, True),
    ]
    assert isinstance(seen[-1], InputGone)
    assert stamped.presses == [edges[0].t]  # PTT presses only


IMPORTTIME = """\
import time: self [us] | cumulative | imported package
import time:       120 |        120 |   _io
import time:       300 |        900 | numpy
import time:        80 |         80 |     pttd.errors
import time:        40 |        120 |   pttd
import time:        20 |         20 | sitecustomize
WARNING pttd.radio.daemon: not an import line
"""


def test_the_device_processs_imports_are_read_from_importtime() -> None:
    names = imported_modules(IMPORTTIME)
    assert names == ["_io", "numpy", "pttd.errors", "pttd", "sitecustomize"]
    assert [n for n in names if not is_pttd(n)] == ["_io", "numpy", "sitecustomize"]
    assert not is_pttd("pttdx") and is_pttd("pttd.bench.latency")


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/status")
def test_the_import_floor_is_a_bare_interpreter() -> None:
    rss_kb, peak_kb, failed = asyncio.run(
        import_floor(["json", "no_such_module_for_pttd"], dict(os.environ))
    )
    assert 0 < rss_kb <= peak_kb
    assert failed == ["no_such_module_for_pttd"]
    with pytest.raises(ValueError, match="pttd"):
        asyncio.run(import_floor(["json", "pttd.radio.daemon"], dict(os.environ)))


def test_quick_defaults_are_smaller() -> None:
    full = LatencySettings()
    assert full.presses == 20 and full.late_entries == 20


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return codec_reference(mic_signal(1.0), AudioConfig(), IMPULSE_AT_S + 0.1)


def test_nothing_is_clipped_from_the_codec_output_itself(reference: np.ndarray) -> None:
    heard = np.concatenate([np.zeros(777, np.int16), reference, np.zeros(960, np.int16)])
    assert clipped_ms(heard, reference) == 0


def test_a_lost_first_frame_is_clipped(reference: np.ndarray) -> None:
    heard = np.concatenate([np.zeros(777, np.int16), reference])
    heard[777 : 777 + 960 + 400] = 0  # the first packet (and then some) never played
    assert clipped_ms(heard, reference) >= 20


def test_the_signal_is_marker_impulse_tone() -> None:
    x = mic_signal(1.0)
    assert x.shape == (RATE,)
    assert x[:10].any() or x[10:50].any()  # the marker starts at the press
    at = round(IMPULSE_AT_S * RATE)
    assert x[at] > 0.8 * 32767 and np.abs(x[: at - 1]).max() < 0.2 * 32767


def test_the_web_console_is_measured_both_ways(quick_run: Run) -> None:
    report = quick_run[0]["latency"]
    web = report["web_console"]
    assert "skipped" not in web, web  # scripts/setup installs chromium; Playwright is a test extra
    for key in ("browser_to_radio_ms", "radio_to_browser_ms"):
        d = web[key]
        assert positive(d["p50"]) and d["min"] <= d["p50"] <= d["p95"] <= d["max"], (key, d)
        assert d["n"] == len(d["samples"]) == report["settings"]["presses"] == web["presses"]
        # A frame is captured and encoded before it is sent: at least 20 ms, and far less
        # than the 500 ms between the clicks the pairing of mouth and ear relies on.
        assert report["settings"]["frame_ms"] <= d["min"] and d["max"] < 500, (key, d)
        name = key.removesuffix("_ms") + "_p95_ms"
        assert report["targets_met"][name] == (d["p95"] <= report["targets"][name])
    assert web["browser"].startswith("chromium ")


def test_the_click_train_the_browser_hears() -> None:
    clicks = click_train(2.0)
    loud = np.flatnonzero(np.abs(clicks) > 0)
    starts = loud[np.insert(np.diff(loud) > 1, 0, True)]
    assert list(starts) == [12000, 36000, 60000, 84000]  # every 500 ms from 250 ms
    assert all(np.count_nonzero(clicks[s : s + 100]) == 48 for s in starts)  # 1 ms each
