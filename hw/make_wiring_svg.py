"""Draw hw/wiring.svg: the 40-pin header with the default wiring (board profile generic-pi).

    .venv/bin/python hw/make_wiring_svg.py > hw/wiring.svg

The picture comes from the same table the installer writes into a new config, so the two cannot
disagree (tests/deploy/test_wiring_svg.py checks that the committed file is this output).
"""

from __future__ import annotations

import sys
from xml.sax.saxutils import escape

from pttd.radio.boards import HEADER, load_profile

PROFILE = "generic-pi"

WIDTH = 980
ROW = 30
TOP = 134
PIN_X = (430, 470)  # odd pins (left column), even pins (right column)
RADIUS = 9

COLOURS = {
    "button": "#1f6fb2",
    "led": "#c77800",
    "console": "#7b3fa0",
    "3V3": "#e06c00",
    "5V": "#c62828",
    "GND": "#222222",
    "reserved": "#9e9e9e",
    "gpio": "#ffffff",
}

FUNCTION_TEXT = {
    "ptt": ("PTT button", "button"),
    "emergency": ("emergency button (optional)", "button"),
    "room_up": ("room up button (optional)", "button"),
    "room_down": ("room down button (optional)", "button"),
    "volume_up": ("volume up button (optional)", "button"),
    "volume_down": ("volume down button (optional)", "button"),
    "online_led": ("online LED", "led"),
    "transmit_led": ("transmit LED", "led"),
    "receive_led": ("receive LED", "led"),
    "error_led": ("error LED", "led"),
}

CONSOLE = {
    8: ("console TX → adapter RX", "console"),
    10: ("console RX ← adapter TX", "console"),
    6: ("console GND → adapter GND", "console"),
}
GROUND_FOR = {  # the ground pins the wiring uses, next to what they serve
    9: "GND for the PTT button",
    14: "GND for the buttons",
    39: "GND for the LEDs",
}


def labels() -> dict[int, tuple[str, str]]:
    """Physical pin -> (text, kind) for every pin the default wiring uses."""
    profile = load_profile(PROFILE)
    physical = {gpio: pin for pin, gpio in HEADER.items() if isinstance(gpio, int)}
    out: dict[int, tuple[str, str]] = {}
    for function, gpio in profile.defaults.items():
        text, kind = FUNCTION_TEXT[function]
        out[physical[gpio]] = (f"GPIO{gpio} · {text}", kind)
    for pin, (text, kind) in CONSOLE.items():
        name = HEADER[pin]
        out[pin] = (f"{'GPIO' + str(name) if isinstance(name, int) else name} · {text}", kind)
    for pin, text in GROUND_FOR.items():
        out[pin] = (f"GND · {text}", "GND")
    return out


def reserved() -> dict[int, str]:
    """Physical pin -> why to keep off it (HAT EEPROM, I2C, the I2S audio HATs use)."""
    physical = {gpio: pin for pin, gpio in HEADER.items() if isinstance(gpio, int)}
    out = {physical[g]: "HAT EEPROM" for g in (0, 1)}
    out |= {physical[g]: "I2C" for g in (2, 3)}
    out |= {physical[g]: "I2S (audio HATs)" for g in (18, 19, 20, 21)}
    return out


