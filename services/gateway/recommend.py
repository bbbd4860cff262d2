"""Recommend: similar items, popular in a category, for the user, and complete the cart, each a
retrieval request ranked like a search without query text.

FOR_USER and COMPLETE_CART continue the shopper's history (supplied, else read from events at
request time, so a click logged through Track shapes the very next response). With no history,
or with events unreachable ("events.history" in `degraded_stages`), they fall back to what is
popular (in the requested category). Recommend is not under experiment.
"""

from __future__ import annotations

import logging
import time

from shelfwise.common.v1 import common_pb2
from shelfwise.events.v1 import events_pb2
from shelfwise.gateway.v1 import gateway_pb2
from shelfwise.retrieval.v1 import retrieval_pb2

from services.common.errors import DeadlineExceeded, InvalidArgument, NotFound, Unavailable
from services.gateway.impressions import ImpressionLog
from services.gateway.metrics import GatewayMetrics
from services.gateway.page_tokens import decode_page_token, recommend_scope
from services.gateway.request_context import RequestContext
from services.gateway.stages import Page, RankingInputs, Stages
from services.gateway.validation import (
    MAX_CATEGORY_CHARS,
    MAX_HISTORY_IDS,
    MAX_ID_CHARS,
    page_size_of,
    product_ids_of,
    request_id_of,
    shopper_ids_of,
    validate_filters,
)

log = logging.getLogger(__name__)

PERSONAL_MODES = (gateway_pb2.RECOMMEND_MODE_FOR_USER, gateway_pb2.RECOMMEND_MODE_COMPLETE_CART)


