"""hw/wiring.svg is the picture of the default wiring the installer writes, and stays so."""

from __future__ import annotations

import importlib.util
import xml.etree.ElementTree as ET
from types import ModuleType

from deploy_helpers import REPO

from pttd.radio.boards import load_profile

SVG = REPO / "hw" / "wiring.svg"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_wiring_svg", REPO / "hw/make_wiring_svg.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_picture_is_the_generators_output() -> None:
    assert SVG.read_text() == generator().svg(), (
        "hw/wiring.svg is stale: .venv/bin/python hw/make_wiring_svg.py > hw/wiring.svg"
    )


def test_it_is_well_formed_and_labels_each_default_pin() -> None:
    root = ET.fromstring(SVG.read_text())
    texts = [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text")]
    for function, gpio in load_profile("generic-pi").defaults.items():
        words = function.replace("_led", " LED").replace("_", " ")
        words = "PTT button" if function == "ptt" else words
        assert any(t.startswith(f"GPIO{gpio} · ") and words in t for t in texts), function
    for needed in ("console TX", "console RX", "console GND"):
        assert any(needed in t for t in texts)
    assert any("I2S" in t for t in texts)
