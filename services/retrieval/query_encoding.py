"""Query encoding for dense retrieval: which texts each vector space reads for a query (routed
by language), and each space's query vector, left out (and the search marked degraded) when its
encoder is unreachable or the vector is not ready in time."""

from __future__ import annotations

import asyncio
import logging

import numpy as np

from services.common.errors import DeadlineExceeded, Unavailable
from services.common.logs import RepeatFilter
from services.retrieval.metrics import RetrievalMetrics
from services.retrieval.vector_space import VectorSpace

log = logging.getLogger(__name__)
log.addFilter(RepeatFilter())  # its warnings are per request: rate limited (services/common/logs.py)

# Degraded components: the English (primary) space's query vector missing, the multilingual one's.
DEGRADED_DENSE, DEGRADED_MULTILINGUAL = "dense", "dense.multilingual"


class QueryEncoding:
    def __init__(self, spaces: list[VectorSpace], metrics: RetrievalMetrics):
        """`spaces`: the English (primary) space, then the multilingual one when there is one."""
        self._spaces = spaces
        self._metrics = metrics

    def routed_texts(self, query_text: str, translation: str = "") -> list[list[str]]:
        """The texts each space embeds for a query (their vectors averaged), English space first:
        the rendering, when there is one, for the English space and the query itself for the
        multilingual one; with a single space, both."""
        translation = translation if translation and translation != query_text else ""
        if len(self._spaces) == 1:
            return [[query_text, translation] if translation else [query_text]]
        return [[translation or query_text], [query_text]]

    async def vectors(
        self, query_text: str, translation: str, dense_wait: float | None
    ) -> tuple[list[np.ndarray | None], tuple[str, ...]]:
        """Each space's query vector (None where it is unavailable or late), and what degraded."""
        texts = self.routed_texts(query_text, translation)

        async def vector(space: VectorSpace, space_texts: list[str]) -> np.ndarray | None:
            try:
                # A query that gives up here is left out of its encoding batch (MicroBatcher),
                # so shedding also takes load off the encoder.
                return await asyncio.wait_for(space.mean_vector(space_texts), dense_wait)
            except TimeoutError:
                self._metrics.dense_skipped("overload")
                log.debug("dense retrieval in %s skipped: no query vector within %.3fs", space.version, dense_wait)
            except (Unavailable, DeadlineExceeded) as error:
                self._metrics.dense_skipped("encoder_unavailable")
                log.warning("dense retrieval in %s skipped: %s", space.version, error)
            return None

        vectors = list(await asyncio.gather(*(vector(s, t) for s, t in zip(self._spaces, texts))))
        degraded = tuple(
            name for name, v in zip((DEGRADED_DENSE, DEGRADED_MULTILINGUAL), vectors) if v is None
        )
        return vectors, degraded
