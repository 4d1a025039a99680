"""The look-alike fold that makes user and device names unique (:mod:`pttd.server.names`)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pttd.server.names import name_key


@pytest.mark.parametrize(
    "look_alike",
    [
        "alice",
        "Alice",
        "ALICE",
        "\u0430lice",  # Cyrillic а
        "\u0430l\u0456\u0441\u0435",  # Cyrillic а, і, с, е
        "\u0391LICE",  # Greek Α
        "ALIC\u0395",  # Greek Ε
        "\uff41\uff4c\uff49\uff43\uff45",  # full width
        "a1ice",  # digit one for l
        "alice\ufe0f",  # a variation selector shows nothing
        "al\u0131ce",  # dotless i
    ],
)
def test_look_alikes_of_alice_share_its_key(look_alike: str) -> None:
    assert name_key(look_alike) == name_key("alice") == "alice"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("alice", "alicé"),  # an accent is seen
        ("alice", "alice-2"),
        ("bob", "b0b-2"),
        ("\u043d", "h"),  # a small Cyrillic н does not look like h (its capital Н does)
        ("\u03b7", "h"),  # nor a small Greek η (it looks like n)
    ],
)
def test_names_that_look_different_keep_different_keys(first: str, second: str) -> None:
    assert name_key(first) != name_key(second)


def test_capitals_read_as_the_latin_capital_they_look_like() -> None:
    assert name_key("\u041d\u0415\u0420\u041e") == name_key("HEPO")  # Cyrillic НЕРО
    assert name_key("\u041b\u0415\u041e") != name_key("LEO")  # Cyrillic Л is no L
    assert name_key("\u0392\u039f\u0392") == name_key("\u0412\u041e\u0412") == "bob"


@given(st.text(min_size=1, max_size=64))
def test_the_key_is_stable(name: str) -> None:
    key = name_key(name)
    assert name_key(key) == key  # folding a key changes nothing
    assert name_key(name.upper()) == name_key(name.lower()) or not name.isascii()
