"""The redaction helper and the logging filter: secrets never reach a log line."""

from __future__ import annotations

import logging
import secrets

import pytest

from pttd.redact import MASK, RedactingFilter, redact


def test_known_secret_shapes_are_masked() -> None:
    token = secrets.token_urlsafe(32)
    assert token not in redact(f"logon with {token} ok")
    assert "7K3M-9QRT-2VWX" not in redact("pairing code 7K3M-9QRT-2VWX used")
    for text in ('{"password": "hunter2"}', "password=hunter2", "auth_token: abc.def", "pin=1234"):
        cleaned = redact(text)
        assert "hunter2" not in cleaned and "abc.def" not in cleaned and "1234" not in cleaned
        assert MASK in cleaned


@pytest.mark.parametrize("text", ["device radio-7 paired from 127.0.0.1", "stream 12 ended"])
def test_ordinary_lines_are_untouched(text: str) -> None:
    assert redact(text) == text


def test_filter_rewrites_records(caplog: pytest.LogCaptureFixture) -> None:
    token = secrets.token_urlsafe(32)
    logger = logging.getLogger("pttd.test")
    logger.addFilter(RedactingFilter())
    try:
        with caplog.at_level(logging.INFO, logger="pttd.test"):
            logger.info("oops %s", token)
            try:
                raise ValueError(token)
            except ValueError:
                logger.exception("failed")
    finally:
        logger.filters.clear()
    assert token not in caplog.text
    assert MASK in caplog.text


def test_outside_text_cannot_forge_a_log_line_or_drive_the_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A name or a message from outside with a newline, a carriage return or an escape sequence
    stays on its one line, shown escaped; the handler setup_logging installs applies it."""
    from pttd.redact import LOG_BUFFER, escape_controls, setup_logging

    forged = "bob\n2026-12-02 05:00:00 ERROR pttd.radio.link: the server revoked this device\x1b[2J"
    assert "\n" not in escape_controls(forged) and "\x1b" not in escape_controls(forged)
    assert escape_controls("tab\tand é ok") == "tab\tand é ok"
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging(logging.INFO)
        logging.getLogger("pttd.test").info("text message from %s in ops", forged)
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\x1b" not in err
    assert "bob\\n2026-12-02 05:00:00 ERROR" in err and "\\x1b[2J" in err
    assert LOG_BUFFER.lines(1)[0].endswith("\\x1b[2J in ops")
