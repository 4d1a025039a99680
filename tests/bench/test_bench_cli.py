"""``pttd bench …`` on the command line: a bad value is one usage line and exit status 2, before
any benchmark runs (nothing here runs one)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BAD_ARGUMENTS = [
    # (arguments after `pttd bench`, the option the error must name)
    (["--quick", "--out", "{missing}/x.json"], "--out"),
    (["--out", "{tmp}"], "--out"),
    (["--plot", "{missing}/x.png"], "--plot"),
    (["server", "--out", "{missing}/x.json"], "--out"),
    (["audio", "--out", "{missing}/x.json"], "--out"),
    (["latency", "--quick", "--out", "{missing}/x.json"], "--out"),
    (["server", "--listeners", "0"], "--listeners"),
    (["server", "--packets", "-5"], "--packets"),
    (["server", "--latency-packets", "many"], "--latency-packets"),
    (["server", "--rounds", "0"], "--rounds"),
]


def pttd(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pttd.cli", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize(("argv", "option"), BAD_ARGUMENTS)
def test_a_bad_value_is_one_usage_error(argv: list[str], option: str, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"
    done = pttd("bench", *(a.format(missing=missing, tmp=tmp_path) for a in argv), timeout=30)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, done.stderr
    assert f"argument {option}:" in errors[0]
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    assert not missing.exists() and list(tmp_path.iterdir()) == []  # nothing written