def svg() -> str:
    used = labels()
    keep_off = reserved()
    height = TOP + 20 * ROW + 200
    out: list[str] = []
    add = out.append
    add(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">'
    )
    add("<title>pttd default wiring on the Raspberry Pi 40-pin header</title>")
    add(f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>')
    add(
        '<text x="24" y="38" font-size="22" font-weight="bold">'
        "pttd: default wiring on the 40-pin header</text>"
    )
    for i, text in enumerate(
        (
            f"Board profile {PROFILE} (Pi 3, 4, Zero 2 W, 5). The header seen from above: pin 1 "
            "(square, as its pad is) at the top,",
            "odd pins in the row nearer the middle of the board. The config names pins by BCM GPIO "
            "number ([[ptt]] pin, [buttons], [leds]);",
            "`pttd doctor` checks them against the board profile.",
        )
    ):
        add(f'<text x="24" y="{60 + i * 18}" font-size="13" fill="#444">{escape(text)}</text>')
    # the header
    x0, x1 = PIN_X
    add(
        f'<rect x="{x0 - 22}" y="{TOP - 22}" width="{x1 - x0 + 44}" height="{20 * ROW + 14}" '
        'rx="6" fill="#2e4d2e" stroke="#1b2e1b" stroke-width="2"/>'
    )
    for pin in range(1, 41):
        row, col = (pin - 1) // 2, (pin - 1) % 2
        cx, cy = PIN_X[col], TOP + row * ROW
        name = HEADER[pin]
        kind = used.get(pin, ("", ""))[1]
        if isinstance(name, str):
            fill = COLOURS[name]
        elif pin in keep_off:
            fill = COLOURS["reserved"]
        elif kind in ("button", "led", "console"):
            fill = COLOURS[kind]
        else:
            fill = COLOURS["gpio"]
        if pin == 1:
            add(
                f'<rect x="{cx - RADIUS}" y="{cy - RADIUS}" width="{2 * RADIUS}" '
                f'height="{2 * RADIUS}" fill="{fill}" stroke="#000" stroke-width="1.5"/>'
            )
        else:
            add(
                f'<circle cx="{cx}" cy="{cy}" r="{RADIUS}" fill="{fill}" stroke="#000" '
                'stroke-width="1.5"/>'
            )
        # the pin number on the pin, the name beside the header
        dark = fill not in (COLOURS["gpio"], COLOURS["reserved"])
        add(
            f'<text x="{cx}" y="{cy + 3.5}" font-size="9.5" font-weight="bold" '
            f'fill="{"#fff" if dark else "#000"}" text-anchor="middle">{pin}</text>'
        )
        side = -1 if col == 0 else 1
        short = f"GPIO{name}" if isinstance(name, int) else name
        if pin in keep_off and pin not in used:
            short += f" · {keep_off[pin]}"
        label_x = cx + side * 36
        anchor = "end" if col == 0 else "start"
        if pin in used:
            text, k = used[pin]
            colour = COLOURS.get(k, "#000")
            add(
                f'<line x1="{cx + side * (RADIUS + 2)}" y1="{cy}" x2="{label_x - side * 6}" '
                f'y2="{cy}" stroke="{colour}" stroke-width="2"/>'
            )
            add(
                f'<text x="{label_x}" y="{cy + 5}" font-size="14" font-weight="bold" '
                f'fill="{colour}" text-anchor="{anchor}">{escape(text)}</text>'
            )
        else:
            add(
                f'<text x="{label_x}" y="{cy + 4}" font-size="12" fill="#777" '
                f'text-anchor="{anchor}">{escape(short)}</text>'
            )
    # legend and notes
    y = TOP + 20 * ROW + 30
    legend = [
        ("button", "button: between the pin and GND (internal pull-up; pressed = low)"),
        ("led", "LED: pin → 330 Ω–1 kΩ resistor → LED anode, cathode → GND"),
        ("console", "serial console: a 3.3 V USB-serial adapter, TX↔RX crossed, 115200 8N1"),
        ("reserved", "keep off: HAT EEPROM (0, 1), I2C (2, 3), I2S on audio HATs (18–21)"),
    ]
    for i, (kind, text) in enumerate(legend):
        ly = y + i * 24
        add(f'<circle cx="36" cy="{ly}" r="8" fill="{COLOURS[kind]}" stroke="#000"/>')
        add(f'<text x="54" y="{ly + 5}" font-size="14">{escape(text)}</text>')
    notes = [
        "Other boards move pins: on the ReSpeaker 2-Mics HAT the PTT is the HAT's own button "
        "(GPIO17) and the transmit",
        "and receive LEDs go on its Grove port (GPIO12, 13). Each board's pins: "
        "device/pttd/hw_profiles/*.toml.",
    ]
    for i, text in enumerate(notes):
        add(
            f'<text x="24" y="{y + 4 * 24 + 14 + i * 18}" font-size="13" fill="#444">'
            f"{escape(text)}</text>"
        )
    add("</svg>")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(svg())
