"""How messages are written: to_json derived from each class's key list and field metadata."""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any, ClassVar

import pytest

from pttd.wire import messages as p

MESSAGES: tuple[Any, ...] = typing.get_args(p.Message)


def test_json_names_come_from_the_metadata_or_the_field_name() -> None:
    names = {kind.__name__: [p.json_name(f) for f in dataclasses.fields(kind)] for kind in MESSAGES}
    assert "for" in names["SendTextMessage"] and "from" in names["OnTextMessage"]
    assert "from" in names["OnStreamStart"]
    assert not [n for ns in names.values() for n in ns if n.endswith("_")]


@pytest.mark.parametrize("kind", MESSAGES, ids=lambda k: k.__name__)
def test_every_field_is_written(kind: Any) -> None:
    written = [key for key, _attribute, _left_out in kind._KEYS]
    fields = {p.json_name(f) for f in dataclasses.fields(kind)}
    extra = {"command"} if hasattr(kind, "COMMAND") else {"success"}
    assert sorted(written) == sorted(fields | extra)


def test_left_out_values_and_none_are_not_written() -> None:
    plain = p.Logon(("ops",), seq=1, auth_token="t")
    assert json.loads(plain.to_json()) == {
        "command": "logon",
        "seq": 1,
        "auth_token": "t",
        "channels": ["ops"],
    }
    listening = p.Logon(("ops",), auth_token="t", listen_only=True)
    assert json.loads(listening.to_json())["listen_only"] is True
    header = p.CodecHeader(16000, 1, 60)
    normal = p.StartStream(header, 60)
    assert normal.to_json() == (
        '{"command":"start_stream","type":"audio","codec":"opus",'
        '"codec_header":"gD4BPA==","packet_duration":60}'
    )
    emergency = p.StartStream(header, 60, priority="emergency")
    assert json.loads(emergency.to_json())["priority"] == "emergency"
    assert p.OnChannelStatus("ops").to_json() == (
        '{"command":"on_channel_status","channel":"ops","status":"online","users_online":0}'
    )  # no left-out value of its own: a default is written like any value


def test_success_is_written_only_when_true() -> None:
    assert p.Response(seq=4).to_json() == '{"seq":4,"success":true}'
    assert p.Response(seq=4, error="busy").to_json() == '{"seq":4,"error":"busy"}'


def test_a_class_that_leaves_a_field_out_is_refused() -> None:
    with pytest.raises(TypeError, match="does not write b"):

        @p._writes("command", "a")
        @dataclasses.dataclass(frozen=True, slots=True)
        class Half(p._Message):
            COMMAND: ClassVar[str] = "half"
            a: int
            b: int


def test_a_key_that_names_nothing_is_refused() -> None:
    with pytest.raises(TypeError, match="has no 'b' to write"):

        @p._writes("a", "b")
        @dataclasses.dataclass(frozen=True, slots=True)
        class Odd(p._Message):
            a: int
