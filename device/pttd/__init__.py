"""pttd: an internet push-to-talk radio for the Raspberry Pi, and the room server it talks to."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pttd")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"
