"""What a shop's search page needs from the API, through the real servers holding the demo
catalogue: facet counts (checked against a brute-force count), sort orders across pages,
merchandising rules (pin, hide, bury, boost, synonyms) live within seconds, and the business
rules of Recommend (never what the shopper bought, never out of stock).

Rules written here are scoped to queries and categories no other test uses, and deleted at the
end of each test, so the session's shared system is left as it was found.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter

import grpc
import pytest
from shelfwise.common.v1 import common_pb2
from shelfwise.events.v1 import events_pb2
from shelfwise.gateway.v1 import gateway_pb2
from shelfwise.query_understanding.v1 import query_understanding_pb2 as qu_pb2
from shelfwise.query_understanding.v1 import query_understanding_pb2_grpc as qu_grpc
from shelfwise.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc

from services.common.channels import create_channel
from services.common.text import facet_form
from services.local.catalog_import import demo_catalog_path, read_catalog_file
from tests.support.eventually import eventually

PIN, HIDE, BURY, BOOST, SYNONYM = (
    retrieval_pb2.RULE_ACTION_PIN, retrieval_pb2.RULE_ACTION_HIDE, retrieval_pb2.RULE_ACTION_BURY,
    retrieval_pb2.RULE_ACTION_BOOST, retrieval_pb2.RULE_ACTION_SYNONYM,
)
CATALOG = {p.id: p for p in read_catalog_file(demo_catalog_path())}


@pytest.fixture
async def retrieval(system):
    channel = create_channel(system.address("retrieval"), 64 * 1024 * 1024)
    stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
    written: list[str] = []
    stub.written = written
    yield stub
    for rule_id in written:
        try:
            await stub.DeleteRule(retrieval_pb2.DeleteRuleRequest(rule_id=rule_id))
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.NOT_FOUND
    await channel.close()


async def put_rule(retrieval, **fields) -> retrieval_pb2.PutRuleResponse:
    rule = retrieval_pb2.Rule(id=f"t-{uuid.uuid4().hex[:10]}", **fields)
    retrieval.written.append(rule.id)
    return await retrieval.PutRule(retrieval_pb2.PutRuleRequest(rule=rule))


def attribute_of(product, name: str) -> str:
    return next((v for k, v in product.attributes.items() if facet_form(k) == name), "")


def brute_force(products, field: str, request_filters: common_pb2.Filters, bounds=()) -> Counter:
    """value (facet form, or bucket index for price) -> count over `products`."""
    counts: Counter = Counter()
    for product in products:
        if field == "price":
            counts[sum(1 for b in bounds if product.price >= b)] += 1
        elif field == "category":
            counts[facet_form(product.category)] += bool(product.category)
        elif field == "brand":
            counts[facet_form(product.brand)] += bool(product.brand)
        else:
            value = attribute_of(product, field.removeprefix("attributes."))
            if value:
                counts[facet_form(value)] += 1
    return +counts


def passes(product, filters: common_pb2.Filters) -> bool:
    if filters.categories and facet_form(product.category) not in {facet_form(c) for c in filters.categories}:
        return False
    if filters.brands and facet_form(product.brand) not in {facet_form(b) for b in filters.brands}:
        return False
    if filters.price.HasField("min") and product.price < filters.price.min:
        return False
    if filters.price.HasField("max") and product.price > filters.price.max:
        return False
    return all(facet_form(attribute_of(product, facet_form(k))) == facet_form(v) for k, v in filters.attributes.items())


def filters_on(filters: common_pb2.Filters, field: str) -> bool:
    """Whether the caller's filters constrain this facet's field."""
    if field == "category":
        return bool(filters.categories)
    if field == "brand":
        return bool(filters.brands)
    if field == "price":
        return filters.price.HasField("min") or filters.price.HasField("max")
    return any(facet_form(k) == field.removeprefix("attributes.") for k in filters.attributes)


def without(filters: common_pb2.Filters, field: str) -> common_pb2.Filters:
    relaxed = common_pb2.Filters()
    relaxed.CopyFrom(filters)
    if field == "category":
        relaxed.ClearField("categories")
    elif field == "brand":
        relaxed.ClearField("brands")
    elif field == "price":
        relaxed.ClearField("price")
    else:
        name = field.removeprefix("attributes.")
        for key in [k for k in relaxed.attributes if facet_form(k) == name]:
            del relaxed.attributes[key]
    return relaxed


def random_filters(rng: random.Random) -> common_pb2.Filters:
    products = list(CATALOG.values())
    filters = common_pb2.Filters()
    anchor = rng.choice(products)
    if rng.random() < 0.5:
        filters.categories.append(anchor.category)
        if rng.random() < 0.5:
            filters.categories.append(rng.choice(products).category)
    if rng.random() < 0.3 and anchor.brand:
        filters.brands.append(anchor.brand)
    if rng.random() < 0.4:
        filters.price.max = round(anchor.price * rng.uniform(1.0, 3.0), 2)
    if rng.random() < 0.3 and attribute_of(anchor, "color"):
        filters.attributes["color"] = attribute_of(anchor, "color")
    return filters


FACETS = ("category", "brand", "price", "attributes.color", "attributes.material")
BOUNDS = (10.0, 25.0, 50.0, 100.0)


def facet_requests() -> list[common_pb2.FacetRequest]:
    return [
        common_pb2.FacetRequest(field=f, max_values=100, price_bounds=BOUNDS if f == "price" else ()) for f in FACETS
    ]


async def matching_products(system, retrieval, query: str, filters: common_pb2.Filters, relaxed: str | None):
    """The matching set the gateway counts over, found independently: query understanding's
    reading of the query (its price merged into the filters), less the `relaxed` facet's filter
    (disjunctive counts), then (text) retrieval's candidates for it, or (no text) None, meaning
    "every product passing the filters" (counted over the catalogue file); and those filters."""
    from services.gateway.search import search_retrieve_request

    async with create_channel(system.address("query_understanding"), 8 * 1024 * 1024) as channel:
        understood = await qu_grpc.QueryUnderstandingServiceStub(channel).Understand(qu_pb2.UnderstandRequest(query=query))
    retrieve = search_retrieve_request(understood, filters, "brute-force", 200)
    if relaxed:
        retrieve.filters.CopyFrom(without(retrieve.filters, relaxed))
    if not retrieve.query_text:
        return None, retrieve.filters
    response = await retrieval.Retrieve(retrieve)
    return [c.product for c in response.candidates], retrieve.filters


async def catalog_of_record(database) -> list:
    """Every product as PostgreSQL (the system of record) holds it now: other tests add some."""
    import json
    from types import SimpleNamespace

    rows = await database.fetch("SELECT id, brand, category, price, attributes::text AS attributes FROM products")
    return [SimpleNamespace(id=r["id"], brand=r["brand"], category=r["category"], price=r["price"],
                            attributes=json.loads(r["attributes"])) for r in rows]


async def test_facet_counts_equal_a_brute_force_count_for_random_queries_and_filters(system, gateway, retrieval, database):
    rng = random.Random(28)
    catalog = await catalog_of_record(database)
    queries = ["red wine", "running shoes", "tea", "something warm to wear", "under $30", "headphones under $200",
               "coffee", "cheap snacks"]
    checked = 0
    for case in range(12):
        query, filters = rng.choice(queries), random_filters(rng)
        try:
            response = await gateway.Search(gateway_pb2.SearchRequest(
                query=query, filters=filters, page_size=5, facets=facet_requests()
            ))
        except grpc.aio.AioRpcError as error:  # a random attribute value may name no product of the filters
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
            continue
        assert [f.field for f in response.facets] == list(FACETS)
        for facet in response.facets:
            own = facet.field
            assert facet.disjunctive == filters_on(filters, own), (query, own)
            products, merged = await matching_products(
                system, retrieval, query, filters, own if facet.disjunctive else None
            )
            if products is None:
                products = [p for p in catalog if passes(p, merged)]
            expected = brute_force(products, own, merged, BOUNDS)
            if own == "price":
                got = Counter({sum(1 for b in BOUNDS if v.HasField("min") and v.min >= b): v.count for v in facet.values})
                assert got == expected, (case, query, own, filters)
            else:
                got = Counter({facet_form(v.value): v.count for v in facet.values})
                assert facet.distinct_values == len(expected) and facet.products_with_value == sum(expected.values())
                assert len(got) == min(100, len(expected))
                assert all(expected[value] == count for value, count in got.items()), (case, query, own, filters)
                left_out = [count for value, count in expected.items() if value not in got]
                assert not left_out or max(left_out) <= min(got.values()), "the most frequent values come first"
            checked += 1
    assert checked >= 30, "too few facets were checked: the random cases failed validation"


async def test_facets_mark_selected_values_and_count_other_brands(gateway):
    filters = common_pb2.Filters(categories=["red wine"])
    response = await gateway.Search(gateway_pb2.SearchRequest(
        query="under $100", filters=filters, facets=[common_pb2.FacetRequest(field="category", max_values=50)]
    ))
    category = response.facets[0]
    assert category.disjunctive
    selected = [v for v in category.values if v.selected]
    assert [v.value for v in selected] == ["Red Wine"]
    assert len(category.values) > 1, "disjunctive counts show the other categories one could switch to"
    assert all(r.product.category == "Red Wine" for r in response.results)


@pytest.mark.parametrize("key, attribute", [
    (common_pb2.SORT_KEY_PRICE_ASCENDING, ""), (common_pb2.SORT_KEY_PRICE_DESCENDING, ""),
    (common_pb2.SORT_KEY_NEWEST, ""), (common_pb2.SORT_KEY_ATTRIBUTE_DESCENDING, "abv"),
])
@pytest.mark.parametrize("query", ["wine", "under $40"])
async def test_each_sort_order_holds_across_pages(gateway, key, attribute, query):
    sort = common_pb2.Sort(key=key, attribute=attribute)
    seen, token = [], ""
    for _ in range(6):
        page = await gateway.Search(gateway_pb2.SearchRequest(query=query, page_size=7, page_token=token, sort=sort))
        assert [r.position for r in page.results] == list(range(len(seen) + 1, len(seen) + len(page.results) + 1))
        seen += page.results
        token = page.next_page_token
        if not token:
            break
    ids = [r.product.id for r in seen]
    assert len(ids) == len(set(ids)) and len(ids) >= 14, ids
    whole = await gateway.Search(gateway_pb2.SearchRequest(query=query, page_size=len(ids), sort=sort))
    assert [r.product.id for r in whole.results] == ids, "pages are slices of one order"
    if key in (common_pb2.SORT_KEY_PRICE_ASCENDING, common_pb2.SORT_KEY_PRICE_DESCENDING):
        prices = [r.product.price for r in seen]
        assert prices == sorted(prices, reverse=key == common_pb2.SORT_KEY_PRICE_DESCENDING)
    elif key == common_pb2.SORT_KEY_NEWEST:
        listed = [r.product.listed_at for r in seen]
        assert all(listed) and listed == sorted(listed, reverse=True)
    else:
        numbers = [float(attribute_of(r.product, "abv").rstrip("%") or "nan") for r in seen]
        known = [n for n in numbers if n == n]
        assert known == sorted(known, reverse=True) and known, numbers
        assert all(n != n for n in numbers[len(known):]), "products without a value come last"


async def test_sort_and_facet_errors_name_the_field(gateway):
    cases = [
        (dict(facets=[common_pb2.FacetRequest(field="colour")]), "facets[0].field"),
        (dict(facets=[common_pb2.FacetRequest(field="attributes.flavour")]), "facets[0].field"),
        (dict(facets=[common_pb2.FacetRequest(field="brand"), common_pb2.FacetRequest(field="brand")]), "facets[1].field"),
        (dict(facets=[common_pb2.FacetRequest(field="price", price_bounds=[10, 5])]), "facets[0].price_bounds"),
        (dict(sort=common_pb2.Sort(key=common_pb2.SORT_KEY_ATTRIBUTE_ASCENDING)), "sort.attribute"),
        (dict(sort=common_pb2.Sort(key=common_pb2.SORT_KEY_ATTRIBUTE_ASCENDING, attribute="flavour")), "sort.attribute"),
        (dict(sort=common_pb2.Sort(key=42)), "sort.key"),
    ]
    for fields, field_path in cases:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await gateway.Search(gateway_pb2.SearchRequest(query="wine", **fields))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert raised.value.details().startswith(field_path), (field_path, raised.value.details())


async def test_a_pinned_product_is_at_its_position_on_every_page_and_names_its_rule(gateway, retrieval):
    query = "sparkling wine for a toast"
    before = await gateway.Search(gateway_pb2.SearchRequest(query=query, page_size=10))
    pinned_id = "sku-redwine-0001"  # a red wine: not what this query finds first
    assert pinned_id not in [r.product.id for r in before.results[:7]]
    rule = (await put_rule(retrieval, action=PIN, query=query, product_ids=[pinned_id], position=7)).rule
    first = await gateway.Search(gateway_pb2.SearchRequest(query=query, page_size=5))
    second = await gateway.Search(gateway_pb2.SearchRequest(query=query, page_size=5, page_token=first.next_page_token))
    assert pinned_id not in [r.product.id for r in first.results]
    at_seven = second.results[1]
    assert (at_seven.position, at_seven.product.id) == (7, pinned_id)
    assert [reason.feature for reason in at_seven.reasons] == [f"rule:{rule.id}"]
    assert rule.id in second.applied_rule_ids
    shown = [r.product.id for r in [*first.results, *second.results]]
    assert len(shown) == len(set(shown)) == 10
    assert [r.product.id for r in before.results[:6]] == [p for p in shown if p != pinned_id][:6]


async def test_a_hidden_product_never_appears_in_search_or_recommendations(gateway, retrieval):
    hidden = "sku-redwine-0002"
    query = gateway_pb2.SearchRequest(query="bordeaux red wine", page_size=20)
    assert hidden in [r.product.id for r in (await gateway.Search(query)).results]
    rule = (await put_rule(retrieval, action=HIDE, category="Red Wine", product_ids=[hidden])).rule
    browse = gateway_pb2.SearchRequest(query="under $500", page_size=100, filters=common_pb2.Filters(categories=["red wine"]))
    response = await gateway.Search(browse)
    assert hidden not in [r.product.id for r in response.results] and rule.id in response.applied_rule_ids
    similar = await gateway.Recommend(gateway_pb2.RecommendRequest(
        mode=gateway_pb2.RECOMMEND_MODE_SIMILAR_ITEMS, product_id="sku-redwine-0001", page_size=50,
        filters=common_pb2.Filters(categories=["Red Wine"]),
    ))
    assert hidden not in [r.product.id for r in similar.results]
    popular = await gateway.Recommend(gateway_pb2.RecommendRequest(
        mode=gateway_pb2.RECOMMEND_MODE_POPULAR_IN_CATEGORY, category="Red Wine", page_size=50,
    ))
    assert hidden not in [r.product.id for r in popular.results] and len(popular.results) >= 10
    # A rule without conditions hides the product everywhere, the text search included.
    everywhere = (await put_rule(retrieval, action=HIDE, product_ids=[hidden])).rule
    response = await gateway.Search(query)
    assert hidden not in [r.product.id for r in response.results] and everywhere.id in response.applied_rule_ids


async def test_a_synonym_finds_what_the_other_word_finds(gateway, retrieval):
    lexical = retrieval_pb2.RETRIEVAL_MODE_LEXICAL

    async def lexical_ids(text: str) -> set[str]:
        found = await retrieval.Retrieve(retrieval_pb2.RetrieveRequest(query_text=text, mode=lexical, limit=500))
        return {c.product.id for c in found.candidates}

    wine = await lexical_ids("merlot")
    assert wine and not await lexical_ids("zorblat")
    rule = (await put_rule(retrieval, action=SYNONYM, terms=["zorblat", "merlot"])).rule
    assert await lexical_ids("zorblat") == wine
    assert await lexical_ids("merlot") == wine, "the other way round adds nothing the word did not find"
    response = await gateway.Search(gateway_pb2.SearchRequest(query="zorblat", page_size=5))
    assert rule.id in response.applied_rule_ids
    assert response.results[0].product.id in wine, [r.product.title for r in response.results]
    await put_rule(retrieval, action=SYNONYM, terms=["quux", "cabernet"], one_way=True)
    assert await lexical_ids("quux") == await lexical_ids("cabernet")
    assert not await lexical_ids("cabernet") - await lexical_ids("cabernet quux")


async def test_boost_and_bury_move_products_and_name_their_rules(gateway, retrieval):
    query = "white wine"
    before = [r.product.id for r in (await gateway.Search(gateway_pb2.SearchRequest(query=query, page_size=10))).results]
    top, low = before[0], before[-1]
    bury = (await put_rule(retrieval, action=BURY, query=query, product_ids=[top])).rule
    boost = (await put_rule(retrieval, action=BOOST, query=query, product_ids=[low], boost=5.0)).rule
    after = await gateway.Search(gateway_pb2.SearchRequest(query=query, page_size=10))
    ids = [r.product.id for r in after.results]
    assert ids[0] == low and top not in ids
    assert f"rule:{boost.id}" in [reason.feature for reason in after.results[0].reasons]
    assert {bury.id, boost.id} <= set(after.applied_rule_ids)


async def test_a_rule_written_by_another_replica_is_live_within_5_seconds(gateway, database):
    from services.retrieval.rule_store import RuleStore
    from services.retrieval.rules import PIN as PIN_ACTION, Rule

    query = "gift for dad"
    store = RuleStore(database)  # what another retrieval replica runs when it takes a PutRule
    rule_id = f"t-{uuid.uuid4().hex[:10]}"
    await store.put(Rule(id=rule_id, action=PIN_ACTION, query=query, product_ids=("sku-redwine-0003",), position=1))
    try:
        async def pinned() -> bool:
            response = await gateway.Search(gateway_pb2.SearchRequest(query=query, page_size=3))
            return response.results[0].product.id == "sku-redwine-0003" and rule_id in response.applied_rule_ids

        await eventually(pinned, 5.0, "the pin written to the rules store taking effect", interval=0.2)
    finally:
        await store.delete(rule_id)

    async def unpinned() -> bool:
        response = await gateway.Search(gateway_pb2.SearchRequest(query=query, page_size=3))
        return rule_id not in response.applied_rule_ids

    await eventually(unpinned, 5.0, "the deleted pin leaving the results", interval=0.2)


async def test_conflicting_rules_are_refused_naming_both(retrieval):
    query = "conflict test query"
    first = (await put_rule(retrieval, action=PIN, query=query, product_ids=["sku-redwine-0001"], position=2)).rule
    for fields in (
        dict(action=PIN, query=query, product_ids=["sku-redwine-0002"], position=2),
        dict(action=PIN, product_ids=["sku-redwine-0001"], position=5),
        dict(action=HIDE, query=query, product_ids=["sku-redwine-0001"]),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await put_rule(retrieval, **fields)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert raised.value.details().startswith("rule: conflicts with rule") and first.id in raised.value.details()
    for fields, field_path in (
        (dict(action=PIN, query=query, product_ids=["no-such-product"], position=3), "rule.product_ids[0]"),
        (dict(action=PIN, query=query, product_ids=["sku-redwine-0003"]), "rule.position"),
        (dict(action=BOOST, query=query, product_ids=["sku-redwine-0003"], boost=50), "rule.boost"),
        (dict(action=SYNONYM, terms=["one"]), "rule.terms"),
        (dict(action=HIDE, category="No Such Aisle", product_ids=["sku-redwine-0003"]), "filters.categories[0]"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await put_rule(retrieval, **fields)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert raised.value.details().startswith(field_path), raised.value.details()
    listed = await retrieval.ListRules(retrieval_pb2.ListRulesRequest())
    assert first.id in [r.id for r in listed.rules] and listed.rules_version >= first.version


async def test_recommendations_never_return_a_purchased_product(gateway):
    user = f"buyer-{uuid.uuid4().hex[:8]}"
    similar = gateway_pb2.RecommendRequest(
        mode=gateway_pb2.RECOMMEND_MODE_SIMILAR_ITEMS, product_id="sku-redwine-0001", page_size=5, user_id=user
    )
    shown = await gateway.Recommend(similar)
    bought = shown.results[0]
    await gateway.Track(gateway_pb2.TrackRequest(interactions=[events_pb2.Interaction(
        event_id=uuid.uuid4().hex, type=events_pb2.INTERACTION_TYPE_PURCHASE, request_id=shown.request_id,
        product_id=bought.product.id, position=bought.position, user_id=user,
    )]))

    async def gone() -> bool:
        modes = [similar, gateway_pb2.RecommendRequest(mode=gateway_pb2.RECOMMEND_MODE_FOR_USER, page_size=50, user_id=user),
                 gateway_pb2.RecommendRequest(mode=gateway_pb2.RECOMMEND_MODE_POPULAR_IN_CATEGORY, category=bought.product.category,
                                              page_size=50, user_id=user)]
        for request in modes:
            response = await gateway.Recommend(request)
            if bought.product.id in [r.product.id for r in response.results]:
                return False
        return True

    await eventually(gone, 5.0, "the purchased product leaving the shopper's recommendations", interval=0.2)


async def test_out_of_stock_products_are_never_recommended_and_searchable_on_request(system, gateway, retrieval):
    template = CATALOG["sku-redwine-0001"]
    from services.retrieval.servicer import product_to_pb

    twin = product_to_pb(template)
    twin.id, twin.in_stock = f"t-oos-{uuid.uuid4().hex[:8]}", False
    twin.listed_at = "2026-12-01T00:00:00Z"
    await retrieval.UpsertProducts(retrieval_pb2.UpsertProductsRequest(products=[twin]))
    try:
        found = await retrieval.GetProducts(retrieval_pb2.GetProductsRequest(product_ids=[twin.id]))
        assert not found.products[0].in_stock and found.products[0].listed_at.startswith("2026-12-01")
        similar = await gateway.Recommend(gateway_pb2.RecommendRequest(
            mode=gateway_pb2.RECOMMEND_MODE_SIMILAR_ITEMS, product_id=template.id, page_size=50
        ))
        assert twin.id not in [r.product.id for r in similar.results]
        query = template.title
        anywhere = await gateway.Search(gateway_pb2.SearchRequest(query=query, page_size=5))
        assert twin.id in [r.product.id for r in anywhere.results]
        in_stock = await gateway.Search(gateway_pb2.SearchRequest(
            query=query, page_size=5, filters=common_pb2.Filters(in_stock_only=True)
        ))
        assert twin.id not in [r.product.id for r in in_stock.results]
    finally:
        await retrieval.DeleteProducts(retrieval_pb2.DeleteProductsRequest(product_ids=[twin.id]))


async def test_facets_sorts_and_rules_are_traced_and_counted(gateway, retrieval, span_exporter):
    from tests.support.telemetry import metric_points

    def total(name: str, **attributes) -> float:
        return sum(p.value for p in metric_points(name) if all(p.attributes.get(k) == v for k, v in attributes.items()))

    facets_before = total("shelfwise.retrieval.facets", field="brand", disjunctive="true")
    sorted_before = total("shelfwise.retrieval.sorted", key="price_descending")
    query = "traced pinned tea"
    await put_rule(retrieval, action=PIN, query=query, product_ids=["sku-redwine-0001"], position=1)
    pins_before = total("shelfwise.retrieval.rules_applied", action="pin")
    response = await gateway.Search(gateway_pb2.SearchRequest(
        query=query, filters=common_pb2.Filters(brands=["Bodega Alta"]), facets=[common_pb2.FacetRequest(field="brand")],
        sort=common_pb2.Sort(key=common_pb2.SORT_KEY_PRICE_DESCENDING),
    ))
    assert total("shelfwise.retrieval.facets", field="brand", disjunctive="true") == facets_before + 1
    assert total("shelfwise.retrieval.sorted", key="price_descending") == sorted_before + 1
    assert total("shelfwise.retrieval.rules_applied", action="pin") == pins_before + 1
    trace = {span.context.trace_id for span in span_exporter.get_finished_spans()
             if span.name == "retrieval.facets" and span.attributes.get("shelfwise.facets") == ("brand",)}
    assert trace, "a retrieval.facets span for the request"
    assert response.results[0].product.id == "sku-redwine-0001"
