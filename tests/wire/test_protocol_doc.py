"""PROTOCOL.md stays in step with the code.

The document is the project's own description of the wire protocol. These tests read it and
check it against ``pttd.wire.messages`` (commands, events, fields, error strings, reasons, limits),
the
server's settings and close reasons, the device link's settings and the pairing constants, and
they parse every JSON example with the real parser: a change to the code that the document does
not follow fails here.
"""

from __future__ import annotations

import base64
import dataclasses
import inspect
import json
import re
import typing
from pathlib import Path
from typing import Any

import pytest

from pttd.radio.console.interpreter import parse_pairing_link
from pttd.radio.link import LinkSettings
from pttd.server import app, registry, session
from pttd.server.admin import pairing_link
from pttd.wire import client
from pttd.wire import messages as p

DOC_PATH = Path(__file__).resolve().parents[2] / "PROTOCOL.md"
DOC = DOC_PATH.read_text(encoding="utf-8")

# The command and event names of API.md (zelloptt/zello-channel-api): anything else is pttd's own.
CHANNEL_API_NAMES = frozenset(
    {
        "logon",
        "start_stream",
        "stop_stream",
        "send_text_message",
        "send_image",
        "send_location",
        "on_channel_status",
        "on_stream_start",
        "on_stream_stop",
        "on_error",
        "on_text_message",
        "on_image",
        "on_location",
    }
)
EXTENSION_MARK = "[pttd]"

CLIENT_COMMANDS: tuple[Any, ...] = typing.get_args(p.ClientCommand)
SERVER_EVENTS: tuple[Any, ...] = typing.get_args(p.ServerEvent)


# ================================================================================ reading the doc


