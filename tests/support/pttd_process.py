"""A real ``pttd run --config`` device process for tests (shared by the device and reliability
suites)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path


async def start_pttd_run(
    config: Path, log: Path, env: dict[str, str]
) -> asyncio.subprocess.Process:
    """Start ``python -m pttd.cli run --config CONFIG`` with its stderr going to ``log``."""
    with log.open("wb") as err:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pttd.cli",
            "run",
            "--config",
            str(config),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
