"""Waiting in tests for something another task or process will make true: always with a bound
and a message that says what did not happen, so a stuck test fails with a reason instead of
hanging until the test runner's timeout."""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable


async def eventually(condition: Callable[[], bool | Awaitable[bool]], seconds: float, what: str,
                     interval: float = 0.05) -> None:
    """Polls `condition` (plain or async) every `interval` until it holds; after `seconds`
    fails with AssertionError("<what> did not happen within <seconds> s")."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await _holds(condition):
            return
        await asyncio.sleep(interval)
    if not await _holds(condition):  # one last look at the deadline
        raise AssertionError(f"{what} did not happen within {seconds:g} s")


async def _holds(condition: Callable[[], bool | Awaitable[bool]]) -> bool:
    held = condition()
    return bool(await held) if isinstance(held, Awaitable) else bool(held)
