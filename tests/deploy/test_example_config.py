"""The commented example config (/etc/pttd/pttd.toml as installed): valid, and documents every
key the configuration has."""

from __future__ import annotations

import dataclasses
import re
import typing
from importlib import resources
from pathlib import Path

import pytest

from pttd import cli
from pttd.radio.config import Config, PttConfig, parse_config

EXAMPLE = resources.files("pttd") / "data" / "pttd.example.toml"


def example_text() -> str:
    return EXAMPLE.read_text(encoding="utf-8")


def test_pttd_config_check_accepts_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "pttd.toml"
    path.write_text(example_text())
    assert cli.main(["config", "check", "--config", str(path)]) == 0
    assert f"{path}: OK" in capsys.readouterr().out


def test_with_a_server_address_too(tmp_path: Path) -> None:
    text = example_text().replace('url = ""', 'url = "wss://ptt.example.org"', 1)
    assert parse_config(text).server.url == "wss://ptt.example.org"


def tables(text: str) -> dict[str, set[str]]:
    """The keys each table mentions, set or commented out (``# key = value``)."""
    keys: dict[str, set[str]] = {}
    current = ""
    for line in text.splitlines():
        header = re.match(r"^\[\[?([a-z_]+)\]\]?$", line.strip())
        if header:
            current = header.group(1)
            keys.setdefault(current, set())
            continue
        key = re.match(r"^(?:# )?([a-z_]+) = \S", line.strip())
        if key and current:
            keys[current].add(key.group(1))
    return keys


def test_every_key_is_documented() -> None:
    documented = tables(example_text())
    for section, cls in typing.get_type_hints(Config).items():
        if section == "ptt":
            cls = PttConfig
        names = {f.name for f in dataclasses.fields(cls)}
        missing = names - documented.get(section, set())
        assert not missing, f"[{section}] does not document {sorted(missing)}"
        unknown = documented.get(section, set()) - names
        assert not unknown, f"[{section}] documents keys that do not exist: {sorted(unknown)}"


def test_commented_defaults_are_the_real_defaults() -> None:
    """``# key = value`` lines show the default: uncommenting each changes nothing."""
    text = example_text()
    base = parse_config(text)
    for match in re.finditer(r"^# ([a-z_]+ = .+)$", text, re.M):
        line = match.group(0)
        uncommented = text.replace(line, match.group(1), 1)
        assert parse_config(uncommented) == base, line


def test_readme_shows_the_complete_example_config() -> None:
    """The README's configuration section carries the shipped example word for word."""
    root = Path(__file__).resolve().parents[2]
    example = (root / "device/pttd/data/pttd.example.toml").read_text()
    assert example in (root / "README.md").read_text()
