"""The ``pttd`` command line: every command listed, only the chosen one's module imported."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pttd import cli


def subcommands(parser: argparse.ArgumentParser) -> dict[str, str | None]:
    """Each subcommand of ``parser`` and its help line, in order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {a.dest: a.help for a in action._choices_actions}
    raise AssertionError("no subcommands")


def test_help_lists_every_command_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    positions = [out.index(f"\n    {name} ") for name in cli.COMMANDS]
    assert positions == sorted(positions)
    assert subcommands(cli.build_parser()) == {n: h for n, (_, h) in cli.COMMANDS.items()}


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_the_table_has_each_modules_own_help(command: str) -> None:
    """The real subparser, built by the command's module, carries the table's help line."""
    parser = cli.build_parser(command)
    assert subcommands(parser)[command] == cli.COMMANDS[command][1]
    assert set(subcommands(parser)) == set(cli.COMMANDS)


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["run", "--config", "x.toml"], "run"),
        (["config", "check", "--config", "x.toml"], "config"),
        (["-h", "bench", "audio"], "bench"),
        (["--version"], None),
        ([], None),
        (["nope", "run"], None),
        (["--", "run"], None),
    ],
)
def test_chosen_command(argv: list[str], command: str | None) -> None:
    assert cli.chosen_command(argv) == command


def test_an_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["nope"])
    assert exited.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err


HEAVY = [
    "pttd.bench",
    "pttd.demo",
    "pttd.server",
    "pttd.radio.doctor",
    "pttd.radio.console",
    "sqlite3",
    "gpiozero",
    "serial",
    "sounddevice",
]

PROBE = """
import json, sys
from pttd import cli
from pttd.radio import run
from pttd.radio.config import load_config
args = cli.build_parser("run").parse_args(["run", "--config", sys.argv[1]])
device = run.build_device(load_config(args.config))
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {"pttd", *sys.argv[2:]})))
"""


def test_a_simulated_device_loads_only_what_it_uses(tmp_path: Path) -> None:
    """``pttd run`` with the sim backend and a sim PTT: no benchmark, demo, server, doctor,
    console, SQLite, gpiozero (no pin configured), pyserial or PortAudio."""
    config = tmp_path / "device.toml"
    config.write_text(
        f'[state]\ndir = "{tmp_path / "state"}"\n[audio]\nbackend = "sim"\n[[ptt]]\nkind = "sim"\n'
    )
    roots = sorted({name.split(".")[0] for name in HEAVY} - {"pttd"})
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(config), *roots],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded = json.loads(proc.stdout)
    assert "pttd.radio.daemon" in loaded
    unwanted = [m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert unwanted == []
