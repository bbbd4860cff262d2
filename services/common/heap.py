"""Keeps CPython's full garbage collections short in a service that holds a large, long-lived
heap (retrieval's catalogue index: a Product and its dicts per product).

A full (generation 2) collection walks every tracked object while the thread that triggered
it, here the event loop, waits. Measured with `shelfwise bench search --items 100000`:
retrieval's full collections took 128-285 ms each, several times a minute under load, and
retrieval's p99 stage time was about one pause long. They grow with the catalogue: the index
alone, at 1M synthetic products, takes 0.6 s per full collection on this 2-core machine.

`gc.freeze()` moves every object alive into a permanent generation that collections skip.
`HeapFreezer` collects and freezes once the heap has been built, and again whenever the
catalogue has grown by a quarter since (a large import), so a full collection walks what
changed lately rather than the whole catalogue (at 100k, 13-59 ms after the freeze). Frozen
objects are still freed by reference counting when released (a replaced or deleted product
is); only a reference cycle that was alive at a freeze and dies later is never reclaimed,
which is why freezes follow growth (a handful over a large import) and not time.
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger(__name__)

# Freeze again once the catalogue has grown by this share since the last freeze...
REFREEZE_GROWTH = 0.25
# ... and by at least this many products (below it, full collections are short anyway).
REFREEZE_MIN_PRODUCTS = 10_000


class HeapFreezer:
    def __init__(self, growth: float = REFREEZE_GROWTH, min_products: int = REFREEZE_MIN_PRODUCTS) -> None:
        self._growth = growth
        self._min_products = min_products
        self.frozen_at_size: int | None = None

    def freeze(self, size: int) -> None:
        """Collects what is not frozen yet and freezes what survives; `size`: the catalogue's
        size now. Blocks for one collection of the objects made since the last freeze."""
        started = time.perf_counter()
        gc.collect()
        gc.freeze()
        self.frozen_at_size = size
        log.info("heap frozen at %d products: %d objects, %.0f ms", size, gc.get_freeze_count(),
                 (time.perf_counter() - started) * 1000)

    async def freeze_if_grown(self, size: int) -> bool:
        """Freezes when the catalogue has grown enough since the last freeze; says whether it did."""
        frozen = self.frozen_at_size or 0
        if size - frozen < self._min_products or size < frozen * (1 + self._growth):
            return False
        self.freeze(size)
        return True
