"""Recommend: similar items, popular in a category, for the user, and complete the cart. Similar
items and the personal modes are a retrieval request ranked like a search without query text;
popular in a category is ordered by engagement (services/gateway/popular.py).

FOR_USER and COMPLETE_CART continue the shopper's history (supplied, else read from events at
request time, so a click logged through Track shapes the very next response). Supplied ids that
name no product are reported in `unknown_product_ids` and left out; NOT_FOUND when none of a
field's ids names a product. With no history, or with events unreachable ("events.history" in
`degraded_stages`), they fall back to what is popular (in the requested category), labelled
"cold_start". Recommend is not under experiment.

Business rules (RecommendRules, gateway settings): out-of-stock products are never recommended,
nor what the shopper bought (among their last 50 logged interactions) outside the repurchasable
categories. Merchandising rules apply as in Search (retrieval hides products and returns pins
for the request's category; popular.py and stages.py place the pins).
"""

from __future__ import annotations

import time

from shelfwise.common.v1 import common_pb2
from shelfwise.events.v1 import events_pb2
from shelfwise.gateway.v1 import gateway_pb2
from shelfwise.retrieval.v1 import retrieval_pb2

from services.common.errors import InvalidArgument, NotFound
from services.common.text import facet_form
from services.gateway.config import RecommendRules
from services.gateway.impressions import ImpressionLog
from services.gateway.metrics import GatewayMetrics
from services.gateway.page_tokens import decode_page_token, recommend_scope
from services.gateway.popular import COLD_START, POPULAR, PopularQuery, popular_page
from services.gateway.request_context import RequestContext
from services.gateway.stages import Page, RankingInputs, Stages
from services.gateway.validation import (
    MAX_CATEGORY_CHARS,
    MAX_HISTORY_IDS,
    REQUIRED,
    mode_of,
    page_size_of,
    product_ids_of,
    request_id_of,
    required_id,
    shopper_ids_of,
    validate_filters,
)

PERSONAL_MODES = (gateway_pb2.RECOMMEND_MODE_FOR_USER, gateway_pb2.RECOMMEND_MODE_COMPLETE_CART)