def _outside_fences(text: str) -> list[str]:
    """The lines of ``text`` that are not inside a fenced code block."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def sections(level: int, text: str = DOC) -> dict[str, str]:
    """Heading text → body, for the headings of ``level`` (``##`` is 2), fences respected."""
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        heading = None if fenced else re.match(r"^(#+) (.*)$", line)
        if heading is not None and len(heading.group(1)) <= level:
            current = None
            if len(heading.group(1)) == level:
                current = out.setdefault(heading.group(2).strip(), [])
            continue
        if current is not None:
            current.append(line)
    return {title: "\n".join(body) for title, body in out.items()}


def section(title: str) -> str:
    """The body of the ``##`` section called ``title``."""
    found = sections(2)
    assert title in found, f"PROTOCOL.md has no section '## {title}'"
    return found[title]


def message_sections(parent: str) -> dict[str, tuple[str, str]]:
    """``### `name` …`` headings of a section: name → (the rest of the heading, body)."""
    out = {}
    for heading, body in sections(3, section(parent)).items():
        m = re.match(r"^`([a-z_]+)`(.*)$", heading)
        if m is not None:
            out[m.group(1)] = (m.group(2), body)
    return out


def table_rows(text: str) -> list[list[str]]:
    """Cells of every markdown table row in ``text`` (separator rows left out)."""
    rows = []
    for line in _outside_fences(text):
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if all(re.fullmatch(r":?-+:?", c) for c in cells if c):
            continue
        rows.append(cells)
    return rows


def first_column_names(text: str) -> set[str]:
    """The `backticked` names that open table rows in ``text``."""
    names = set()
    for cells in table_rows(text):
        m = re.fullmatch(r"`([^`]+)`", cells[0])
        if m is not None:
            names.add(m.group(1))
    return names


def numbers_for(name: str, within: str) -> list[float]:
    """The numbers in the value cell of the one table row of section ``within`` that starts with
    `name` and a number."""
    rows = [
        cells
        for cells in table_rows(section(within))
        if len(cells) >= 2 and cells[0] == f"`{name}`" and re.match(r"\d", cells[1])
    ]
    assert len(rows) == 1, f"'## {within}' should have one table row giving `{name}`: {rows}"
    return [float(n) for n in re.findall(r"\d+(?:\.\d+)?", rows[0][1].replace("`", ""))]


def json_examples() -> list[dict[str, Any]]:
    blocks = re.findall(r"^```json\n(.*?)^```", DOC, flags=re.MULTILINE | re.DOTALL)
    return [json.loads(block) for block in blocks]


def public_strings(prefix: str = "") -> dict[str, str]:
    """The module-level upper-case string constants of pttd.wire.messages."""
    return {
        name: value
        for name, value in vars(p).items()
        if name.isupper() and not name.startswith("_") and isinstance(value, str)
        if name.startswith(prefix)
    }


ERRORS = {n: v for n, v in public_strings().items() if not n.startswith("REASON_")}
REASONS = public_strings("REASON_")


# ================================================================================ names


def test_introspection_finds_the_protocol() -> None:
    assert {c.COMMAND for c in CLIENT_COMMANDS} >= {"logon", "start_stream", "pair"}
    assert {c.COMMAND for c in SERVER_EVENTS} >= {"on_stream_start", "on_error"}
    assert p.NOT_AUTHORIZED in ERRORS.values()
    assert p.REASON_BUSY in REASONS.values()


@pytest.mark.parametrize(
    ("parent", "kinds"),
    [("Client commands", CLIENT_COMMANDS), ("Server events", SERVER_EVENTS)],
)
def test_each_message_has_its_section_and_no_other(parent: str, kinds: tuple[Any, ...]) -> None:
    assert set(message_sections(parent)) == {kind.COMMAND for kind in kinds}


@pytest.mark.parametrize(
    ("parent", "parse"),
    [("Client commands", p.parse_client_message), ("Server events", p.parse_server_message)],
)
def test_the_parsers_know_every_documented_message(parent: str, parse: Any) -> None:
    for name in message_sections(parent):
        try:
            parse(json.dumps({"command": name, "seq": 1}))
        except p.ProtocolError as exc:  # fields missing, but the command is known
            assert exc.error != p.UNKNOWN_COMMAND, name
    with pytest.raises(p.ProtocolError) as unknown:  # API.md's, documented as unsupported
        p.parse_client_message('{"command": "send_image", "seq": 1}')
    assert unknown.value.error == p.UNKNOWN_COMMAND


def test_extension_messages_are_marked_and_listed() -> None:
    headings = {**message_sections("Client commands"), **message_sections("Server events")}
    extensions = section("pttd extensions to the Channel API")
    for name, (rest, _) in headings.items():
        if name in CHANNEL_API_NAMES:
            assert EXTENSION_MARK not in rest, f"`{name}` is in API.md, not a pttd extension"
        else:
            assert EXTENSION_MARK in rest, f"`{name}` is pttd's own: mark its heading [pttd]"
            assert f"`{name}`" in extensions, f"`{name}` missing from the extensions list"


@pytest.mark.parametrize("kind", CLIENT_COMMANDS + SERVER_EVENTS, ids=lambda k: k.COMMAND)
def test_every_field_is_documented_and_no_other(kind: Any) -> None:
    parent = "Client commands" if kind in CLIENT_COMMANDS else "Server events"
    _, body = message_sections(parent)[kind.COMMAND]
    fields = {p.json_name(f) for f in dataclasses.fields(kind)}
    documented = first_column_names(body)
    # A field table lists `command` and every field; the error table lists error strings.
    field_rows = documented - set(ERRORS.values())
    extra = {"channel"} if kind is p.Logon else set()  # the single-room spelling of logon
    assert field_rows == fields | {"command"} | extra


def test_every_answer_field_is_documented_and_no_other() -> None:
    fields = {p.json_name(f) for f in dataclasses.fields(p.Response)}
    assert first_column_names(section("Answers")) == fields | {"success"}


def test_every_error_string_is_in_the_error_table_and_no_other() -> None:
    assert first_column_names(section("Error strings")) == set(ERRORS.values())


def test_every_reason_is_in_the_reason_table_and_no_other() -> None:
    assert first_column_names(section("Reasons")) == set(REASONS.values())


def test_every_reason_is_listed_as_an_extension() -> None:
    extensions = section("pttd extensions to the Channel API")
    for reason in REASONS.values():
        assert f"`{reason}`" in extensions


def test_every_error_string_and_reason_is_quoted_exactly() -> None:
    for value in (*ERRORS.values(), *REASONS.values()):
        assert f"`{value}`" in DOC


# ================================================================================ numbers


LIMITS = sorted(
    name
    for name, value in vars(p).items()
    if name.isupper()
    and not name.startswith("_")
    and isinstance(value, int | tuple)
    and not isinstance(value, bool)
)


def test_the_limits_table_names_every_numeric_constant() -> None:
    assert {"MAX_TEXT_FRAME", "MAX_BINARY_FRAME", "MAX_NAME", "OPUS_FRAME_MS"} <= set(LIMITS)
    assert first_column_names(section("Limits")) == set(LIMITS)


@pytest.mark.parametrize("name", LIMITS)
def test_limits_match_the_code(name: str) -> None:
    value = getattr(p, name)
    numbers = numbers_for(name, "Limits")
    if isinstance(value, tuple):
        assert numbers == [float(v) for v in value]
    else:
        assert numbers[0] == value


def test_frame_limits_quoted_in_the_transport_table() -> None:
    transport = section("Transport")
    for name in ("MAX_FRAME", "MAX_TEXT_FRAME", "MAX_BINARY_FRAME"):
        assert f"`{name}` = {getattr(p, name)} bytes" in transport


SERVER_DEFAULTS = [
    f.name
    for f in dataclasses.fields(app.ServerSettings)
    # numbers (not flags); the CLI's port default is 8080
    if isinstance(f.default, int | float) and not isinstance(f.default, bool) and f.name != "port"
]


def test_server_defaults_table_is_complete() -> None:
    assert "max_talk_time" in SERVER_DEFAULTS
    assert first_column_names(section("Server behaviour")) >= set(SERVER_DEFAULTS)


@pytest.mark.parametrize("name", SERVER_DEFAULTS)
def test_server_defaults_match_the_code(name: str) -> None:
    assert numbers_for(name, "Server behaviour")[0] == getattr(app.ServerSettings(), name)


LINK_DEFAULTS = [f.name for f in dataclasses.fields(LinkSettings) if type(f.default) is float]


@pytest.mark.parametrize("name", LINK_DEFAULTS)
def test_link_defaults_match_the_code(name: str) -> None:
    assert numbers_for(name, "The device side")[0] == getattr(LinkSettings(), name)


@pytest.mark.parametrize(
    "name",
    [
        "CODE_LENGTH",
        "CODE_GROUP",
        "DEFAULT_CODE_TTL",
        "CODE_KEEP_AFTER_EXPIRY",
        "TOKEN_BYTES",
        "FAMILY_BYTES",
        "DEFAULT_REFRESH_TTL",
        "MAX_REFRESH_FAMILIES",
    ],
)
def test_pairing_constants_match_the_code(name: str) -> None:
    assert numbers_for(name, "Pairing")[0] == getattr(registry, name)


def test_emergency_limits_match_the_code() -> None:
    floor = section("Server behaviour")
    assert f"`EMERGENCY_PREEMPTIONS` ({session.EMERGENCY_PREEMPTIONS})" in floor
    assert f"`EMERGENCY_WINDOW` ({session.EMERGENCY_WINDOW:.0f} s, sliding)" in floor
    assert f"`MAX_REFRESH_FAMILIES` ({registry.MAX_REFRESH_FAMILIES})" in floor


def test_pairing_code_alphabet_matches_the_code() -> None:
    assert f"| `CODE_ALPHABET` | `{registry.CODE_ALPHABET}` |" in section("Pairing")


# ================================================================================ close codes


def test_every_close_the_server_makes_is_in_the_close_table() -> None:
    source = inspect.getsource(session)  # the connection rules decide every close
    closes = re.findall(r'Close\([\w.]+, (\w+), "([^"]+)"\)', source)
    kicks = re.findall(r'_kick\(\w+, p\.\w+, "([^"]+)", out\)', source)
    assert closes and kicks
    rows = {(cells[0], cells[1]) for cells in table_rows(section("Server behaviour"))}
    for code, reason in closes:
        number = getattr(session, code)
        assert (str(number), f"`{reason}`") in rows, (number, reason)
    for reason in kicks:
        assert (str(session.CLOSE_POLICY), f"`{reason}`") in rows, reason
    for websockets_code in ("1001", "1009"):
        assert websockets_code in {first for first, _ in rows}


def test_the_device_side_states_the_revocation_rule_the_two_cores_share() -> None:
    """The device revokes on exactly what the doc says, and that is what the server does."""
    said = " ".join(section("The device side").split())
    assert (
        f"the server closes the connection with close code {client.CLOSE_POLICY} and reason "
        f"`{client.REVOKED_REASON}`"
    ) in said
    assert f"is `{p.NOT_AUTHORIZED}` without a `reason` (`{p.REASON_RATE_LIMITED}`" in said
    assert f"Nothing else revokes: an `on_error` `{p.NOT_AUTHORIZED}`" in said
    kicks = re.findall(
        r'_kick\(\w+, p\.(\w+), "([^"]+)", out\)',
        inspect.getsource(session.ServerCore.principals_changed),
    )
    assert kicks == [("NOT_AUTHORIZED", client.REVOKED_REASON)]
    assert session.CLOSE_POLICY == client.CLOSE_POLICY


# ================================================================================ examples


def _parse(example: dict[str, Any]) -> Any:
    frame = json.dumps(example)
    if example.get("command") in {kind.COMMAND for kind in CLIENT_COMMANDS}:
        return p.parse_client_message(frame)
    return p.parse_server_message(frame)


def test_every_json_example_is_exactly_what_the_code_writes() -> None:
    examples = json_examples()
    assert len(examples) >= len(CLIENT_COMMANDS) + len(SERVER_EVENTS)
    for example in examples:
        written = json.loads(_parse(example).to_json())
        expected = dict(example)
        if example.get("command") == "logon" and "channel" in expected:
            expected["channels"] = [expected.pop("channel")]  # logon writes the list spelling
        assert written == expected


def test_every_message_has_an_example() -> None:
    examples = json_examples()
    names = {e["command"] for e in examples if "command" in e}
    assert names == {kind.COMMAND for kind in CLIENT_COMMANDS + SERVER_EVENTS}
    answers = [e for e in examples if "command" not in e]
    assert any(e.get("success") for e in answers)
    assert any("error" in e for e in answers)


def test_codec_header_examples_decode_as_documented() -> None:
    rows = re.findall(
        r"^\| `([A-Za-z0-9+/=]+)` \| `([0-9a-f ]+)` \| (\d+) \| (\d+) \| (\d+) \|$",
        section("Binary frames"),
        flags=re.MULTILINE,
    )
    assert rows
    for text, raw, rate, frames, size in rows:
        header = p.CodecHeader(int(rate), int(frames), int(size))
        assert header.encode() == text
        assert p.CodecHeader.decode(text) == header
        assert base64.b64decode(text) == bytes.fromhex(raw)
    # API.md's own example.
    assert ("gD4BPA==", "80 3e 01 3c", "16000", "1", "60") in rows


def test_audio_packet_example_and_offsets() -> None:
    binary = section("Binary frames")
    packet = p.AudioPacket(22695, 0, bytes.fromhex("fcfffe")).encode()
    assert f"`{packet.hex(' ')}`" in binary
    assert p.parse_audio_packet(packet) == p.AudioPacket(22695, 0, b"\xfc\xff\xfe")
    layout = {cells[2]: (cells[0], cells[1]) for cells in table_rows(binary) if len(cells) == 4}
    assert layout["`type`"] == ("0", "1")
    assert layout["`stream_id`"] == ("1", "4")
    assert layout["`packet_id`"] == ("5", "4")
    most = p.MAX_BINARY_FRAME - p.AUDIO_HEADER_SIZE
    assert layout["`payload`"] == (str(p.AUDIO_HEADER_SIZE), f"1 to {most}")
    # The offsets are the code's: a payload at 9, the ids where renumbering writes them.
    renumbered = p.renumber_audio_packet(packet, 0x01020304)
    assert renumbered[5:9] == bytes([1, 2, 3, 4])
    assert renumbered[:5] == packet[:5]
    assert renumbered[9:] == packet[9:]


def test_pairing_link_example_is_what_the_admin_prints_and_the_console_reads() -> None:
    link = pairing_link("ABCD-EFGH-JKMN", "wss://radio.example.org")
    assert f"`{link}`" in section("Pairing")
    assert parse_pairing_link(link) == ("wss://radio.example.org", "ABCD-EFGH-JKMN", None)
