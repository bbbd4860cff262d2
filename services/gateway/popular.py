"""Pages ordered by popularity: Recommend's POPULAR_IN_CATEGORY, and the cold-start fallback of
FOR_USER and COMPLETE_CART (no history, or none the sequence model can continue).

The order is the products' engagement score from events (clicks + 3 × add-to-carts + 10 ×
purchases over the popularity window), highest first; products nobody engaged with follow at 0
in catalogue order. Each result's score is that engagement score, and its one reason names the
fallback ("popular" or "cold_start") with the same value, so a caller can tell these results
from ranked ones and see what ordered them. Ranking is not asked: its scores would not be the
order shown.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from shelfwise.common.v1 import common_pb2
from shelfwise.events.v1 import events_pb2
from shelfwise.gateway.v1 import gateway_pb2
from shelfwise.retrieval.v1 import retrieval_pb2

from services.common.errors import DeadlineExceeded, Unavailable
from services.gateway.page_tokens import encode_page_token
from services.gateway.request_context import RequestContext
from services.gateway.stages import Page, Stages

log = logging.getLogger(__name__)

POPULAR = "popular"
COLD_START = "cold_start"
# Popular products read from events: the most ListPopularProducts returns, so that a category's
# engaged-with products are found even when other categories' are more popular.
POPULAR_LIMIT = 10_000
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
    scores = await _engagement_scores(stages, context)
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
    offset, page_size = query.window
    results = []
    for n, candidate in enumerate(ordered[offset : offset + page_size]):
        score = scores.get(candidate.product.id, 0.0)
        results.append(gateway_pb2.SearchResult(
            product=candidate.product, score=score, position=offset + n + 1,
            reasons=[common_pb2.ScoreReason(feature=query.reason, value=score, contribution=score)],
        ))
    next_offset = offset + page_size
    return Page(
        results=results,
        total=len(ordered),
        next_token=encode_page_token(next_offset, context.page_scope) if next_offset < len(ordered) else "",
        model_version=f"text_encoder={retrieved.model_version},ranker=popularity",
    )


async def _engagement_scores(stages: Stages, context: RequestContext) -> dict[str, float]:
    """Product id -> engagement score, highest first; {} when events cannot answer in time
    (then "events.popular" is degraded and the page is in catalogue order)."""
    started = time.perf_counter()
    try:
        popular = await stages.call(
            context, "events", stages.downstream.events.ListPopularProducts,
            events_pb2.ListPopularProductsRequest(limit=POPULAR_LIMIT),
        )
    except (Unavailable, DeadlineExceeded) as error:
        log.warning("popular products unavailable, browsing the catalogue: %s", error)
        context.degraded.append("events.popular")
        return {}
    finally:
        context.timed("popularity", started)
    return {p.product_id: p.score for p in popular.products}
