"""The installer console's line editor, sans-I/O: bytes from the terminal in, echo and lines out.

It behaves as picocom, screen, minicom and PuTTY expect of a device that echoes for them:

* CR, LF and CRLF each end a line (a CR followed by LF is one line end; so is CR NUL);
* BS (0x08) and DEL (0x7f) erase one character, on screen too (``"\\b \\b"``, twice for a
  double-width character); Ctrl-U erases the whole line;
* Ctrl-C drops the line (``^C``) and reports it, so that a question can be cancelled;
* TAB rings the bell (there is no completion);
* escape sequences (arrow and function keys: CSI ``ESC [ … final``, SS3 ``ESC O x``, and
  two-byte ``ESC x``) are swallowed whole;
* in ``secret`` mode each character echoes as ``*`` (PINs);
* a line longer than ``max_line`` bytes, a line that is not UTF-8, and a line with other control
  characters in it (line noise) are not delivered: each gets one short message, at its end.
  Nothing typed past the limit or undecodable is echoed, so noise never reaches the screen.

Feed bytes with :meth:`LineEditor.feed`, then call :meth:`LineEditor.step` until it returns
None; each step carries the echo to send and at most one event. The editor reads no further
than the event, so a change of mode made after a line (``secret`` for the next answer) applies
to the bytes that follow it, even when they came in the same read.
"""

from __future__ import annotations

import codecs
import enum
import unicodedata
from dataclasses import dataclass, field
from typing import Final, TypeAlias

MAX_LINE: Final = 256  # bytes of UTF-8; a pairing link with a long server address fits

CR, LF, NUL, BS, DEL, ESC, ETX, NAK, TAB = 0x0D, 0x0A, 0x00, 0x08, 0x7F, 0x1B, 0x03, 0x15, 0x09
BELL: Final = b"\x07"
ERASE: Final = b"\b \b"
_MAX_ESCAPE: Final = 32  # bytes of one escape sequence; longer is noise, and ends it


@dataclass(frozen=True, slots=True)
class Line:
    """A completed, clean line (without its terminator)."""

    text: str = field(repr=False)  # may be a PIN or a pairing code
    secret: bool = False  # echoed as stars: an answer to a secret question, never a command


