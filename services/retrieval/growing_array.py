"""An append-only numpy array for the catalogue index's per-slot data (vectors, liveness,
filter columns), which grows by one upsert batch at a time."""

from __future__ import annotations

import numpy as np


class GrowingArray:
    """A numpy array that grows at its end by doubling a buffer, so appending n rows costs
    O(n) amortised; `np.concatenate` copies everything stored so far on every append, which
    made importing a large catalogue in batches quadratic."""

    def __init__(self, dtype, row_shape: tuple[int, ...] = (), initial_capacity: int = 1024) -> None:
        self._buffer = np.zeros((0, *row_shape), dtype=dtype)
        self._used = 0
        self._initial_capacity = initial_capacity

    def __len__(self) -> int:
        return self._used

    @property
    def values(self) -> np.ndarray:
        """The stored rows: a view, valid until the next append."""
        return self._buffer[: self._used]

    def append(self, rows) -> np.ndarray:
        """Appends rows (array-like of this dtype and row shape); returns their indexes."""
        rows = np.asarray(rows, dtype=self._buffer.dtype).reshape(-1, *self._buffer.shape[1:])
        first, needed = self._used, self._used + len(rows)
        if needed > len(self._buffer):
            capacity = max(needed, 2 * len(self._buffer), self._initial_capacity)
            buffer = np.zeros((capacity, *self._buffer.shape[1:]), dtype=self._buffer.dtype)
            buffer[:first] = self._buffer[:first]
            self._buffer = buffer
        self._buffer[first:needed] = rows
        self._used = needed
        return np.arange(first, needed)
