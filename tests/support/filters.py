"""Filter messages for tests of the gateway's requests."""

from __future__ import annotations

from shelfwise.common.v1 import common_pb2


def price(min: float | None = None, max: float | None = None) -> common_pb2.Filters:
    """Filters holding only a price range (either bound may be left open)."""
    filters = common_pb2.Filters()
    if min is not None:
        filters.price.min = min
    if max is not None:
        filters.price.max = max
    return filters
