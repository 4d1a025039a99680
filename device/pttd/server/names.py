"""Names that look alike are the same name: the key under which user and device names are unique.

A paired device must not take a user's name, nor one that merely looks like it: ``аlice`` with a
Cyrillic ``а``, ``ALICE``, ``ａｌｉｃｅ`` in full width. :func:`name_key` folds a name to a
*skeleton* in the spirit of Unicode TS #39: NFKC (compatibility forms, full width, ligatures),
the common Cyrillic and Greek look-alikes of Latin letters mapped to those letters (upper case to
upper, lower to lower, so that e.g. Greek ``Η`` is ``H`` but ``η`` is ``n``), case folded, the
Latin look-alikes left after folding mapped (``0`` → ``o``, ``1`` → ``l``, dotless ``ı`` → ``i``),
and code points that show nothing (variation selectors, the grapheme joiner, Hangul fillers)
dropped. Two names with the same key are one name to the registry.

The table is small on purpose: the look-alikes of the Latin letters that names are mostly made
of, from the scripts that have most of them. It is not the full ``confusables.txt`` (a maintained
package with the skeleton algorithm would bring that; none is well kept enough to depend on).
"""

from __future__ import annotations

import unicodedata
from typing import Final

# Mapped before case folding: the letter's case matters for what it looks like.
_CASED: Final = {
    # Cyrillic capitals
    "А": "A",
    "В": "B",
    "Е": "E",
    "Ѕ": "S",
    "І": "I",
    "Ј": "J",
    "К": "K",
    "М": "M",
    "Н": "H",
    "О": "O",
    "Р": "P",
    "С": "C",
    "Т": "T",
    "Х": "X",
    "Ү": "Y",
    "Ԛ": "Q",
    "Ԝ": "W",
    "Ӏ": "l",  # palochka
    # Cyrillic small letters
    "а": "a",
    "е": "e",
    "о": "o",
    "р": "p",
    "с": "c",
    "у": "y",
    "х": "x",
    "ѕ": "s",
    "і": "i",
    "ј": "j",
    "һ": "h",
    "ԁ": "d",
    "ԛ": "q",
    "ԝ": "w",
    "ӏ": "l",
    "ү": "y",
    # Greek capitals
    "Α": "A",
    "Β": "B",
    "Ε": "E",
    "Ζ": "Z",
    "Η": "H",
    "Ι": "I",
    "Κ": "K",
    "Μ": "M",
    "Ν": "N",
    "Ο": "O",
    "Ρ": "P",
    "Τ": "T",
    "Υ": "Y",
    "Χ": "X",
    # Greek small letters
    "α": "a",
    "ο": "o",
    "ρ": "p",
    "ν": "v",
    "ι": "i",
    "κ": "k",
    "υ": "u",
    "χ": "x",
    "γ": "y",
    "η": "n",
    "ϲ": "c",  # lunate sigma
    "ϳ": "j",
}

# Mapped after case folding: Latin look-alikes of Latin letters.
_FOLDED: Final = {
    "0": "o",
    "1": "l",
    "ı": "i",  # dotless i
    "ǀ": "l",  # dental click
    "ɡ": "g",  # script g
    "ɑ": "a",  # Latin alpha
}

# Code points that show nothing, or nothing of their own: dropped.
_INVISIBLE: Final = {
    "\u034f",  # combining grapheme joiner
    "\u115f",
    "\u1160",
    "\u3164",
    "\uffa0",  # Hangul fillers
    "\u17b4",
    "\u17b5",  # Khmer inherent vowels
    *(chr(c) for c in range(0x180B, 0x1810)),  # Mongolian variation selectors, vowel separator
    *(chr(c) for c in range(0xFE00, 0xFE10)),  # variation selectors
    *(chr(c) for c in range(0xE0100, 0xE01F0)),  # variation selectors supplement
}

_BEFORE_FOLD: Final = str.maketrans({**_CASED, **dict.fromkeys(_INVISIBLE)})
_AFTER_FOLD: Final = str.maketrans({**_CASED, **_FOLDED, **dict.fromkeys(_INVISIBLE)})


def name_key(name: str) -> str:
    """The skeleton of ``name``: equal for names a reader would take for one another."""
    text = unicodedata.normalize("NFKC", name).translate(_BEFORE_FOLD)
    text = unicodedata.normalize("NFKC", text.casefold()).translate(_AFTER_FOLD)
    return unicodedata.normalize("NFKC", text)
