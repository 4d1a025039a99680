"""Waiting in tests: for a state, never for a time.

Importable from every test folder (``pythonpath = ["tests/support"]`` in pyproject.toml); the
module name is unique in the tree.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

TIMEOUT = 10.0  # generous: the suites must pass on a loaded 2-core CI machine


async def eventually(
    check: Callable[[], object], timeout: float = TIMEOUT, what: str = "", every: float = 0.01
) -> None:
    """Poll ``check`` on the loop (every ``every`` seconds) until it holds; fail
    (:class:`AssertionError`, saying ``what``) after ``timeout`` seconds.

    For state that changes without an asyncio event to wait on: counters, other threads, pins.
    Where there is an event (a device's state machine, a client's messages), wait on it instead.
    """
    try:
        async with asyncio.timeout(timeout):
            while not check():  # noqa: ASYNC110 - state changes on other tasks and threads
                await asyncio.sleep(every)
    except TimeoutError:
        raise AssertionError(f"not within {timeout} s: {what or check}") from None