class RecommendFlow:
    def __init__(self, stages: Stages, impressions: ImpressionLog, metrics: GatewayMetrics):
        self._stages = stages
        self._impressions = impressions
        self._metrics = metrics

    async def recommend(
        self, request: gateway_pb2.RecommendRequest, remaining: float | None
    ) -> gateway_pb2.RecommendResponse:
        page_size = page_size_of(request)
        scope = recommend_scope(request)
        offset = decode_page_token(request.page_token, scope)
        request_id = request_id_of(request)
        validate_filters(request.filters)
        shopper_ids_of(request)
        supplied_history = product_ids_of(request.history_product_ids, "history_product_ids", MAX_HISTORY_IDS)
        context = RequestContext.of(request, request_id, remaining, scope)
        filters = common_pb2.Filters()
        filters.CopyFrom(request.filters)
        try:
            if request.mode in PERSONAL_MODES:
                seed, page = await self._personal(context, request, supplied_history, filters, (offset, page_size))
            else:
                seed, inputs = await self._seeded_inputs(context, request, filters)
                page = await self._stages.retrieve_and_rank(context, inputs, offset, page_size)
        except InvalidArgument as error:
            raise _in_request_terms(error, request) from None
        response = gateway_pb2.RecommendResponse(
            request_id=request_id,
            results=page.results,
            next_page_token=page.next_token,
            total_size=page.total,
            model_version=page.model_version,
            timings=context.timings,
            degraded_stages=context.degraded,
        )
        self._metrics.record_response("recommend", context.timings, context.degraded)
        self._impressions.log(context, events_pb2.SURFACE_RECOMMEND, seed, page, offset)
        return response

    async def _seeded_inputs(
        self, context: RequestContext, request: gateway_pb2.RecommendRequest, filters: common_pb2.Filters
    ) -> tuple[str, RankingInputs]:
        """SIMILAR_ITEMS and POPULAR_IN_CATEGORY: (the seed the impression records, what
        retrieval and ranking are asked)."""
        retrieve = retrieval_pb2.RetrieveRequest(request_id=context.request_id, limit=self._stages.candidates)
        if request.mode == gateway_pb2.RECOMMEND_MODE_SIMILAR_ITEMS:
            if not request.product_id or len(request.product_id) > MAX_ID_CHARS:
                raise InvalidArgument("product_id", "is required (1-128 characters) for RECOMMEND_MODE_SIMILAR_ITEMS")
            retrieve.similar_to_product_id = request.product_id
            seed = request.product_id
            found = await self._stages.call(
                context, "retrieval", self._stages.downstream.retrieval.GetProducts,
                retrieval_pb2.GetProductsRequest(product_ids=[request.product_id]),
            )
            if not found.products:
                raise NotFound(f"product_id: no product with id {request.product_id!r}")
            # "Similar" to a shopper means the same kind of thing first: same category ranks higher.
            preferences = dict(preferred_categories=[found.products[0].category])
        elif request.mode == gateway_pb2.RECOMMEND_MODE_POPULAR_IN_CATEGORY:
            if not request.category or len(request.category) > MAX_CATEGORY_CHARS:
                raise InvalidArgument("category", "is required (1-200 characters) for RECOMMEND_MODE_POPULAR_IN_CATEGORY")
            filters.categories[:] = [request.category]
            retrieve.limit = 2_000  # the whole category (up to 2000) so popularity decides the order
            seed = request.category
            preferences = {}
        else:
            raise InvalidArgument(
                "mode",
                "must be RECOMMEND_MODE_SIMILAR_ITEMS, RECOMMEND_MODE_POPULAR_IN_CATEGORY, "
                "RECOMMEND_MODE_FOR_USER or RECOMMEND_MODE_COMPLETE_CART",
            )
        retrieve.filters.CopyFrom(filters)
        return seed, RankingInputs(retrieve, preferences)

    async def _personal(
        self, context: RequestContext, request: gateway_pb2.RecommendRequest, supplied_history: list[str],
        filters: common_pb2.Filters, window: tuple[int, int],
    ) -> tuple[str, Page]:
        """FOR_USER and COMPLETE_CART: the history (supplied, else from events) followed by the
        cart is the sequence the model continues; cart products are never recommended. When
        nothing in it is known (cold start), the most popular products (in `category`).
        `window`: (offset, page size)."""
        cart: list[str] = []
        if request.mode == gateway_pb2.RECOMMEND_MODE_COMPLETE_CART:
            cart = product_ids_of(request.cart_product_ids, "cart_product_ids", MAX_HISTORY_IDS, required=True)
        if request.category:
            if len(request.category) > MAX_CATEGORY_CHARS:
                raise InvalidArgument("category", "must be at most 200 characters")
            filters.categories[:] = [request.category]
        started = time.perf_counter()
        history = supplied_history or await self._stages.history(context)
        context.timed("history", started)
        sequence = (history + cart)[-MAX_HISTORY_IDS:]
        seed = "cart" if cart else "user"
        page = None
        if sequence:
            retrieve = retrieval_pb2.RetrieveRequest(
                request_id=context.request_id,
                filters=filters,
                limit=self._stages.candidates,
                history_product_ids=sequence,
                exclude_product_ids=cart,
            )
            page = await self._stages.retrieve_and_rank(context, RankingInputs(retrieve, {}), *window)
        if page is None or page.total == 0:
            seed = "popular"
            page = await self._popular(context, filters, cart, window)
        return seed, page

    async def _popular(
        self, context: RequestContext, filters: common_pb2.Filters, exclude: list[str], window: tuple[int, int]
    ) -> Page:
        """Cold start: the most engaged-with products first (from events), then the rest of the
        catalogue matching the filters; ranking orders them (popularity is one of its features)."""
        try:
            popular = await self._stages.call(
                context, "events", self._stages.downstream.events.ListPopularProducts,
                events_pb2.ListPopularProductsRequest(limit=self._stages.candidates),
            )
            preferred = [p.product_id for p in popular.products]
        except (Unavailable, DeadlineExceeded) as error:
            log.warning("popular products unavailable, browsing the catalogue: %s", error)
            context.degraded.append("events.popular")
            preferred = []
        retrieve = retrieval_pb2.RetrieveRequest(
            request_id=context.request_id,
            filters=filters,
            limit=self._stages.candidates,
            exclude_product_ids=exclude,
            preferred_product_ids=preferred,
        )
        return await self._stages.retrieve_and_rank(context, RankingInputs(retrieve, {}), *window)


def _in_request_terms(error: InvalidArgument, request: gateway_pb2.RecommendRequest) -> InvalidArgument:
    """Retrieval's error about the category filter, named as the caller's `category` field in
    the modes where `category` replaces the categories filter."""
    replaced = request.category and request.mode != gateway_pb2.RECOMMEND_MODE_SIMILAR_ITEMS
    if replaced and error.field == "filters.categories[0]":
        return InvalidArgument("category", error.rule)
    return error
