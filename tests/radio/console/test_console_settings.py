"""What ``config set`` builds on: single dotted keys, typed values, overrides checked like the
file, laid over the file at start; and the log buffer ``log`` reads."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pttd.errors import ConfigError
from pttd.radio.config import (
    Config,
    StateConfig,
    apply_overrides,
    format_value,
    get_value,
    parse_config,
    parse_value,
    settable_keys,
)
from pttd.radio.run import build_device, with_saved_settings
from pttd.radio.store import Store
from pttd.redact import LOG_BUFFER, LogBuffer, setup_logging


def test_settable_keys_cover_every_section_but_ptt_and_the_state_dir():
    keys = settable_keys()
    sections = {key.split(".")[0] for key in keys}
    assert sections == {
        "device",
        "server",
        "audio",
        "talk",
        "buttons",
        "leds",
        "console",
        "log",
        "bluetooth",
    }
    assert "state.dir" not in keys and "talk.mode" in keys and "audio.volume" in keys
    assert keys["audio.volume"].doc.startswith("initial volume")


@pytest.mark.parametrize(
    ("key", "text", "value"),
    [
        ("audio.volume", "50", 50),
        ("talk.timeout", "30", 30),
        ("talk.timeout", "2.5", 2.5),
        ("talk.mode", "toggle", "toggle"),
        ("device.name", "1234", "1234"),
        ("device.name", '"gate 1"', "gate 1"),
        ("server.url", "wss://radio.example:8443", "wss://radio.example:8443"),
        ("server.tls_verify", "false", False),
        ("server.tls_verify", "off", False),
        ("audio.fec", "yes", True),
        ("audio.input_device", "2", 2),
        ("audio.input_device", "USB", "USB"),
        ("audio.input_device", "none", None),
        ("leds.transmit", "GPIO27", "GPIO27"),
        ("leds.transmit", "27", 27),
        ("log.level", "DEBUG", "DEBUG"),
    ],
)
def test_parse_value(key, text, value):
    parsed = parse_value(key, text)
    assert parsed == value and type(parsed) is type(value)


def test_overrides_are_checked_like_the_file():
    config = Config()
    updated = apply_overrides(
        config, {"talk.mode": "toggle", "talk.timeout": 30, "log.level": "DEBUG"}
    )
    assert updated.talk.mode == "toggle" and updated.talk.timeout == 30.0
    assert isinstance(updated.talk.timeout, float) and updated.log.level == "DEBUG"
    assert updated.audio == config.audio  # untouched sections stay
    same = parse_config('[talk]\nmode = "toggle"\ntimeout = 30\n[log]\nlevel = "DEBUG"\n')
    assert updated.talk == same.talk
    with pytest.raises(ConfigError) as info:
        apply_overrides(
            config,
            {"talk.mode": "shout", "audio.volume": 101, "leds.online": 40, "nope.x": 1},
        )
    message = str(info.value)
    for part in (
        "talk.mode: must be one of",
        "audio.volume: must be between",
        "leds.online: GPIO 40",
    ):
        assert part in message
    assert "nope.x: unknown key" in message
    with pytest.raises(ConfigError, match=r"server\.url: must start with ws:// or wss://"):
        apply_overrides(config, {"server.url": "http://x"})


def test_format_and_get_value():
    config = Config()
    assert format_value(get_value(config, "talk.mode")) == '"hold"'
    assert format_value(True) == "true" and format_value(None) == "none"
    assert format_value(2.5) == "2.5"


def test_saved_values_apply_at_start(tmp_path: Path):
    state = tmp_path / "state"
    config = Config(state=StateConfig(dir=str(state)))
    assert with_saved_settings(config) is config
    Store(state).update_settings(values={"talk.mode": "toggle", "audio.backend": "sim"})
    device = build_device(config)
    assert device.config.talk.mode == "toggle" and device.config.audio.backend == "sim"
    assert device.machine.settings.toggle


def test_a_bad_saved_value_is_logged_and_the_file_wins(tmp_path: Path, caplog):
    state = tmp_path / "state"
    config = Config(state=StateConfig(dir=str(state)))
    Store(state).update_settings(values={"talk.mode": "shout"})
    with caplog.at_level(logging.ERROR, logger="pttd.radio.run"):
        assert with_saved_settings(config) == config
    assert "saved console settings ignored: talk.mode: must be one of" in caplog.text


def test_log_buffer_keeps_the_last_lines_redacted():
    buffer = LogBuffer(capacity=12)
    logger = logging.getLogger("pttd.test.buffer")
    logger.addHandler(buffer)
    logger.setLevel(logging.INFO)
    try:
        for i in range(8):
            logger.info("line %d", i)
        logger.info("auth_token=%s", "s3cr3t-value")
        try:
            raise ValueError("code=K7QW-3MZP-9XTR")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(buffer)
    lines = buffer.lines()
    assert len(lines) == 12 and lines[0].endswith("line 2")  # a traceback counts its lines
    text = "\n".join(lines)
    assert "s3cr3t-value" not in text and "K7QW-3MZP-9XTR" not in text
    assert "auth_token=[redacted]" in text and "Traceback" in text
    assert buffer.lines(1) == lines[-1:] and buffer.lines(0) == []
    buffer.clear()
    assert buffer.lines() == []


def test_setup_logging_installs_the_buffer():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("INFO")
        assert LOG_BUFFER in root.handlers
        logging.getLogger("pttd.test.setup").warning("hello from %s", "setup")
        assert LOG_BUFFER.lines(1)[0].endswith("WARNING pttd.test.setup: hello from setup")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        LOG_BUFFER.clear()
