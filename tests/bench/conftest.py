"""One ``pttd bench --quick`` run for the whole session: the audio, latency and run-all tests all
read its report (it runs every benchmark, so running each one again would only cost time)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

QUICK_TIMEOUT = 150  # seconds; the quick run takes well under a minute


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """(the report ``--json`` printed, the ``--out`` file)."""
    out = tmp_path_factory.mktemp("bench-all") / "report.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pttd.cli",
            "bench",
            "--quick",
            "--json",
            "--no-plot",
            "--report-only",  # a missed target on a busy machine is no test failure
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=QUICK_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout), out
