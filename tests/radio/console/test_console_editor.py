"""The console's line editor on its own: bytes in, echo and events out, every control case."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pttd.radio.console.editor import Cancelled, Line, LineEditor, Rejected, Step


def run(data: bytes, **kw: object) -> tuple[bytes, list[object]]:
    editor = LineEditor(**kw)  # type: ignore[arg-type]
    steps = editor.run(data)
    return b"".join(s.echo for s in steps), [s.event for s in steps if s.event is not None]


@pytest.mark.parametrize(
    "end", [b"\r", b"\n", b"\r\n", b"\r\x00"], ids=["CR", "LF", "CRLF", "CRNUL"]
)
def test_line_ends(end):
    echo, events = run(b"status" + end + b"help" + end)
    assert events == [Line("status"), Line("help")]
    assert echo == b"status\r\nhelp\r\n"


def test_crlf_is_one_line_end_but_lf_cr_and_double_cr_are_two():
    assert run(b"a\r\nb\r\n")[1] == [Line("a"), Line("b")]
    assert run(b"a\n\rb\r")[1] == [Line("a"), Line(""), Line("b")]
    assert run(b"a\r\r")[1] == [Line("a"), Line("")]


def test_crlf_split_across_reads():
    editor = LineEditor()
    first = editor.run(b"status\r")
    second = editor.run(b"\nrooms\r")
    assert [s.event for s in first + second if s.event] == [Line("status"), Line("rooms")]


@pytest.mark.parametrize("erase", [b"\x08", b"\x7f"], ids=["BS", "DEL"])
def test_backspace_and_delete_erase_one_character(erase):
    echo, events = run(b"statuz" + erase + b"s\r")
    assert events == [Line("status")]
    assert echo == b"statuz\b \bs\r\n"


def test_erase_a_multibyte_character_and_a_wide_one():
    echo, events = run("café".encode() + b"\x7f" + "e東".encode() + b"\x7f\r")
    assert events == [Line("cafe")]
    assert echo == "café".encode() + b"\b \b" + "e東".encode() + b"\b \b\b \b\r\n"


def test_erase_on_an_empty_line_does_nothing():
    echo, events = run(b"\x7f\x7f\x08ok\r")
    assert events == [Line("ok")]
    assert echo == b"ok\r\n"


def test_ctrl_u_erases_the_line():
    echo, events = run(b"abc\x15xy\r")
    assert events == [Line("xy")]
    assert echo == b"abc" + b"\b \b" * 3 + b"xy\r\n"


def test_ctrl_c_drops_the_line():
    echo, events = run(b"factory-re\x03status\r")
    assert events == [Cancelled(), Line("status")]
    assert echo == b"factory-re^C\r\nstatus\r\n"


@pytest.mark.parametrize(
    "sequence",
    [b"\x1b[A", b"\x1b[B", b"\x1b[C", b"\x1b[D", b"\x1bOA", b"\x1b[1;5C", b"\x1b[3~", b"\x1b[15~"],
    ids=["up", "down", "right", "left", "ss3-up", "ctrl-right", "delete", "F5"],
)
def test_escape_sequences_are_swallowed(sequence):
    echo, events = run(b"sta" + sequence + b"tus\r")
    assert events == [Line("status")]
    assert echo == b"status\r\n"


def test_alt_key_and_lone_escape_before_enter():
    assert run(b"a\x1bxb\r")[1] == [Line("ab")]  # ESC x: Alt+x, swallowed
    assert run(b"ab\x1b\r")[1] == [Line("ab")]  # a lone ESC, then Enter: the line ends


def test_escape_split_across_reads():
    editor = LineEditor()
    steps = editor.run(b"st\x1b") + editor.run(b"[") + editor.run(b"Aatus\r")
    assert [s.event for s in steps if s.event] == [Line("status")]


def test_runaway_escape_sequence_ends():
    _, events = run(b"\x1b[" + b"1;" * 40 + b"ok\r")
    # over 32 bytes the sequence is given up; what follows is read as text
    assert events and isinstance(events[-1], Line)


def test_control_noise_rejects_the_line_once():
    echo, events = run(b"st\x00at\x01\x02us\r")
    assert events == [Rejected("line noise (control characters): line ignored")]
    assert b"\x00" not in echo and b"\x01" not in echo


def test_c1_control_characters_are_noise():
    _, events = run("a\u0085b\r".encode())
    assert isinstance(events[0], Rejected)


def test_tab_rings_the_bell_and_is_not_noise():
    echo, events = run(b"sta\ttus\r")
    assert events == [Line("status")]
    assert b"\x07" in echo


def test_invalid_utf8_rejects_the_line_and_is_not_echoed():
    echo, events = run(b"ab\xff\xfecd\r")
    assert events == [Rejected("not UTF-8 text: line ignored")]
    assert b"\xff" not in echo and b"\xfe" not in echo


def test_truncated_multibyte_character_at_line_end():
    _, events = run(b"ab\xc3\r")
    assert events == [Rejected("not UTF-8 text: line ignored")]


def test_overlong_line_is_rejected_and_not_echoed_past_the_limit():
    echo, events = run(b"x" * 300 + b"\rstatus\r", max_line=256)
    assert events == [Rejected("line too long (over 256 bytes): ignored"), Line("status")]
    assert echo.count(b"x") == 256
    assert echo.count(b"\x07") == 1


def test_a_line_at_the_limit_is_fine():
    assert run(b"y" * 16 + b"\r", max_line=16)[1] == [Line("y" * 16)]
    assert isinstance(run("é".encode() * 9 + b"\r", max_line=16)[1][0], Rejected)


def test_secret_mode_echoes_stars():
    editor = LineEditor()
    editor.secret = True
    steps = editor.run("12é4\x7f5\r".encode())
    assert b"".join(s.echo for s in steps) == b"****\b \b*\r\n"
    assert steps[-1].event == Line("12é5", secret=True)


def test_mode_change_between_steps_applies_to_the_rest_of_a_read():
    editor = LineEditor()
    editor.feed(b"pin unlock\r1234\r")
    first = editor.step()
    assert first == Step(b"pin unlock\r\n", Line("pin unlock"))
    editor.secret = True
    second = editor.step()
    assert second == Step(b"****\r\n", Line("1234", secret=True))
    assert editor.step() is None


def test_redraw_and_reset():
    editor = LineEditor()
    editor.run(b"sta")
    assert editor.typed == "sta" and editor.redraw() == b"sta"
    editor.secret = True
    assert editor.redraw() == b"***"
    editor.reset()
    assert editor.typed == "" and editor.pending == 0


def test_line_repr_hides_the_text():
    assert "1234" not in repr(Line("1234"))


@given(st.binary(max_size=600))
def test_never_raises_and_lines_are_clean(data):
    editor = LineEditor(max_line=64)
    for step in editor.run(data):
        if isinstance(step.event, Line):
            text = step.event.text
            assert len(text.encode()) <= 64
            assert all(c >= " " and c != "\x7f" for c in text)
        assert isinstance(step.echo, bytes)
