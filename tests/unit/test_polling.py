"""The tests' one way to wait for something: bounded, and failing with what did not happen."""

import time

import pytest

from tests.polling import wait_until


async def test_returns_as_soon_as_the_condition_holds():
    calls = []

    def condition() -> bool:
        calls.append(1)
        return len(calls) >= 3

    await wait_until(condition, 5, "three calls", interval=0.01)
    assert len(calls) == 3


async def test_reads_an_async_condition_too():
    async def ready() -> bool:
        return True

    await wait_until(ready, 1, "an async condition")


async def test_fails_after_its_bound_saying_what_did_not_happen():
    started = time.monotonic()
    with pytest.raises(AssertionError, match="the impossible did not happen within 0.2 s"):
        await wait_until(lambda: False, 0.2, "the impossible", interval=0.02)
    assert time.monotonic() - started < 5
