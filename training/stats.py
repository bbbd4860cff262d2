"""Bootstrap intervals, written once for every evaluation in training/.

Every interval we publish is a 95% percentile bootstrap: resample the units (queries, users,
impressions) with replacement, recompute the statistic, and take the 2.5th and 97.5th
percentiles of the replicates. What differs between callers is only *what* is resampled and
how the replicates are drawn, so the pieces here are:

- `percentile_interval`: the 95% percentile interval of a set of replicates;
- `mean_interval` / `paired_difference_interval`: the mean over units with its interval (and
  the mean per-unit difference of two systems on the same units);
- `resampled_indices`: the unit indices of each resample, for statistics other than a mean;
- `cluster_weights`: per-row weights of a clustered bootstrap (rows grouped by unit);
- `resampled_sums`: column sums of resampled units, for ratio metrics.

The draws follow each caller's original order exactly (same generator calls, same shapes), so
a given seed and resample count reproduce the published figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

PERCENTILES = (2.5, 97.5)


@dataclass(frozen=True)
class Resampling:
    """How many bootstrap resamples to draw, and the seed that makes them reproducible."""

    samples: int
    seed: int


def percentile_interval(replicates: Sequence[float] | np.ndarray, finite_only: bool = False) -> tuple[float, float]:
    """(low, high): the 95% percentile interval of bootstrap replicates. With `finite_only`,
    replicates that came out NaN or infinite (a resample without positives, a ratio over zero)
    are left out, and an interval of nothing is (nan, nan)."""
    values = np.asarray(replicates, dtype=np.float64)
    if finite_only:
        values = values[np.isfinite(values)]
        if len(values) == 0:
            return float("nan"), float("nan")
    low, high = np.percentile(values, PERCENTILES)
    return float(low), float(high)


def mean_interval(values: Sequence[float] | np.ndarray, samples: int, seed: int) -> tuple[float, float, float]:
    """(mean, low, high): the mean over units and its 95% percentile-bootstrap interval; all
    NaN for no units."""
    data = np.asarray(values, dtype=np.float64)
    if len(data) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    # All resamples drawn at once: one [samples, units] draw, the order the figures were made in.
    means = data[rng.integers(0, len(data), size=(samples, len(data)))].mean(axis=1)
    low, high = percentile_interval(means)
    return float(data.mean()), low, high


def paired_difference_interval(values: Sequence[float], reference: Sequence[float], samples: int,
                               seed: int) -> tuple[float, float, float]:
    """(mean, low, high) of the per-unit difference `values - reference` over the same units
    (a paired bootstrap: each resample draws units, both systems' scores come with them)."""
    return mean_interval(np.asarray(values, dtype=np.float64) - np.asarray(reference, dtype=np.float64), samples, seed)


def resampled_indices(units: int, samples: int, seed: int) -> Iterator[np.ndarray]:
    """Yields `samples` arrays of `units` unit indices drawn with replacement, one resample at a
    time (for statistics that are not a mean, e.g. a macro-F1 over the resampled queries)."""
    rng = np.random.default_rng(seed)
    for _ in range(samples):
        yield rng.integers(0, units, size=units)


def cluster_weights(unit_of_row: np.ndarray, samples: int, seed: int) -> Iterator[np.ndarray]:
    """Yields `samples` row-weight vectors (a clustered bootstrap): units (0..U-1, U = the largest
    index + 1) drawn with replacement, every row weighted by how often its unit was drawn. One
    at a time: [samples, rows] at once does not fit for large logs."""
    units = int(unit_of_row.max()) + 1 if len(unit_of_row) else 0
    for drawn in resampled_indices(units, samples, seed):
        yield np.bincount(drawn, minlength=units)[unit_of_row].astype(np.float64)


def resampled_sums(units: np.ndarray, samples: int, rng: np.random.Generator, chunk: int = 250) -> np.ndarray:
    """[samples, columns]: column sums of `samples` resamples of the rows of `units` (with
    replacement, as many as there are), as multinomial counts times the unit sums. Takes the
    caller's generator so several groups (arms) can share one stream."""
    n = len(units)
    out = np.empty((samples, units.shape[1]), dtype=np.float64)
    for start in range(0, samples, chunk):
        size = min(chunk, samples - start)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(np.float64)
        out[start : start + size] = counts @ units
    return out
