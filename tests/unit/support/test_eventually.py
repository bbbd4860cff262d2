"""The tests' one way to wait for something: bounded, and failing with what did not happen."""

import time

import pytest

from tests.support.eventually import eventually


async def test_returns_as_soon_as_the_condition_holds():
    calls = []

    def condition() -> bool:
        calls.append(1)
        return len(calls) >= 3

    await eventually(condition, 5, "three calls", interval=0.01)
    assert len(calls) == 3


async def test_reads_an_async_condition_too():
    async def ready() -> bool:
        return True

    await eventually(ready, 1, "an async condition")


async def test_fails_after_its_bound_saying_what_did_not_happen():
    started = time.monotonic()
    with pytest.raises(AssertionError, match="the impossible did not happen within 0.2 s"):
        await eventually(lambda: False, 0.2, "the impossible", interval=0.02)
    assert time.monotonic() - started < 5
