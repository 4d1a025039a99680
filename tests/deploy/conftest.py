"""Fixtures for the deployment tests: a throwaway root laid out like a fresh Raspberry Pi OS
(bookworm) image's boot partition."""

from __future__ import annotations

from pathlib import Path

import pytest
from deploy_helpers import PI_OS_CMDLINE_TXT, PI_OS_CONFIG_TXT


@pytest.fixture
def pi_root(tmp_path: Path) -> Path:
    """An empty root with a Pi OS boot partition and a host name."""
    root = tmp_path / "root"
    boot = root / "boot" / "firmware"
    boot.mkdir(parents=True)
    (boot / "config.txt").write_text(PI_OS_CONFIG_TXT)
    (boot / "cmdline.txt").write_text(PI_OS_CMDLINE_TXT)
    (root / "etc").mkdir()
    (root / "etc" / "hostname").write_text("radio7\n")
    return root
