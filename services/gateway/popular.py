"""Pages ordered by popularity: Recommend's POPULAR_IN_CATEGORY, and the cold-start fallback of
FOR_USER and COMPLETE_CART (no history, or none the sequence model can continue).

The order is the products' engagement score from events (clicks + 3 × add-to-carts + 10 ×
purchases over the popularity window; services/common/popularity.py keeps it, refreshed in the
background every SHELFWISE_POPULARITY_REFRESH_SECONDS, as ranking does), highest first; products nobody engaged with follow at 0
in catalogue order. Each result's score is that engagement score, and its one reason names the
fallback ("popular" or "cold_start") with the same value, so a caller can tell these results
from ranked ones and see what ordered them. Ranking is not asked: its scores would not be the
order shown.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Mapping

from shelfwise.common.v1 import common_pb2
from shelfwise.gateway.v1 import gateway_pb2
from shelfwise.retrieval.v1 import retrieval_pb2

from services.gateway.page_tokens import encode_page_token
from services.gateway.request_context import RequestContext
from services.gateway.pins import place, ranked_window
from services.gateway.stages import Page, Stages, with_pins

POPULAR = "popular"
COLD_START = "cold_start"
# Most preferred ids retrieval accepts (its MAX_LIMIT).
MAX_PREFERRED = 2_000


@dataclass(frozen=True)
class PopularQuery:
    """Which products (filters, less `exclude`), the reason the results carry (POPULAR or
    COLD_START), and the page: (offset, page size)."""

    filters: common_pb2.Filters
    exclude: tuple[str, ...]
    reason: str
    window: tuple[int, int]


async def popular_page(stages: Stages, context: RequestContext, query: PopularQuery) -> Page:
    scores = _engagement_scores(stages, context)
    retrieve = retrieval_pb2.RetrieveRequest(
        request_id=context.request_id,
        filters=query.filters,
        limit=stages.candidates,
        exclude_product_ids=query.exclude,
        preferred_product_ids=list(scores)[:MAX_PREFERRED],
    )
    # A personal request whose own retrieval found nothing retrieves a second time: named apart.
    stage = "fallback.retrieval" if any(t.stage == "retrieval" for t in context.timings) else "retrieval"
    started = time.perf_counter()
    retrieved = await stages.call(context, "retrieval", stages.downstream.retrieval.Retrieve, retrieve)
    context.timed(stage, started)
    context.degraded.extend(f"retrieval.{component}" for component in retrieved.degraded_components)
    # sorted() is stable: products with equal scores keep retrieval's (catalogue) order.
    ordered = sorted(retrieved.candidates, key=lambda c: -scores.get(c.product.id, 0.0))
    page_offset, page_size = query.window
    pins = place([(p.position, p) for p in retrieved.pinned], len(ordered))
    offset, count = ranked_window(page_offset, page_size, pins)
    results = []
    for n, candidate in enumerate(ordered[offset : offset + count]):
        score = scores.get(candidate.product.id, 0.0)
        results.append(gateway_pb2.SearchResult(
            product=candidate.product, score=score, position=offset + n + 1,
            reasons=[common_pb2.ScoreReason(feature=query.reason, value=score, contribution=score)],
        ))
    if pins:
        results = with_pins(results, pins, page_offset, page_size)
    total = len(ordered) + len(pins)
    next_offset = page_offset + page_size
    return Page(
        results=results,
        total=total,
        next_token=encode_page_token(next_offset, context.page_scope) if next_offset < total else "",
        model_version=f"text_encoder={retrieved.model_version},ranker=popularity",
        applied_rule_ids=tuple(retrieved.applied_rule_ids),
    )


def _engagement_scores(stages: Stages, context: RequestContext) -> Mapping[str, float]:
    """Product id -> engagement score, highest first, as last read from events (in the
    background: no request waits on events for it); {} when it never could be read (then
    "events.popular" is degraded and the page is in catalogue order)."""
    popularity = stages.popularity
    if popularity is None or popularity.refreshed_at is None:
        context.degraded.append("events.popular")
        return {}
    return popularity.values
