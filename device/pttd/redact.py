"""Keep secrets out of logs: a redaction helper and a logging filter that applies it.

Code never logs a token or a code on purpose; this is the second line of defence, applied to
every record that reaches a handler (and to console output that echoes user input).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections import deque
from typing import Final

MASK: Final = "[redacted]"

# "key": "value" in JSON (a frame, a message) whose key names a secret: the whole quoted value,
# spaces and escapes included ("correct horse battery staple", "7K3M 9QRT 2VWX").
_JSON_SECRET: Final = re.compile(
    r'(?i)(?P<key>"(?:auth_token|refresh_token|token|password|passwd|secret|code|pin)"\s*:\s*")'
    r'(?P<value>(?:[^"\\]|\\.)*)'
)

_PATTERNS: Final = (
    # key=value or "key": "value" pairs whose key names a secret
    re.compile(
        r"""(?ix)
        (?P<key>["']?(?:auth_token|refresh_token|token|password|passwd|secret|code|pin)["']?
        \s*[:=]\s*["']?)
        (?P<value>[^\s"'&,;}]+)
        """
    ),
    # pttd credentials: 43-character URL-safe base64 tokens (secrets.token_urlsafe(32))
    re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])"),
    # pairing codes: XXXX-XXXX-XXXX in Crockford base32
    re.compile(
        r"(?i)(?<![0-9a-z])[0-9a-hjkmnp-tv-z]{4}-[0-9a-hjkmnp-tv-z]{4}-[0-9a-hjkmnp-tv-z]{4}(?![0-9a-z])"
    ),
)


def redact(text: str) -> str:
    """``text`` with anything that looks like a secret replaced by ``[redacted]``."""
    text = _JSON_SECRET.sub(lambda m: m.group("key") + MASK, text)
    text = _PATTERNS[0].sub(lambda m: m.group("key") + MASK, text)
    for pattern in _PATTERNS[1:]:
        text = pattern.sub(MASK, text)
    return text


# Control characters (C0 but tab, DEL, C1) and the Unicode line and paragraph separators.
_CONTROL: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def escape_controls(text: str) -> str:
    """``text`` on one line, with nothing a terminal acts on: newlines, carriage returns,
    escape sequences and other control characters shown as ``\\n``, ``\\r``, ``\\x1b`` …,
    so that what came from outside (a text message, a device name) cannot forge a log line or
    clear the operator's screen."""
    return _CONTROL.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    if char in "\n\r":
        return "\\n" if char == "\n" else "\\r"
    code = ord(char)
    return f"\\x{code:02x}" if code < 256 else f"\\u{code:04x}"


def _frame_summary(arg: object) -> object:
    """A websockets frame as its kind and size only. websockets logs every frame at DEBUG with
    (the ends of) its payload, and frames carry tokens, codes and passwords: a pattern cannot
    be trusted with a payload cut anywhere, so none is logged."""
    opcode = getattr(arg, "opcode", None)
    data = getattr(arg, "data", None)
    if (
        opcode is not None
        and isinstance(data, bytes | bytearray | memoryview)
        and type(arg).__module__.startswith("websockets.")
    ):
        return f"{getattr(opcode, 'name', opcode)} [{len(data)} bytes]"
    return arg


class RedactingFilter(logging.Filter):
    """Rewrites each record's final message through :func:`redact` and :func:`escape_controls`,
    websocket frames in its arguments reduced to their kind and size."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(_frame_summary(arg) for arg in record.args)
        message = record.getMessage()
        cleaned = escape_controls(redact(message))
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_text is None and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class LogBuffer(logging.Handler):
    """Keeps the last ``capacity`` log lines in memory, redacted, for the console's ``log``."""

    def __init__(self, capacity: int = 500) -> None:
        super().__init__()
        self._lines: deque[str] = deque(maxlen=capacity)
        self._guard = threading.Lock()
        self.setFormatter(logging.Formatter(LOG_FORMAT))
        self.addFilter(RedactingFilter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = redact(self.format(record))
        except Exception:
            self.handleError(record)
            return
        with self._guard:
            self._lines.extend(text.splitlines() or [""])

    def lines(self, count: int | None = None) -> list[str]:
        """The last ``count`` lines (all kept, if None), oldest first."""
        with self._guard:
            lines = list(self._lines)
        return lines if count is None else lines[-count:] if count > 0 else []

    def clear(self) -> None:
        with self._guard:
            self._lines.clear()


LOG_BUFFER: Final = LogBuffer()
"""The buffer :func:`setup_logging` installs; the console's ``log`` reads it."""


def setup_logging(level: int | str = logging.INFO) -> None:
    """Log to stderr (journald takes it) and to :data:`LOG_BUFFER`, through the redacting
    filter."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler, LOG_BUFFER]
    root.setLevel(level)
    logging.getLogger("websockets").setLevel(logging.WARNING)
