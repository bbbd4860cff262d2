"""Exploration: a small share of searches shown in a sampled order with known probabilities,
so that a ranking nobody has served yet can be judged from the logs (`shelfwise eval
offpolicy`, inverse propensity scoring) before it meets shoppers.

Which searches: a first page of at most ``MAX_EXPLORED_PAGE`` products that is not
interleaved, chosen by SHA-256 of the request id with probability
``SHELFWISE_EXPLORATION_SHARE`` (default 0: off). Deterministic per request id, so a retried
request is shown the same page.

How: the page is drawn from the ranker's top ``SHELFWISE_EXPLORATION_DEPTH`` products (the
pool, default 20, so that a product another ranking would show from below the page can be
shown too) by Plackett-Luce over ranks: the product ranked r (0-based) has weight
exp(-r / T), T = ``SHELFWISE_EXPLORATION_TEMPERATURE`` (default 3), and each position draws
one of the products not yet drawn in proportion to its weight. The probability that the
product ranked r lands at position k (the propensity the off-policy estimator divides by) is
computed exactly by dynamic programming over the sets of products already drawn (at most
C(20, 11) sets, once per page size). The pool (ids and features) is logged with the
impression, so that another ranking of the same products can be replayed offline.

Later pages of an explored search never repeat or lose a product: the page token carries the
pool ranks the first page showed, and later pages list the ranked order without them.

What it costs: explored pages are a little worse on average (the ranker's best product is not
always first). What it does not give: support outside the pool (see training/experiments/offpolicy.py).

Pure logic: no grpc.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

MAX_EXPLORED_PAGE = 12
MAX_DEPTH = 20


@dataclass(frozen=True)
class ExplorationSettings:
    share: float = 0.0
    temperature: float = 3.0
    depth: int = 20

    def __post_init__(self) -> None:
        if not 0.0 <= self.share <= 1.0:
            raise ValueError(f"SHELFWISE_EXPLORATION_SHARE: must be between 0 and 1, got {self.share}")
        if not self.temperature > 0.0:
            raise ValueError(f"SHELFWISE_EXPLORATION_TEMPERATURE: must be > 0, got {self.temperature}")
        if not 1 <= self.depth <= MAX_DEPTH:
            raise ValueError(f"SHELFWISE_EXPLORATION_DEPTH: must be between 1 and {MAX_DEPTH}, got {self.depth}")

    def explores(self, request_id: str, page_size: int) -> bool:
        if self.share <= 0.0 or not 2 <= page_size <= MAX_EXPLORED_PAGE:
            return False
        digest = hashlib.sha256(f"shelfwise-exploration:{request_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.share

    def pool_size(self, page_size: int) -> int:
        """How many of the ranker's top products a page of `page_size` is drawn from."""
        return max(self.depth, page_size)

    def sample(self, pool: int, shown: int, request_id: str) -> "ExploredPage":
        """A page of `shown` products drawn from a ranked pool of `pool`."""
        if not 1 <= shown <= min(pool, MAX_EXPLORED_PAGE) or pool > MAX_DEPTH:
            raise ValueError(f"cannot draw {shown} of {pool} products (at most {MAX_EXPLORED_PAGE} of {MAX_DEPTH})")
        weights = rank_weights(pool, self.temperature)
        rng = random.Random(int.from_bytes(hashlib.sha256(f"shelfwise-order:{request_id}".encode()).digest()[:8], "big"))
        remaining = list(range(pool))
        order = []
        for _ in range(shown):
            pick = rng.choices(remaining, weights=[weights[r] for r in remaining])[0]
            remaining.remove(pick)
            order.append(pick)
        marginals = placement_probabilities(pool, shown, self.temperature)
        return ExploredPage(
            order=order,
            propensities=[float(marginals[rank, position]) for position, rank in enumerate(order)],
            shown_probabilities=[float(p) for p in marginals.sum(axis=1)],
        )


@dataclass(frozen=True)
class ExploredPage:
    order: list[int]  # the pool rank (0-based) shown at each position
    propensities: list[float]  # P(that product at that position)
    shown_probabilities: list[float]  # per pool rank: P(shown on the page at all)


def rank_weights(size: int, temperature: float) -> np.ndarray:
    return np.exp(-np.arange(size) / temperature)


@lru_cache(maxsize=32)
def placement_probabilities(pool: int, shown: int, temperature: float) -> np.ndarray:
    """[rank, position] -> P(the product of that pool rank is shown at that position) under
    the Plackett-Luce draw above, exactly. Layer k holds every set of k ranks that can fill
    the first k positions with its probability; each rank not in a set is drawn next with its
    weight over the weight left."""
    if not 1 <= shown <= min(pool, MAX_EXPLORED_PAGE) or pool > MAX_DEPTH:
        raise ValueError(f"cannot draw {shown} of {pool} products (at most {MAX_EXPLORED_PAGE} of {MAX_DEPTH})")
    weights = rank_weights(pool, temperature)
    total = weights.sum()
    bits = (1 << np.arange(pool)).astype(np.int64)
    sets, probability, placed = np.zeros(1, dtype=np.int64), np.ones(1), np.zeros(1)
    marginals = np.zeros((pool, shown))
    for position in range(shown):
        free = (sets[:, None] & bits[None, :]) == 0
        step = np.where(free, probability[:, None] * weights[None, :] / (total - placed)[:, None], 0.0)
        marginals[:, position] = step.sum(axis=0)
        if position + 1 < shown:
            grown = (sets[:, None] | bits[None, :])[free]
            sets, inverse = np.unique(grown, return_inverse=True)
            probability = np.bincount(inverse, weights=step[free])
            placed = ((sets[:, None] & bits[None, :]) != 0) @ weights
    return marginals
