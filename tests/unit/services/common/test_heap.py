"""services.common.heap.HeapFreezer: a freeze moves the live heap out of the garbage
collector's reach, and later freezes follow the catalogue's growth, not time."""

from __future__ import annotations

import gc

import pytest

from services.common.heap import HeapFreezer


@pytest.fixture(autouse=True)
def unfrozen():
    yield
    gc.unfreeze()  # the rest of the test session keeps collecting as usual


def test_a_freeze_puts_the_live_objects_beyond_the_collector() -> None:
    catalogue = [{"id": str(n)} for n in range(10_000)]  # tracked objects, like a product table
    HeapFreezer().freeze(len(catalogue))
    frozen = gc.get_freeze_count()
    assert frozen >= len(catalogue)
    assert all(o is not catalogue for o in gc.get_objects(generation=2))  # full collections skip it


async def test_later_freezes_wait_for_a_quarter_more_products_and_at_least_the_minimum() -> None:
    freezer = HeapFreezer(growth=0.25, min_products=1_000)
    freezer.freeze(8_000)
    assert not await freezer.freeze_if_grown(9_999)  # +25% not reached
    assert freezer.frozen_at_size == 8_000
    assert await freezer.freeze_if_grown(10_000)
    assert freezer.frozen_at_size == 10_000
    small = HeapFreezer(growth=0.25, min_products=1_000)
    small.freeze(100)
    assert not await small.freeze_if_grown(900)  # 9x the size, but fewer than 1,000 new products
    assert await small.freeze_if_grown(1_100)
