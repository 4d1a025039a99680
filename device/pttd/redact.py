"""Keep secrets out of logs: a redaction helper and a logging filter that applies it.

Code never logs a token or a code on purpose; this is the second line of defence, applied to
every record that reaches a handler (and to console output that echoes user input).
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Final

MASK: Final = "[redacted]"

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
    text = _PATTERNS[0].sub(lambda m: m.group("key") + MASK, text)
    for pattern in _PATTERNS[1:]:
        text = pattern.sub(MASK, text)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites each record's final message through :func:`redact`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_text is None and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


def setup_logging(level: int | str = logging.INFO) -> None:
    """Log to stderr (journald takes it) through the redacting filter."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("websockets").setLevel(logging.WARNING)