@dataclass(frozen=True, slots=True)
class Cancelled:
    """Ctrl-C: the line was dropped."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """A line that was not delivered; ``message`` says why, in a few words."""

    message: str


EditorEvent: TypeAlias = Line | Cancelled | Rejected


@dataclass(frozen=True, slots=True)
class Step:
    echo: bytes = b""
    event: EditorEvent | None = None


class _Esc(enum.Enum):
    NONE = 0
    START = 1  # after ESC
    CSI = 2  # after ESC [
    SS3 = 3  # after ESC O


class LineEditor:
    """One terminal line being typed. Never raises on input."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self.secret = False  # echo '*' for each character
        self._input = bytearray()
        self.reset()

    def reset(self) -> None:
        """Forget the line being typed and any unread input (a new session)."""
        self._input.clear()
        self._chars: list[str] = []
        self._size = 0  # UTF-8 bytes in _chars
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._escape = _Esc.NONE
        self._escape_len = 0
        self._after_cr = False
        self._too_long = False
        self._bad_utf8 = False
        self._noise = 0

    @property
    def pending(self) -> int:
        """Bytes fed and not yet read."""
        return len(self._input)

    @property
    def typed(self) -> str:
        """The line typed so far."""
        return "".join(self._chars)

    def feed(self, data: bytes) -> None:
        self._input += data

    def step(self) -> Step | None:
        """Read on until one event or the end of the input; None when nothing is left."""
        if not self._input:
            return None
        echo = bytearray()
        event: EditorEvent | None = None
        i = 0
        while i < len(self._input) and event is None:
            event = self._byte(self._input[i], echo)
            i += 1
        del self._input[:i]
        return Step(bytes(echo), event)

    def run(self, data: bytes) -> list[Step]:
        """Feed ``data`` and take every step (no mode changes in between)."""
        self.feed(data)
        steps = []
        while (step := self.step()) is not None:
            steps.append(step)
        return steps

    def redraw(self) -> bytes:
        """The line typed so far, as echoed (to put it back after a message)."""
        return "".join(self._shown(c) for c in self._chars).encode()

    # -- one byte ---------------------------------------------------------------------------

    def _byte(self, b: int, echo: bytearray) -> EditorEvent | None:
        after_cr, self._after_cr = self._after_cr, False
        if self._escape is not _Esc.NONE and self._in_escape(b):
            return None  # (a byte that ends a sequence abnormally is read as itself)
        if b in (CR, LF):
            if b == LF and after_cr:
                return None  # the LF of a CRLF
            self._after_cr = b == CR
            echo += b"\r\n"
            return self._end_line()
        if b == NUL and after_cr:
            return None  # CR NUL, as telnet sends a bare CR
        if b == ESC:
            self._escape, self._escape_len = _Esc.START, 1
            return None
        if b == ETX:
            echo += b"^C\r\n"
            self._clear_line()
            return Cancelled()
        if b in (BS, DEL):
            self._erase(echo)
            return None
        if b == NAK:  # Ctrl-U
            while self._chars:
                self._erase(echo)
            return None
        if b == TAB:
            echo += BELL  # no completion here; not noise either
            return None
        if b < 0x20:
            self._noise += 1
            return None
        self._text_byte(b, echo)
        return None

    def _in_escape(self, b: int) -> bool:
        """Whether ``b`` belongs to the escape sequence being read (swallowed)."""
        self._escape_len += 1
        if self._escape_len > _MAX_ESCAPE or b in (CR, LF, ETX, ESC):
            self._escape = _Esc.NONE
            return False
        if self._escape is _Esc.START:
            self._escape = {ord("["): _Esc.CSI, ord("O"): _Esc.SS3}.get(b, _Esc.NONE)
            return True  # ESC x (Alt+x) is swallowed whole
        if self._escape is _Esc.SS3:
            self._escape = _Esc.NONE
            return True
        # CSI: parameters and intermediates 0x20..0x3f, then one final byte 0x40..0x7e
        if 0x20 <= b <= 0x3F:
            return True
        self._escape = _Esc.NONE
        return 0x40 <= b <= 0x7E

    def _text_byte(self, b: int, echo: bytearray) -> None:
        if self._too_long or self._bad_utf8:
            return
        try:
            text = self._decoder.decode(bytes((b,)))
        except UnicodeDecodeError:
            self._bad_utf8 = True
            self._decoder.reset()
            return
        for char in text:
            size = len(char.encode())
            if self._size + size > self.max_line:
                self._too_long = True
                echo += BELL
                return
            if unicodedata.category(char) == "Cc":  # C1 controls (U+0080..U+009F)
                self._noise += 1
                continue
            self._chars.append(char)
            self._size += size
            echo += self._shown(char).encode()

    def _erase(self, echo: bytearray) -> None:
        self._decoder.reset()  # a half-typed multibyte character goes too
        if not self._chars:
            return
        char = self._chars.pop()
        self._size -= len(char.encode())
        echo += ERASE * _width(self._shown(char))

    def _shown(self, char: str) -> str:
        return "*" if self.secret else char

    def _end_line(self) -> EditorEvent | None:
        text = self.typed
        problem = (
            f"line too long (over {self.max_line} bytes): ignored"
            if self._too_long
            else "not UTF-8 text: line ignored"
            if self._bad_utf8 or self._decoder.getstate()[0]
            else "line noise (control characters): line ignored"
            if self._noise
            else ""
        )
        self._clear_line()
        if problem:
            return Rejected(problem)
        return Line(text, self.secret)

    def _clear_line(self) -> None:
        self._chars = []
        self._size = 0
        self._decoder.reset()
        self._escape = _Esc.NONE
        self._too_long = self._bad_utf8 = False
        self._noise = 0


def _width(text: str) -> int:
    """Terminal columns ``text`` takes (wide East Asian characters take two)."""
    return sum(2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in text)
