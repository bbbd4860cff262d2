"""Every RPC of every service, sent hostile input through the five real servers.

One table (`CASES`) lists, per service and RPC, a request built to break it (empty and
oversized strings, invalid UTF-8 on the wire, huge repeated fields, negative/NaN/infinite
numbers, unknown enum values, ids that do not exist, duplicate ids, SQL and shell
metacharacters) and the exact status set the caller must get. The expectations are narrow on
purpose: a validation that regresses (a NaN price accepted, a missing limit check) turns an
expected INVALID_ARGUMENT into OK or INTERNAL and fails its case.

Requests go out as bytes through generic multi-callables (`channel.unary_unary(method)` with
no serializer), so a case can send what no generated stub would: a proto3 `string` field
holding invalid UTF-8, or a message above the server's size limit.

After the table: every service is still SERVING, a normal Search still succeeds, and no case
produced INTERNAL or UNKNOWN (a case expecting one would have to state why).
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import Callable

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from shelfwise.common.v1 import common_pb2
from shelfwise.events.v1 import events_pb2
from shelfwise.gateway.v1 import gateway_pb2
from shelfwise.query_understanding.v1 import query_understanding_pb2 as qu_pb2
from shelfwise.ranking.v1 import ranking_pb2
from shelfwise.retrieval.v1 import retrieval_pb2

from services.common.channels import create_channel

OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
INTERNAL = grpc.StatusCode.INTERNAL
TOO_BIG = grpc.StatusCode.RESOURCE_EXHAUSTED

# The servers run with the default limit (SHELFWISE_MAX_MESSAGE_BYTES, 4 MiB); the test's own
# channels allow far more, so that an oversized request reaches the server and the server's
# limit is what answers.
SERVER_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
CLIENT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
OVERSIZED = "x" * (SERVER_MAX_MESSAGE_BYTES + 1024)

SQL = "x'); DROP TABLE products; -- \" OR 1=1 /*"
SHELL = "$(rm -rf /) `id` | cat /etc/passwd; echo ${HOME} && exit 1 > /dev/null"
NAN, INF = math.nan, math.inf
# A valid Unicode string that PostgreSQL's text and jsonb types cannot store.
NUL = "a\x00b"

SERVICES = {
    "query_understanding": "shelfwise.query_understanding.v1.QueryUnderstandingService",
    "retrieval": "shelfwise.retrieval.v1.RetrievalService",
    "ranking": "shelfwise.ranking.v1.RankingService",
    "events": "shelfwise.events.v1.EventsService",
    "gateway": "shelfwise.gateway.v1.GatewayService",
}

# Unique per test run, so that events and products written by the table never collide with
# another run's or another test's.
RUN = uuid.uuid4().hex[:8]


def uid(prefix: str = "") -> str:
    return f"{prefix}{RUN}-{uuid.uuid4().hex[:12]}"


def raw_string_field(number: int, payload: bytes) -> bytes:
    """A length-delimited field on the wire: what a proto3 `string` field carries, but with any
    bytes (the generated classes refuse to build invalid UTF-8)."""
    assert number < 16 and len(payload) < 128
    return bytes([number << 3 | 2, len(payload)]) + payload


INVALID_UTF8 = b"\xff\xfe\xc3\x28 \xed\xa0\x80"  # stray bytes, a broken 2-byte sequence, a surrogate


@dataclass(frozen=True)
class Case:
    """One hostile request and what the caller must get back.

    build: the request as bytes (unary) or a list of messages as bytes (streaming).
    expected: the status codes allowed; one in almost every case.
    field: for INVALID_ARGUMENT, text the message must contain (the field it names).
    reason: why INTERNAL is expected, where it is.
    """

    id: str
    service: str
    rpc: str
    build: Callable[[], bytes | list[bytes]]
    expected: frozenset[grpc.StatusCode]
    field: str = ""
    streaming: bool = False
    reason: str = ""


def case(id, service, rpc, build, *expected, field="", streaming=False, reason="") -> Case:
    def as_bytes():
        built = build()
        if isinstance(built, list):
            return [m if isinstance(m, bytes) else m.SerializeToString() for m in built]
        return built if isinstance(built, bytes) else built.SerializeToString()

    return Case(id, service, rpc, as_bytes, frozenset(expected), field, streaming, reason)


# --- request builders -------------------------------------------------------------------


def understand(query="red shoes", **kwargs):
    return lambda: qu_pb2.UnderstandRequest(query=query, **kwargs)


def suggest_qu(prefix="mac", **kwargs):
    return lambda: qu_pb2.SuggestRequest(prefix=prefix, **kwargs)


def suggest_gw(prefix="mac", **kwargs):
    return lambda: gateway_pb2.SuggestRequest(prefix=prefix, **kwargs)


def retrieve(**kwargs):
    kwargs.setdefault("query_text", "red wine")
    return lambda: retrieval_pb2.RetrieveRequest(**kwargs)


def price(**bounds) -> common_pb2.Filters:
    return common_pb2.Filters(price=common_pb2.PriceRange(**bounds))


def product(**fields) -> common_pb2.Product:
    values = {"id": uid("hostile-"), "title": "Hostile input test product", "price": 1.0}
    values.update(fields)
    return common_pb2.Product(**values)


def upsert(*products):
    return lambda: retrieval_pb2.UpsertProductsRequest(products=[p() if callable(p) else p for p in products])


def candidate(product_id="hostile-candidate", **scores) -> retrieval_pb2.Candidate:
    values = {"lexical_score": 1.0, "dense_score": 0.5, "fused_score": 0.01}
    values.update(scores)
    return retrieval_pb2.Candidate(product=common_pb2.Product(id=product_id, title="t"), **values)


def rank(**kwargs):
    kwargs.setdefault("candidates", [candidate("a"), candidate("b")])
    return lambda: ranking_pb2.RankRequest(request_id=uid(), **kwargs)


def impression(**fields) -> events_pb2.Impression:
    values = {
        "event_id": uid("imp-"),
        "request_id": uid("req-"),
        "surface": events_pb2.SURFACE_SEARCH,
        "product_ids": [f"hostile-{RUN}-1", f"hostile-{RUN}-2"],
        "first_position": 1,
    }
    values.update(fields)
    return events_pb2.Impression(**values)


# Interactions must be attributed to a logged impression (events answers NOT_FOUND for an
# unknown request id): the table logs this one first, and valid interactions click on it. The
# product ids are in no catalogue, so these events never change another test's popularity.
SHOWN_REQUEST = uid("shown-")
SHOWN_PRODUCTS = [f"hostile-{RUN}-1", SQL]


def interaction(**fields) -> events_pb2.Interaction:
    values = {
        "event_id": uid("int-"),
        "type": events_pb2.INTERACTION_TYPE_CLICK,
        "request_id": SHOWN_REQUEST,
        "product_id": SHOWN_PRODUCTS[0],
        "position": 1,
    }
    values.update(fields)
    return events_pb2.Interaction(**values)


def log_events(impressions=(), interactions=()):
    return lambda: events_pb2.LogEventsRequest(
        impressions=[i() if callable(i) else i for i in impressions],
        interactions=[i() if callable(i) else i for i in interactions],
    )


def stream(*batches):
    """StreamEvents: one request per batch, sequence numbers from 1."""

    def build():
        return [
            events_pb2.StreamEventsRequest(sequence=n, **batch()) for n, batch in enumerate(batches, start=1)
        ]

    return build


def batch(impressions=(), interactions=()):
    return lambda: {
        "impressions": [i() if callable(i) else i for i in impressions],
        "interactions": [i() if callable(i) else i for i in interactions],
    }


def metrics(**kwargs):
    kwargs.setdefault("group_by", events_pb2.METRICS_GROUPING_REQUEST)
    return lambda: events_pb2.GetMetricsRequest(**kwargs)


def stamp(seconds: int, nanos: int = 0) -> Timestamp:
    return Timestamp(seconds=seconds, nanos=nanos)


def search(query="red wine", **kwargs):
    return lambda: gateway_pb2.SearchRequest(query=query, **kwargs)


def recommend(mode=gateway_pb2.RECOMMEND_MODE_FOR_USER, **kwargs):
    return lambda: gateway_pb2.RecommendRequest(mode=mode, **kwargs)


def track(*interactions):
    return lambda: gateway_pb2.TrackRequest(interactions=[i() if callable(i) else i for i in interactions])


def raw(*fields: bytes):
    return lambda: b"".join(fields)


# Invalid UTF-8 in a proto3 `string` field: the Python protobuf runtime refuses to parse the
# message (DecodeError). grpc.aio would answer that with UNKNOWN before any handler runs, so the
# shared interceptor (services/common/server.py) decodes unary requests itself and answers
# INVALID_ARGUMENT naming the request; StreamEvents decodes inside its handler.
BAD_WIRE = (INVALID,)

# An id the catalogue surely lacks, and one product the table writes and later deletes.
MISSING = "no-such-product-" + RUN
SQL_PRODUCT_ID = uid("sql-'); DROP TABLE products;--")
HUGE_LIST = ["p"] * 100_000

CASES: list[Case] = [
    # --- query_understanding.Understand ---------------------------------------------------
    case("qu-empty", "query_understanding", "Understand", understand(""), INVALID, field="query"),
    case("qu-whitespace", "query_understanding", "Understand", understand(" \t\n\u3000"), INVALID, field="query"),
    case("qu-control-only", "query_understanding", "Understand", understand("\x00\x01\x1b\x7f"), INVALID, field="query"),
    case("qu-513-chars", "query_understanding", "Understand", understand("a" * 513), INVALID, field="query"),
    # Within the raw limit, 18x that once normalised (NFKC): refused under the caller's field.
    case("qu-expands-under-nfkc", "query_understanding", "Understand", understand("\ufdfa" * 512), INVALID, field="query: must be at most 512 characters once normalised"),
    case("qu-sql", "query_understanding", "Understand", understand(SQL), OK),
    case("qu-shell", "query_understanding", "Understand", understand(SHELL), OK),
    case("qu-price-overflow", "query_understanding", "Understand", understand("wine under 1e309"), OK),
    case("qu-negative-price", "query_understanding", "Understand", understand("wine $-5"), OK),
    case("qu-huge-number", "query_understanding", "Understand", understand("wine under $" + "9" * 400), OK),
    # --- query_understanding.Suggest ------------------------------------------------------
    case("qu-suggest-empty", "query_understanding", "Suggest", suggest_qu(""), INVALID, field="prefix: is required"),
    case("qu-suggest-control-only", "query_understanding", "Suggest", suggest_qu("\x00\x1b\u200b"), INVALID, field="prefix: is required"),
    case("qu-suggest-101-chars", "query_understanding", "Suggest", suggest_qu("a" * 101), INVALID, field="prefix: must be at most 100"),
    case("qu-suggest-expands-under-nfkc", "query_understanding", "Suggest", suggest_qu("\ufdfa" * 100), INVALID, field="prefix: must be at most 100 characters once normalised"),
    case("qu-suggest-limit-0", "query_understanding", "Suggest", suggest_qu(limit=0), INVALID, field="limit: must be between 1 and 20"),
    case("qu-suggest-limit-negative", "query_understanding", "Suggest", suggest_qu(limit=-2**31), INVALID, field="limit"),
    case("qu-suggest-limit-21", "query_understanding", "Suggest", suggest_qu(limit=21), INVALID, field="limit"),
    case("qu-suggest-sql", "query_understanding", "Suggest", suggest_qu(SQL[:100]), OK),
    case("qu-suggest-nul", "query_understanding", "Suggest", suggest_qu(NUL), OK),
    case("qu-suggest-invalid-utf8", "query_understanding", "Suggest", raw(raw_string_field(1, INVALID_UTF8)), *BAD_WIRE, field="request"),
    case("qu-locale-long", "query_understanding", "Understand", understand(locale="x" * 10_000), INVALID, field="locale"),
    case("qu-request-id-long", "query_understanding", "Understand", understand(request_id="r" * 129), INVALID, field="request_id"),
    case("qu-invalid-utf8", "query_understanding", "Understand", raw(raw_string_field(1, INVALID_UTF8)), *BAD_WIRE, field="request"),
    case("qu-oversized", "query_understanding", "Understand", understand(OVERSIZED), TOO_BIG),
    case("qu-not-a-message", "query_understanding", "Understand", raw(b"\xff\xff\xff\xff"), *BAD_WIRE, field="request"),
    # --- retrieval.Retrieve ---------------------------------------------------------------
    case("ret-limit-zero", "retrieval", "Retrieve", retrieve(limit=0), INVALID, field="limit"),
    case("ret-limit-negative", "retrieval", "Retrieve", retrieve(limit=-1), INVALID, field="limit"),
    case("ret-limit-huge", "retrieval", "Retrieve", retrieve(limit=2**31 - 1), INVALID, field="limit"),
    case("ret-price-nan", "retrieval", "Retrieve", retrieve(filters=price(min=NAN)), INVALID, field="filters.price.min"),
    case("ret-price-inf", "retrieval", "Retrieve", retrieve(filters=price(max=INF)), INVALID, field="filters.price.max"),
    case("ret-price-negative", "retrieval", "Retrieve", retrieve(filters=price(min=-5)), INVALID, field="filters.price.min"),
    case("ret-price-min-above-max", "retrieval", "Retrieve", retrieve(filters=price(min=50, max=10)), INVALID, field="filters.price"),
    case("ret-categories-many", "retrieval", "Retrieve", retrieve(filters=common_pb2.Filters(categories=["c"] * 101)), INVALID, field="filters"),
    case("ret-category-long", "retrieval", "Retrieve", retrieve(filters=common_pb2.Filters(categories=["c" * 10_000])), INVALID, field="filters.categories[0]"),
    case("ret-attribute-long", "retrieval", "Retrieve", retrieve(filters=common_pb2.Filters(attributes={"color": "r" * 10_000})), INVALID, field="filters.attributes"),
    case("ret-query-long", "retrieval", "Retrieve", retrieve(query_text="a" * 1001), INVALID, field="query_text"),
    case("ret-query-sql", "retrieval", "Retrieve", retrieve(query_text=SQL), OK),
    case("ret-translation-long", "retrieval", "Retrieve", retrieve(translated_text="a " * 501), INVALID,
         field="translated_text"),
    case("ret-translation-sql", "retrieval", "Retrieve", retrieve(translated_text=SQL), OK),
    case("ret-query-shell", "retrieval", "Retrieve", retrieve(query_text=SHELL), OK),
    case("ret-mode-unknown", "retrieval", "Retrieve", retrieve(mode=99), INVALID, field="mode"),
    case("ret-mode-unknown-browse", "retrieval", "Retrieve", lambda: retrieval_pb2.RetrieveRequest(mode=99), INVALID, field="mode"),
    case("ret-similar-missing", "retrieval", "Retrieve", lambda: retrieval_pb2.RetrieveRequest(similar_to_product_id=MISSING), NOT_FOUND),
    case("ret-similar-empty", "retrieval", "Retrieve", lambda: retrieval_pb2.RetrieveRequest(similar_to_product_id=""), INVALID, field="similar_to_product_id"),
    case("ret-similar-long", "retrieval", "Retrieve", lambda: retrieval_pb2.RetrieveRequest(similar_to_product_id="p" * 129), INVALID, field="similar_to_product_id"),
    case("ret-history-huge", "retrieval", "Retrieve", retrieve(history_product_ids=HUGE_LIST), INVALID, field="history_product_ids"),
    case("ret-history-duplicates", "retrieval", "Retrieve", lambda: retrieval_pb2.RetrieveRequest(history_product_ids=[MISSING] * 50), OK),
    case("ret-exclude-empty-id", "retrieval", "Retrieve", retrieve(exclude_product_ids=[""]), INVALID, field="exclude_product_ids[0]"),
    case("ret-exclude-huge", "retrieval", "Retrieve", retrieve(exclude_product_ids=HUGE_LIST), INVALID, field="exclude_product_ids"),
    case("ret-preferred-huge", "retrieval", "Retrieve", lambda: retrieval_pb2.RetrieveRequest(preferred_product_ids=HUGE_LIST), INVALID, field="preferred_product_ids"),
    case("ret-language-long", "retrieval", "Retrieve", retrieve(language="x" * 10_000), INVALID, field="language"),
    case("ret-request-id-long", "retrieval", "Retrieve", retrieve(request_id="r" * 129), INVALID, field="request_id"),
    case("ret-invalid-utf8", "retrieval", "Retrieve", raw(raw_string_field(2, INVALID_UTF8)), *BAD_WIRE, field="request"),
    case("ret-oversized", "retrieval", "Retrieve", retrieve(query_text=OVERSIZED), TOO_BIG),
    # --- retrieval.UpsertProducts -----------------------------------------------------------
    case("up-empty", "retrieval", "UpsertProducts", upsert(), INVALID, field="products"),
    case("up-too-many", "retrieval", "UpsertProducts", lambda: retrieval_pb2.UpsertProductsRequest(products=[product(id=f"p{i}") for i in range(1001)]), INVALID, field="products"),
    case("up-price-nan", "retrieval", "UpsertProducts", upsert(lambda: product(price=NAN)), INVALID, field="products[0].price"),
    case("up-price-inf", "retrieval", "UpsertProducts", upsert(lambda: product(price=INF)), INVALID, field="products[0].price"),
    case("up-price-negative", "retrieval", "UpsertProducts", upsert(lambda: product(price=-1)), INVALID, field="products[0].price"),
    case("up-id-empty", "retrieval", "UpsertProducts", upsert(lambda: product(id="")), INVALID, field="products[0].id"),
    case("up-id-long", "retrieval", "UpsertProducts", upsert(lambda: product(id="p" * 129)), INVALID, field="products[0].id"),
    case("up-title-empty", "retrieval", "UpsertProducts", upsert(lambda: product(title=" ")), INVALID, field="products[0].title"),
    case("up-title-nul", "retrieval", "UpsertProducts", upsert(lambda: product(title=NUL)), INVALID, field="products[0].title"),
    case("up-description-long", "retrieval", "UpsertProducts", upsert(lambda: product(description="d" * 20_001)), INVALID, field="products[0].description"),
    case("up-attributes-many", "retrieval", "UpsertProducts", upsert(lambda: product(attributes={f"k{i}": "v" for i in range(65)})), INVALID, field="products[0].attributes"),
    case("up-extra-nul", "retrieval", "UpsertProducts", upsert(lambda: product(extra={"note": NUL})), INVALID, field="products[0].extra"),
    case("up-extra-many", "retrieval", "UpsertProducts", upsert(lambda: product(extra={f"k{i}": "v" for i in range(1000)})), INVALID, field="products[0].extra"),
    case("up-extra-long", "retrieval", "UpsertProducts", upsert(lambda: product(extra={"note": "v" * 100_001})), INVALID, field="products[0].extra"),
    case("up-duplicate-ids", "retrieval", "UpsertProducts", upsert(product(id="dup-" + RUN), product(id="dup-" + RUN)), INVALID, field="products[1].id"),
    case("up-sql-shell", "retrieval", "UpsertProducts", upsert(product(id=SQL_PRODUCT_ID, title=SQL, description=SHELL, brand=SQL, attributes={SQL: SHELL}, extra={SHELL: SQL})), OK),
    case("up-invalid-utf8", "retrieval", "UpsertProducts", raw(raw_string_field(1, raw_string_field(2, INVALID_UTF8))), *BAD_WIRE, field="request"),
    case("up-oversized", "retrieval", "UpsertProducts", upsert(lambda: product(description=OVERSIZED)), TOO_BIG),
    # --- retrieval.GetProducts --------------------------------------------------------------
    case("get-sql-product-back", "retrieval", "GetProducts", lambda: retrieval_pb2.GetProductsRequest(product_ids=[SQL_PRODUCT_ID]), OK),
    case("get-missing", "retrieval", "GetProducts", lambda: retrieval_pb2.GetProductsRequest(product_ids=[MISSING, SQL]), OK),
    case("get-duplicates", "retrieval", "GetProducts", lambda: retrieval_pb2.GetProductsRequest(product_ids=[MISSING] * 10), OK),
    case("get-empty-id", "retrieval", "GetProducts", lambda: retrieval_pb2.GetProductsRequest(product_ids=[""]), INVALID, field="product_ids[0]"),
    case("get-too-many", "retrieval", "GetProducts", lambda: retrieval_pb2.GetProductsRequest(product_ids=HUGE_LIST), INVALID, field="product_ids"),
    case("get-invalid-utf8", "retrieval", "GetProducts", raw(raw_string_field(1, INVALID_UTF8)), *BAD_WIRE, field="request"),
    # --- retrieval.DeleteProducts -----------------------------------------------------------
    case("del-empty", "retrieval", "DeleteProducts", lambda: retrieval_pb2.DeleteProductsRequest(), INVALID, field="product_ids"),
    case("del-empty-id", "retrieval", "DeleteProducts", lambda: retrieval_pb2.DeleteProductsRequest(product_ids=[""]), INVALID, field="product_ids[0]"),
    case("del-too-many", "retrieval", "DeleteProducts", lambda: retrieval_pb2.DeleteProductsRequest(product_ids=HUGE_LIST), INVALID, field="product_ids"),
    case("del-missing-sql", "retrieval", "DeleteProducts", lambda: retrieval_pb2.DeleteProductsRequest(product_ids=[MISSING, SQL, "' OR '1'='1"]), OK),
    case("del-sql-product-twice", "retrieval", "DeleteProducts", lambda: retrieval_pb2.DeleteProductsRequest(product_ids=[SQL_PRODUCT_ID, SQL_PRODUCT_ID]), OK),
    case("del-invalid-utf8", "retrieval", "DeleteProducts", raw(raw_string_field(1, INVALID_UTF8)), *BAD_WIRE, field="request"),

    case("ret-facet-unknown", "retrieval", "Retrieve", retrieve(facets=[common_pb2.FacetRequest(field=SQL)]), INVALID, field="facets[0].field"),
    case("ret-facets-many", "retrieval", "Retrieve", retrieve(facets=[common_pb2.FacetRequest(field="brand")] * 21), INVALID, field="facets"),
    case("ret-facet-bounds-nan", "retrieval", "Retrieve", retrieve(facets=[common_pb2.FacetRequest(field="price", price_bounds=[NAN])]), INVALID, field="facets[0].price_bounds"),
    case("ret-facet-values-huge", "retrieval", "Retrieve", retrieve(facets=[common_pb2.FacetRequest(field="brand", max_values=2**31 - 1)]), INVALID, field="facets[0].max_values"),
    case("ret-sort-unknown", "retrieval", "Retrieve", retrieve(sort=common_pb2.Sort(key=99)), INVALID, field="sort.key"),
    case("ret-sort-attribute-shell", "retrieval", "Retrieve", retrieve(sort=common_pb2.Sort(key=common_pb2.SORT_KEY_ATTRIBUTE_ASCENDING, attribute=SHELL)), INVALID, field="sort.attribute"),

    case("rule-empty", "retrieval", "PutRule", lambda: retrieval_pb2.PutRuleRequest(), INVALID, field="rule: is required"),
    case("rule-id-sql", "retrieval", "PutRule", lambda: retrieval_pb2.PutRuleRequest(rule=retrieval_pb2.Rule(id=SQL, action=retrieval_pb2.RULE_ACTION_SYNONYM, terms=["a", "b"])), INVALID, field="rule.id"),
    case("rule-action-unknown", "retrieval", "PutRule", lambda: retrieval_pb2.PutRuleRequest(rule=retrieval_pb2.Rule(id="r1", action=99)), INVALID, field="rule.action"),
    case("rule-boost-nan", "retrieval", "PutRule", lambda: retrieval_pb2.PutRuleRequest(rule=retrieval_pb2.Rule(id="r1", action=retrieval_pb2.RULE_ACTION_BOOST, attribute="color", value="red", boost=NAN)), INVALID, field="rule.boost"),
    case("rule-position-negative", "retrieval", "PutRule", lambda: retrieval_pb2.PutRuleRequest(rule=retrieval_pb2.Rule(id="r1", action=retrieval_pb2.RULE_ACTION_PIN, product_ids=[MISSING], position=-1)), INVALID, field="rule.position"),
    case("rule-product-missing", "retrieval", "PutRule", lambda: retrieval_pb2.PutRuleRequest(rule=retrieval_pb2.Rule(id="r1", action=retrieval_pb2.RULE_ACTION_HIDE, product_ids=[MISSING])), INVALID, field="rule.product_ids[0]"),
    case("rule-hide-huge", "retrieval", "PutRule", lambda: retrieval_pb2.PutRuleRequest(rule=retrieval_pb2.Rule(id="r1", action=retrieval_pb2.RULE_ACTION_HIDE, product_ids=HUGE_LIST)), INVALID, field="rule.product_ids"),
    case("rule-note-nul", "retrieval", "PutRule", lambda: retrieval_pb2.PutRuleRequest(rule=retrieval_pb2.Rule(id="r1", action=retrieval_pb2.RULE_ACTION_SYNONYM, terms=["a", "b"], note="n" * 501)), INVALID, field="rule.note"),
    case("rule-synonym-sql-shell", "retrieval", "PutRule", lambda: retrieval_pb2.PutRuleRequest(rule=retrieval_pb2.Rule(id=f"hostile-{RUN}", action=retrieval_pb2.RULE_ACTION_SYNONYM, terms=[SQL[:100], SHELL[:100]], note=SQL)), OK),
    case("rule-invalid-utf8", "retrieval", "PutRule", raw(raw_string_field(1, raw_string_field(1, INVALID_UTF8))), *BAD_WIRE, field="request"),
    case("rule-delete-sql-shell", "retrieval", "DeleteRule", lambda: retrieval_pb2.DeleteRuleRequest(rule_id=f"hostile-{RUN}"), OK),
    case("rule-delete-missing", "retrieval", "DeleteRule", lambda: retrieval_pb2.DeleteRuleRequest(rule_id=SQL), NOT_FOUND),
    case("rule-delete-empty", "retrieval", "DeleteRule", lambda: retrieval_pb2.DeleteRuleRequest(), INVALID, field="rule_id"),
    case("rule-list", "retrieval", "ListRules", lambda: retrieval_pb2.ListRulesRequest(), OK),
    # --- ranking.Rank -----------------------------------------------------------------------
    case("rank-limit-zero", "ranking", "Rank", rank(limit=0), INVALID, field="limit"),
    case("rank-limit-huge", "ranking", "Rank", rank(limit=101), INVALID, field="limit"),
    case("rank-offset-negative", "ranking", "Rank", rank(offset=-1), INVALID, field="offset"),
    case("rank-offset-huge", "ranking", "Rank", rank(offset=2**31 - 1), OK),
    case("rank-policy-unknown", "ranking", "Rank", rank(policy=99), INVALID, field="policy"),
    case("rank-head-version-negative", "ranking", "Rank", rank(ctr_head_version=-1), INVALID, field="ctr_head_version"),
    case("rank-head-version-missing", "ranking", "Rank", rank(ctr_head_version=99_999), NOT_FOUND),
    case("rank-candidates-many", "ranking", "Rank", rank(candidates=[candidate(f"c{i}") for i in range(2001)]), INVALID, field="candidates"),
    case("rank-candidates-none", "ranking", "Rank", rank(candidates=[]), OK),
    case("rank-candidates-duplicate", "ranking", "Rank", rank(candidates=[candidate("a")] * 5), OK),
    case("rank-candidates-unknown", "ranking", "Rank", rank(candidates=[candidate(MISSING), candidate(SQL)]), OK),
    case("rank-candidate-id-empty", "ranking", "Rank", rank(candidates=[candidate("")]), INVALID, field="candidates[0].product.id"),
    case("rank-score-nan", "ranking", "Rank", rank(candidates=[candidate("a", dense_score=NAN)]), INVALID, field="candidates[0].dense_score"),
    case("rank-score-inf", "ranking", "Rank", rank(candidates=[candidate("a", lexical_score=INF)]), INVALID, field="candidates[0].lexical_score"),
    case("rank-score-negative-inf", "ranking", "Rank", rank(candidates=[candidate("a", fused_score=-INF)]), INVALID, field="candidates[0].fused_score"),
    case("rank-preferred-brands-many", "ranking", "Rank", rank(preferred_brands=["b"] * 10_000), INVALID, field="preferred_brands"),
    case("rank-preferred-attributes-many", "ranking", "Rank", rank(preferred_attributes={f"k{i}": "v" for i in range(1000)}), INVALID, field="preferred_attributes"),
    case("rank-query-long", "ranking", "Rank", rank(query="q" * 10_000), INVALID, field="query"),
    case("rank-sql", "ranking", "Rank", rank(query=SQL, user_id=SQL, preferred_brands=[SHELL]), OK),
    case("rank-invalid-utf8", "ranking", "Rank", raw(raw_string_field(2, INVALID_UTF8)), *BAD_WIRE, field="request"),
    case("rank-oversized", "ranking", "Rank", rank(query=OVERSIZED), TOO_BIG),
    # --- events.LogEvents -------------------------------------------------------------------
    case("log-shown-impression-sql", "events", "LogEvents", log_events([impression(request_id=SHOWN_REQUEST, product_ids=SHOWN_PRODUCTS, query=SQL, user_id=SQL)]), OK),
    case("log-unknown-request", "events", "LogEvents", log_events(interactions=[lambda: interaction(request_id=MISSING)]), NOT_FOUND),
    case("log-product-not-shown", "events", "LogEvents", log_events(interactions=[lambda: interaction(product_id=MISSING)]), INVALID, field="interactions[0].position"),
    case("log-empty", "events", "LogEvents", log_events(), INVALID, field="impressions"),
    case("log-too-many", "events", "LogEvents", log_events(interactions=[interaction] * 1001), INVALID, field="interactions"),
    case("log-surface-unknown", "events", "LogEvents", log_events([lambda: impression(surface=99)]), INVALID, field="impressions[0].surface"),
    case("log-type-unknown", "events", "LogEvents", log_events(interactions=[lambda: interaction(type=99)]), INVALID, field="interactions[0].type"),
    case("log-value-nan", "events", "LogEvents", log_events(interactions=[lambda: interaction(value=NAN)]), INVALID, field="interactions[0].value"),
    case("log-value-inf", "events", "LogEvents", log_events(interactions=[lambda: interaction(value=INF)]), INVALID, field="interactions[0].value"),
    case("log-value-negative", "events", "LogEvents", log_events(interactions=[lambda: interaction(value=-1)]), INVALID, field="interactions[0].value"),
    case("log-quantity-negative", "events", "LogEvents", log_events(interactions=[lambda: interaction(quantity=-3)]), INVALID, field="interactions[0].quantity"),
    case("log-position-negative", "events", "LogEvents", log_events(interactions=[lambda: interaction(position=-1)]), INVALID, field="interactions[0].position"),
    case("log-first-position-negative", "events", "LogEvents", log_events([lambda: impression(first_position=-1)]), INVALID, field="impressions[0].first_position"),
    case("log-event-id-empty", "events", "LogEvents", log_events([lambda: impression(event_id="")]), INVALID, field="impressions[0].event_id"),
    case("log-event-id-long", "events", "LogEvents", log_events(interactions=[lambda: interaction(event_id="e" * 129)]), INVALID, field="interactions[0].event_id"),
    case("log-product-ids-huge", "events", "LogEvents", log_events([lambda: impression(product_ids=HUGE_LIST)]), INVALID, field="impressions[0].product_ids"),
    case("log-query-long", "events", "LogEvents", log_events([lambda: impression(query="q" * 2001)]), INVALID, field="impressions[0].query"),
    case("log-propensity-nan", "events", "LogEvents", log_events([lambda: impression(product_ids=["p1", "p2"], propensities=[0.5, NAN])]), INVALID, field="impressions[0].propensities[1]"),
    case("log-propensity-zero", "events", "LogEvents", log_events([lambda: impression(product_ids=["p1"], propensities=[0.0])]), INVALID, field="impressions[0].propensities[0]"),
    case("log-pool-without-propensities", "events", "LogEvents", log_events([lambda: impression(product_ids=["p1"], exploration_pool=["p1"])]), INVALID, field="impressions[0].exploration_pool"),
    case("log-pool-features-misaligned", "events", "LogEvents", log_events([lambda: impression(product_ids=["p1"], propensities=[0.5], exploration_pool=["p1", "p2"], exploration_pool_features=[events_pb2.ProductFeatures()])]), INVALID, field="impressions[0].exploration_pool_features"),
    case("log-pool-missing-shown", "events", "LogEvents", log_events([lambda: impression(product_ids=["p1"], propensities=[0.5], exploration_pool=["p2"])]), INVALID, field="impressions[0].exploration_pool"),
    case("log-feature-nan", "events", "LogEvents", log_events([lambda: impression(product_ids=["p1"], features=[events_pb2.ProductFeatures(values={"bm25": NAN})])]), INVALID, field="impressions[0].features[0]"),
    case("log-features-misaligned", "events", "LogEvents", log_events([lambda: impression(features=[events_pb2.ProductFeatures()] * 3)]), INVALID, field="impressions[0].features"),
    case("log-future", "events", "LogEvents", log_events(interactions=[lambda: interaction(occurred_at=stamp(4_000_000_000))]), INVALID, field="interactions[0].occurred_at"),
    case("log-year-10000", "events", "LogEvents", log_events(interactions=[lambda: interaction(occurred_at=stamp(253_402_300_800))]), INVALID, field="interactions[0].occurred_at"),
    case("log-negative-nanos", "events", "LogEvents", log_events(interactions=[lambda: interaction(occurred_at=stamp(1_700_000_000, -1))]), INVALID, field="interactions[0].occurred_at"),
    case("log-nul-in-id", "events", "LogEvents", log_events(interactions=[lambda: interaction(user_id=NUL)]), INVALID, field="interactions[0].user_id"),
    case("log-nul-in-query", "events", "LogEvents", log_events([lambda: impression(query=NUL)]), INVALID, field="impressions[0].query"),
    case("log-duplicate-event-ids", "events", "LogEvents", log_events(interactions=[interaction(event_id=uid("same-"))] * 3), OK),
    case("log-sql-shell", "events", "LogEvents", log_events([lambda: impression(query=SHELL, product_ids=[SQL, SHELL[:100]])], [lambda: interaction(product_id=SQL, position=2, user_id=SQL, session_id=SHELL[:100])]), OK),
    case("log-invalid-utf8", "events", "LogEvents", raw(raw_string_field(2, raw_string_field(1, INVALID_UTF8))), *BAD_WIRE, field="request"),
    case("log-oversized", "events", "LogEvents", log_events([lambda: impression(query=OVERSIZED)]), TOO_BIG),
    # --- events.StreamEvents (bidirectional stream) ------------------------------------------
    case("stream-no-batches", "events", "StreamEvents", stream(), OK, streaming=True),
    case("stream-good", "events", "StreamEvents", stream(batch([impression]), batch(interactions=[interaction])), OK, streaming=True),
    case("stream-empty-batch", "events", "StreamEvents", stream(batch([impression]), batch()), INVALID, field="impressions", streaming=True),
    case("stream-value-nan", "events", "StreamEvents", stream(batch(interactions=[lambda: interaction(value=NAN)])), INVALID, field="interactions[0].value", streaming=True),
    case("stream-type-unknown", "events", "StreamEvents", stream(batch(interactions=[lambda: interaction(type=42)])), INVALID, field="interactions[0].type", streaming=True),
    case("stream-too-many", "events", "StreamEvents", stream(batch(interactions=[interaction] * 1001)), INVALID, field="interactions", streaming=True),
    case("stream-nul", "events", "StreamEvents", stream(batch([lambda: impression(session_id=NUL)])), INVALID, field="impressions[0].session_id", streaming=True),
    case("stream-invalid-utf8", "events", "StreamEvents", lambda: [raw_string_field(2, raw_string_field(1, INVALID_UTF8))], INVALID, field="request", streaming=True),
    case("stream-oversized", "events", "StreamEvents", stream(batch([lambda: impression(query=OVERSIZED)])), TOO_BIG, streaming=True),
    # --- events.GetMetrics ------------------------------------------------------------------
    case("metrics-grouping-unspecified", "events", "GetMetrics", metrics(group_by=0), INVALID, field="group_by"),
    case("metrics-grouping-unknown", "events", "GetMetrics", metrics(group_by=99), INVALID, field="group_by"),
    case("metrics-limit-zero", "events", "GetMetrics", metrics(limit=0), INVALID, field="limit"),
    case("metrics-limit-negative", "events", "GetMetrics", metrics(limit=-5), INVALID, field="limit"),
    case("metrics-limit-huge", "events", "GetMetrics", metrics(limit=2**31 - 1), INVALID, field="limit"),
    case("metrics-request-id-long", "events", "GetMetrics", metrics(request_id="r" * 129), INVALID, field="request_id"),
    case("metrics-request-id-nul", "events", "GetMetrics", metrics(request_id=NUL), INVALID, field="request_id"),
    case("metrics-request-id-sql", "events", "GetMetrics", metrics(request_id=SQL), OK),
    case("metrics-since-after-until", "events", "GetMetrics", metrics(since=stamp(1_700_000_000), until=stamp(1_600_000_000)), INVALID, field="since"),
    case("metrics-since-year-10000", "events", "GetMetrics", metrics(since=stamp(253_402_300_800)), INVALID, field="since"),
    case("metrics-invalid-utf8", "events", "GetMetrics", raw(b"\x08\x01", raw_string_field(2, INVALID_UTF8)), *BAD_WIRE, field="request"),
    # --- events.ListPopularProducts ---------------------------------------------------------
    case("popular-window-zero", "events", "ListPopularProducts", lambda: events_pb2.ListPopularProductsRequest(window_days=0), INVALID, field="window_days"),
    case("popular-window-negative", "events", "ListPopularProducts", lambda: events_pb2.ListPopularProductsRequest(window_days=-30), INVALID, field="window_days"),
    case("popular-window-huge", "events", "ListPopularProducts", lambda: events_pb2.ListPopularProductsRequest(window_days=2**31 - 1), INVALID, field="window_days"),
    case("popular-limit-huge", "events", "ListPopularProducts", lambda: events_pb2.ListPopularProductsRequest(limit=10_001), INVALID, field="limit"),
    case("popular-since-without-until", "events", "ListPopularProducts", lambda: events_pb2.ListPopularProductsRequest(since=stamp(1_700_000_000)), INVALID, field="since"),
    case("popular-until-before-since", "events", "ListPopularProducts", lambda: events_pb2.ListPopularProductsRequest(since=stamp(1_700_000_000), until=stamp(1_600_000_000)), INVALID, field="until"),
    case("popular-defaults", "events", "ListPopularProducts", lambda: events_pb2.ListPopularProductsRequest(), OK),
    # --- events.ListUserHistory -------------------------------------------------------------
    case("history-no-shopper", "events", "ListUserHistory", lambda: events_pb2.ListUserHistoryRequest(), INVALID, field="user_id"),
    case("history-user-long", "events", "ListUserHistory", lambda: events_pb2.ListUserHistoryRequest(user_id="u" * 129), INVALID, field="user_id"),
    case("history-user-nul", "events", "ListUserHistory", lambda: events_pb2.ListUserHistoryRequest(user_id=NUL), INVALID, field="user_id"),
    case("history-session-nul", "events", "ListUserHistory", lambda: events_pb2.ListUserHistoryRequest(session_id=NUL), INVALID, field="session_id"),
    case("history-limit-huge", "events", "ListUserHistory", lambda: events_pb2.ListUserHistoryRequest(user_id="u", limit=201), INVALID, field="limit"),
    case("history-limit-negative", "events", "ListUserHistory", lambda: events_pb2.ListUserHistoryRequest(user_id="u", limit=-1), INVALID, field="limit"),
    case("history-unknown-user-sql", "events", "ListUserHistory", lambda: events_pb2.ListUserHistoryRequest(user_id=SQL, session_id=SHELL[:100]), OK),
    case("history-invalid-utf8", "events", "ListUserHistory", raw(raw_string_field(1, INVALID_UTF8)), *BAD_WIRE, field="request"),
    # --- gateway.Search ---------------------------------------------------------------------
    case("search-empty", "gateway", "Search", search(""), INVALID, field="query"),
    case("search-facet-unknown", "gateway", "Search", lambda: gateway_pb2.SearchRequest(query="wine", facets=[common_pb2.FacetRequest(field="attributes." + SHELL)]), INVALID, field="facets[0].field"),
    case("search-facets-many", "gateway", "Search", lambda: gateway_pb2.SearchRequest(query="wine", facets=[common_pb2.FacetRequest(field="brand")] * 21), INVALID, field="facets"),
    case("search-sort-unknown", "gateway", "Search", lambda: gateway_pb2.SearchRequest(query="wine", sort=common_pb2.Sort(key=-7)), INVALID, field="sort.key"),
    case("search-sort-attribute-missing", "gateway", "Search", lambda: gateway_pb2.SearchRequest(query="wine", sort=common_pb2.Sort(key=common_pb2.SORT_KEY_ATTRIBUTE_DESCENDING)), INVALID, field="sort.attribute"),
    case("search-control-only", "gateway", "Search", search("\x00\x07\x1b"), INVALID, field="query"),
    case("search-513-chars", "gateway", "Search", search("a" * 513), INVALID, field="query"),
    case("search-expands-under-nfkc", "gateway", "Search", search("\ufdfa" * 512), INVALID, field="query: must be at most 512 characters once normalised"),
    case("search-page-size-zero", "gateway", "Search", search(page_size=0), INVALID, field="page_size"),
    case("search-page-size-negative", "gateway", "Search", search(page_size=-1), INVALID, field="page_size"),
    case("search-page-size-huge", "gateway", "Search", search(page_size=2**31 - 1), INVALID, field="page_size"),
    case("search-page-token-garbage", "gateway", "Search", search(page_token="'; DROP TABLE x;--"), INVALID, field="page_token"),
    case("search-price-nan", "gateway", "Search", search(filters=price(max=NAN)), INVALID, field="filters.price.max"),
    case("search-price-negative", "gateway", "Search", search(filters=price(min=-1)), INVALID, field="filters.price.min"),
    case("search-price-inverted", "gateway", "Search", search(filters=price(min=9, max=1)), INVALID, field="filters.price"),
    case("search-categories-many", "gateway", "Search", search(filters=common_pb2.Filters(categories=["c"] * 101)), INVALID, field="filters"),
    case("search-request-id-unprintable", "gateway", "Search", search(request_id="a\nb"), INVALID, field="request_id"),
    case("search-user-id-nul", "gateway", "Search", search(user_id=NUL), INVALID, field="user_id"),
    case("search-locale-long", "gateway", "Search", search(locale="x" * 10_000), INVALID, field="locale"),
    case("search-sql", "gateway", "Search", search(SQL), OK),
    case("search-shell", "gateway", "Search", search(SHELL), OK),
    case("search-price-overflow", "gateway", "Search", search("wine under $1e309"), OK),
    case("search-negative-price-text", "gateway", "Search", search("wine $-5"), OK),
    case("search-invalid-utf8", "gateway", "Search", raw(raw_string_field(1, INVALID_UTF8)), *BAD_WIRE, field="request"),
    case("search-oversized", "gateway", "Search", search(OVERSIZED), TOO_BIG),
    # --- gateway.Recommend ------------------------------------------------------------------
    case("rec-mode-unknown", "gateway", "Recommend", recommend(mode=99), INVALID, field="mode"),
    case("rec-similar-no-product", "gateway", "Recommend", recommend(mode=gateway_pb2.RECOMMEND_MODE_SIMILAR_ITEMS), INVALID, field="product_id"),
    case("rec-similar-missing", "gateway", "Recommend", recommend(mode=gateway_pb2.RECOMMEND_MODE_SIMILAR_ITEMS, product_id=MISSING), NOT_FOUND),
    case("rec-popular-no-category", "gateway", "Recommend", recommend(mode=gateway_pb2.RECOMMEND_MODE_POPULAR_IN_CATEGORY), INVALID, field="category"),
    case("rec-popular-unknown-category", "gateway", "Recommend", recommend(mode=gateway_pb2.RECOMMEND_MODE_POPULAR_IN_CATEGORY, category=SQL), INVALID, field="category"),
    case("rec-cart-empty", "gateway", "Recommend", recommend(mode=gateway_pb2.RECOMMEND_MODE_COMPLETE_CART), INVALID, field="cart_product_ids"),
    case("rec-history-huge", "gateway", "Recommend", recommend(history_product_ids=HUGE_LIST), INVALID, field="history_product_ids"),
    case("rec-history-empty-id", "gateway", "Recommend", recommend(history_product_ids=["ok", ""]), INVALID, field="history_product_ids[1]"),
    case("rec-history-unknown-duplicates", "gateway", "Recommend", recommend(history_product_ids=[MISSING] * 20), NOT_FOUND),
    case("rec-page-size-zero", "gateway", "Recommend", recommend(page_size=0), INVALID, field="page_size"),
    case("rec-price-inf", "gateway", "Recommend", recommend(filters=price(min=INF)), INVALID, field="filters.price.min"),
    case("rec-invalid-utf8", "gateway", "Recommend", raw(b"\x08\x03", raw_string_field(7, INVALID_UTF8)), *BAD_WIRE, field="request"),
    # --- gateway.Track ----------------------------------------------------------------------
    case("track-empty", "gateway", "Track", track(), INVALID, field="interactions"),
    case("track-too-many", "gateway", "Track", track(*[interaction] * 501), INVALID, field="interactions"),
    case("track-type-unknown", "gateway", "Track", track(lambda: interaction(type=7)), INVALID, field="interactions[0].type"),
    case("track-value-nan", "gateway", "Track", track(lambda: interaction(value=NAN)), INVALID, field="interactions[0].value"),
    case("track-position-zero", "gateway", "Track", track(lambda: interaction(position=0)), INVALID, field="interactions[0].position"),
    case("track-nul", "gateway", "Track", track(lambda: interaction(product_id=NUL)), INVALID, field="interactions[0].product_id"),
    case("track-sql-duplicates", "gateway", "Track", track(*[interaction(event_id=uid("t-"), product_id=SQL, position=2)] * 2), OK),
    case("track-invalid-utf8", "gateway", "Track", raw(raw_string_field(1, raw_string_field(1, INVALID_UTF8))), *BAD_WIRE, field="request"),
    # --- gateway.Suggest ------------------------------------------------------------------
    case("suggest-empty", "gateway", "Suggest", suggest_gw(""), INVALID, field="prefix: is required"),
    case("suggest-whitespace", "gateway", "Suggest", suggest_gw(" \t\n\u3000"), INVALID, field="prefix: is required"),
    case("suggest-101-chars", "gateway", "Suggest", suggest_gw("a" * 101), INVALID, field="prefix: must be at most 100"),
    case("suggest-expands-under-nfkc", "gateway", "Suggest", suggest_gw("\ufdfa" * 100), INVALID, field="prefix: must be at most 100 characters once normalised"),
    case("suggest-limit-0", "gateway", "Suggest", suggest_gw(limit=0), INVALID, field="limit: must be between 1 and 20"),
    case("suggest-limit-huge", "gateway", "Suggest", suggest_gw(limit=2**31 - 1), INVALID, field="limit"),
    case("suggest-locale-long", "gateway", "Suggest", suggest_gw(locale="x" * 36), INVALID, field="locale"),
    case("suggest-request-id-nul", "gateway", "Suggest", suggest_gw(request_id=NUL), INVALID, field="request_id"),
    case("suggest-sql", "gateway", "Suggest", suggest_gw(SQL[:100]), OK),
    case("suggest-chinese", "gateway", "Suggest", suggest_gw("绿"), OK),
    case("suggest-invalid-utf8", "gateway", "Suggest", raw(raw_string_field(1, INVALID_UTF8)), *BAD_WIRE, field="request"),
]


def rpcs_in_protos() -> set[tuple[str, str]]:
    """(service, rpc) of every RPC the five protos declare, read from the descriptors."""
    from shelfwise.events.v1 import events_pb2 as events
    from shelfwise.gateway.v1 import gateway_pb2 as gateway
    from shelfwise.query_understanding.v1 import query_understanding_pb2 as qu
    from shelfwise.ranking.v1 import ranking_pb2 as ranking
    from shelfwise.retrieval.v1 import retrieval_pb2 as retrieval

    modules = {"query_understanding": qu, "retrieval": retrieval, "ranking": ranking, "events": events, "gateway": gateway}
    found = set()
    for service, module in modules.items():
        for descriptor in module.DESCRIPTOR.services_by_name.values():
            assert descriptor.full_name == SERVICES[service]
            found |= {(service, method.name) for method in descriptor.methods}
    return found


def test_the_table_covers_every_rpc_of_every_service():
    covered = {(c.service, c.rpc) for c in CASES}
    assert covered == rpcs_in_protos()
    assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"
    for c in CASES:
        assert c.expected, c.id
        assert not {INTERNAL, grpc.StatusCode.UNKNOWN} & c.expected or c.reason, f"{c.id}: needs a stated reason"
        assert (INVALID in c.expected) == bool(c.field), f"{c.id}: INVALID_ARGUMENT cases name their field"


@dataclass
class Outcome:
    code: grpc.StatusCode
    details: str = ""
    responses: list = field(default_factory=list)


async def send(channel: grpc.aio.Channel, c: Case) -> Outcome:
    method = f"/{SERVICES[c.service]}/{c.rpc}"
    request = c.build()
    try:
        if c.streaming:
            call = channel.stream_stream(method)(iter(request), timeout=60)
            responses = [response async for response in call]
            return Outcome(await call.code(), await call.details() or "", responses)
        await channel.unary_unary(method)(request, timeout=60)
        return Outcome(OK)
    except grpc.aio.AioRpcError as error:
        return Outcome(error.code(), error.details() or "")


@pytest.fixture(scope="module")
async def outcomes(system) -> dict[str, Outcome]:
    """Every case sent once, in table order (the SQL product is upserted, read, then deleted)."""
    channels = {name: create_channel(system.address(name), CLIENT_MAX_MESSAGE_BYTES) for name in SERVICES}
    try:
        return {c.id: await send(channels[c.service], c) for c in CASES}
    finally:
        for channel in channels.values():
            await channel.close()


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
async def test_hostile_request_gets_the_expected_status(outcomes, c: Case):
    outcome = outcomes[c.id]
    assert outcome.code in c.expected, f"{c.service}.{c.rpc} [{c.id}]: {outcome.code.name} {outcome.details!r}"
    assert "Traceback" not in outcome.details and 'File "' not in outcome.details
    if outcome.code == grpc.StatusCode.UNKNOWN:
        assert outcome.details.startswith("Unexpected <class 'google.protobuf.message.DecodeError'>"), outcome.details
    if outcome.code == INVALID:
        # The message names the field and says what to fix, as "<field>: <rule>".
        assert c.field in outcome.details, outcome.details
        fieldname, _, rule = outcome.details.partition(": ")
        assert rule, outcome.details


def test_no_case_produced_internal_or_unknown_without_a_stated_reason(outcomes):
    unexpected = {
        c.id: (outcomes[c.id].code.name, outcomes[c.id].details)
        for c in CASES
        if outcomes[c.id].code in {INTERNAL, grpc.StatusCode.UNKNOWN} and not c.reason
    }
    assert not unexpected


async def test_the_sql_product_round_tripped_and_was_deleted(outcomes, system):
    # The metacharacters were stored as data (parameterised SQL), read back, then deleted.
    assert outcomes["up-sql-shell"].code == OK
    async with create_channel(system.address("retrieval")) as channel:
        stub = channel.unary_unary(
            f"/{SERVICES['retrieval']}/GetProducts",
            request_serializer=retrieval_pb2.GetProductsRequest.SerializeToString,
            response_deserializer=retrieval_pb2.GetProductsResponse.FromString,
        )
        response = await stub(retrieval_pb2.GetProductsRequest(product_ids=[SQL_PRODUCT_ID]))
    assert list(response.not_found_ids) == [SQL_PRODUCT_ID]


async def test_every_service_still_serves_and_answers_after_the_table(outcomes, system, gateway):
    for name, full_name in SERVICES.items():
        async with create_channel(system.address(name)) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", full_name):
                response = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert response.status == health_pb2.HealthCheckResponse.SERVING, (name, service)
    response = await gateway.Search(gateway_pb2.SearchRequest(query="red wine", page_size=3), timeout=30)
    assert len(response.results) == 3 and not response.degraded_stages