class RecommendFlow:
    def __init__(
        self, stages: Stages, impressions: ImpressionLog, metrics: GatewayMetrics,
        rules: RecommendRules = RecommendRules(),
    ):
        self._stages = stages
        self._impressions = impressions
        self._metrics = metrics
        self._rules = rules

    async def recommend(
        self, request: gateway_pb2.RecommendRequest, remaining: float | None
    ) -> gateway_pb2.RecommendResponse:
        mode_of(request)
        page_size = page_size_of(request)
        scope = recommend_scope(request)
        offset = decode_page_token(request.page_token, scope)
        request_id = request_id_of(request)
        validate_filters(request.filters)
        shopper_ids_of(request)
        context = RequestContext.of(request, request_id, remaining, scope)
        filters = common_pb2.Filters()
        filters.CopyFrom(request.filters)
        filters.in_stock_only = filters.in_stock_only or self._rules.in_stock_only
        window = (offset, page_size)
        unknown: list[str] = []
        try:
            if request.mode in PERSONAL_MODES:
                seed, page, unknown = await self._personal(context, request, filters, window)
            else:
                started = time.perf_counter()
                bought = await self._bought(context, await self._purchase_history(context))
                if bought is not None:
                    context.timed("history", started)
                if request.mode == gateway_pb2.RECOMMEND_MODE_POPULAR_IN_CATEGORY:
                    seed = request.category
                    page = await self._popular_in_category(context, request, filters, window, bought or [])
                else:
                    inputs = await self._similar_items_inputs(context, request, filters)
                    inputs.retrieve.exclude_product_ids.extend(bought or [])
                    seed, page = request.product_id, await self._stages.retrieve_and_rank(context, inputs, *window)
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
            unknown_product_ids=unknown,
        )
        self._metrics.record_response("recommend", context.timings, context.degraded)
        self._impressions.log(context, events_pb2.SURFACE_RECOMMEND, seed, page, offset)
        return response

    async def _similar_items_inputs(
        self, context: RequestContext, request: gateway_pb2.RecommendRequest, filters: common_pb2.Filters
    ) -> RankingInputs:
        """SIMILAR_ITEMS: the product's neighbours, its own category preferred."""
        product_id = required_id(request.product_id, "product_id")
        found = await self._stages.call(
            context, "retrieval", self._stages.downstream.retrieval.GetProducts,
            retrieval_pb2.GetProductsRequest(product_ids=[product_id]),
        )
        if not found.products:
            raise NotFound(f"product_id: no product with id {product_id!r}")
        retrieve = retrieval_pb2.RetrieveRequest(
            request_id=context.request_id, limit=self._stages.candidates, similar_to_product_id=product_id,
            filters=filters,
        )
        # "Similar" to a shopper means the same kind of thing first: same category ranks higher.
        return RankingInputs(retrieve, dict(preferred_categories=[found.products[0].category]))

    async def _popular_in_category(
        self, context: RequestContext, request: gateway_pb2.RecommendRequest, filters: common_pb2.Filters,
        window: tuple[int, int], bought: list[str],
    ) -> Page:
        if not request.category:
            raise InvalidArgument("category", REQUIRED)
        if len(request.category) > MAX_CATEGORY_CHARS:
            raise InvalidArgument("category", f"must be at most {MAX_CATEGORY_CHARS} characters")
        filters.categories[:] = [request.category]
        return await popular_page(self._stages, context, PopularQuery(filters, tuple(bought), POPULAR, window))

    async def _purchase_history(self, context: RequestContext) -> list:
        """The shopper's history entries when purchases are to be excluded, else []."""
        if not self._rules.exclude_purchased:
            return []
        return await self._stages.history_entries(context)

    async def _bought(self, context: RequestContext, entries: list) -> list[str] | None:
        """The products in `entries` the shopper purchased that must not be recommended (all but
        those in a repurchasable category); None when the rule is off or nothing was bought."""
        if not self._rules.exclude_purchased:
            return None
        purchased = list(dict.fromkeys(
            e.product_id for e in entries if e.type == events_pb2.INTERACTION_TYPE_PURCHASE
        ))
        if not purchased:
            return None
        if not self._rules.repurchasable_categories:
            return purchased
        found = await self._stages.call(
            context, "retrieval", self._stages.downstream.retrieval.GetProducts,
            retrieval_pb2.GetProductsRequest(product_ids=purchased),
        )
        again = set(self._rules.repurchasable_categories)
        return [p.id for p in found.products if facet_form(p.category) not in again]

    async def _personal(
        self, context: RequestContext, request: gateway_pb2.RecommendRequest, filters: common_pb2.Filters,
        window: tuple[int, int],
    ) -> tuple[str, Page, list[str]]:
        """FOR_USER and COMPLETE_CART: the history (supplied, else from events) followed by the
        cart is the sequence the model continues; cart products are never recommended. When
        it yields nothing (cold start), the most popular products (in `category`). Also the
        supplied ids that name no product (see `_known`)."""
        supplied = product_ids_of(request.history_product_ids, "history_product_ids", MAX_HISTORY_IDS)
        cart: list[str] = []
        if request.mode == gateway_pb2.RECOMMEND_MODE_COMPLETE_CART:
            cart = product_ids_of(request.cart_product_ids, "cart_product_ids", MAX_HISTORY_IDS, required=True)
        if request.category:
            if len(request.category) > MAX_CATEGORY_CHARS:
                raise InvalidArgument("category", f"must be at most {MAX_CATEGORY_CHARS} characters")
            filters.categories[:] = [request.category]
        known_history, unknown = await self._known(context, supplied, "history_product_ids")
        known_cart, unknown_cart = await self._known(context, cart, "cart_product_ids")
        started = time.perf_counter()
        # The logged history: the sequence when none is supplied, and the purchases either way.
        entries = await self._stages.history_entries(context) if not known_history or self._rules.exclude_purchased else []
        history = known_history or [entry.product_id for entry in entries]
        excluded = list(dict.fromkeys(cart + (await self._bought(context, entries) or [])))
        context.timed("history", started)
        sequence = (history + known_cart)[-MAX_HISTORY_IDS:]
        seed = "cart" if cart else "user"
        page = None
        if sequence:
            retrieve = retrieval_pb2.RetrieveRequest(
                request_id=context.request_id,
                filters=filters,
                limit=self._stages.candidates,
                history_product_ids=sequence,
                exclude_product_ids=excluded,
            )
            page = await self._stages.retrieve_and_rank(context, RankingInputs(retrieve, {}), *window)
        if page is None or page.total == 0:
            seed = "popular"
            page = await popular_page(self._stages, context, PopularQuery(filters, tuple(excluded), COLD_START, window))
        return seed, page, unknown + unknown_cart

    async def _known(self, context: RequestContext, ids: list[str], field: str) -> tuple[list[str], list[str]]:
        """(the ids that name catalogue products, in order; those that do not). NOT_FOUND when
        none does: the request would otherwise be answered as if `field` were empty."""
        if not ids:
            return [], []
        found = await self._stages.call(
            context, "retrieval", self._stages.downstream.retrieval.GetProducts,
            retrieval_pb2.GetProductsRequest(product_ids=list(dict.fromkeys(ids))),
        )
        missing = list(found.not_found_ids)
        if len(missing) == len(set(ids)):
            raise NotFound(f"{field}: no product {', '.join(missing)} in the catalogue")
        absent = set(missing)
        return [i for i in ids if i not in absent], missing


def _in_request_terms(error: InvalidArgument, request: gateway_pb2.RecommendRequest) -> InvalidArgument:
    """Retrieval's error about the category filter, named as the caller's `category` field in
    the modes where `category` replaces the categories filter."""
    replaced = request.category and request.mode != gateway_pb2.RECOMMEND_MODE_SIMILAR_ITEMS
    if replaced and error.field == "filters.categories[0]":
        return InvalidArgument("category", error.rule)
    return error
