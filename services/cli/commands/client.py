"""`shelfwise search`, `recommend`, `track`, `suggest` and `import-catalog`: a shop's calls to a running
gateway (and retrieval, for the catalogue), printed for a person to read, or with `--json` as
one JSON object for a script."""

from __future__ import annotations

import json
import shlex
import sys
import uuid
from pathlib import Path

from services.local.catalog_import import import_catalog

GATEWAY_ADDRESS = "127.0.0.1:50051"
SORTS = ("relevance", "price_ascending", "price_descending", "newest", "attribute_ascending", "attribute_descending")
RETRIEVAL_ADDRESS = "127.0.0.1:50053"


def register(commands) -> None:
    def client(name: str, help_text: str):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--address", default=GATEWAY_ADDRESS, help="gateway address")
        sub.add_argument("--timeout", type=float, default=10.0, help="deadline in seconds")
        sub.add_argument("--user-id")
        sub.add_argument("--json", action="store_true",
                         help="print the response as one JSON object (proto field names) instead of text")
        return sub

    search_parser = client("search", "search the catalogue")
    search_parser.add_argument("query")
    search_parser.add_argument("--page-size", type=int, default=10)
    search_parser.add_argument("--page-token")
    search_parser.add_argument("--category", action="append")
    search_parser.add_argument("--brand", action="append")
    search_parser.add_argument("--min-price", type=float)
    search_parser.add_argument("--max-price", type=float)
    search_parser.add_argument("--in-stock-only", action="store_true")
    search_parser.add_argument("--facet", action="append", metavar="FIELD",
                               help="count this facet over the matching products: category, brand, price or "
                               "attributes.<name> (repeatable)")
    search_parser.add_argument("--sort", choices=SORTS, default="relevance")
    search_parser.add_argument("--sort-attribute", default="", help="the attribute of --sort attribute_ascending/descending")
    search_parser.add_argument("--session-id")
    search_parser.set_defaults(run=search)

    recommend_parser = client(
        "recommend", "similar products, popular in a category, next for a shopper, or what completes a cart"
    )
    recommend_parser.add_argument("--product-id", help="similar to this product")
    recommend_parser.add_argument("--category", help="popular in this category (alone), or the context of --for-user")
    recommend_parser.add_argument("--for-user", action="store_true",
                                  help="next for the shopper: --history, else the events of --user-id / --session-id")
    recommend_parser.add_argument("--history", nargs="+", metavar="PRODUCT_ID", help="the shopper's products, oldest first")
    recommend_parser.add_argument("--cart", nargs="+", metavar="PRODUCT_ID", help="complete this cart")
    recommend_parser.add_argument("--session-id")
    recommend_parser.add_argument("--page-size", type=int, default=10)
    recommend_parser.set_defaults(run=recommend)

    track_parser = client("track", "record a click, add-to-cart or purchase of a shown product")
    track_parser.add_argument("--request-id", required=True, help="the request_id a search or recommend printed")
    track_parser.add_argument("--product-id", required=True, help="the product id of the result, as printed")
    track_parser.add_argument("--position", type=int, required=True, help="the result's position, as printed (1 = first)")
    track_parser.add_argument("--type", choices=["click", "add_to_cart", "purchase"], default="click")
    track_parser.add_argument("--event-id", help="idempotency key (default: random)")
    track_parser.add_argument("--quantity", type=int, default=1)
    track_parser.add_argument("--value", type=float, default=0.0)
    track_parser.set_defaults(run=track)

    suggest_parser = client("suggest", "completions of what a shopper has typed so far (autocomplete)")
    suggest_parser.add_argument("prefix")
    suggest_parser.add_argument("--limit", type=int, default=5, help="most suggestions, 1-20")
    suggest_parser.add_argument("--locale", default="")
    suggest_parser.set_defaults(run=suggest)

    importer = commands.add_parser("import-catalog", help="import a JSONL/CSV/Parquet catalogue")
    importer.add_argument("file")
    importer.add_argument("--retrieval-address", default=RETRIEVAL_ADDRESS)
    importer.add_argument("--batch-size", type=int, default=200)
    importer.set_defaults(run=import_catalog_file)


def gateway_stub(address: str):
    from shelfwise.gateway.v1 import gateway_pb2_grpc

    from services.common.channels import create_channel

    channel = create_channel(address, retry_refused=True)
    return channel, gateway_pb2_grpc.GatewayServiceStub(channel)


def print_json(response) -> None:
    """The whole response as one JSON object on one line, named as in the proto files."""
    from google.protobuf.json_format import MessageToDict

    print(json.dumps(MessageToDict(response, preserving_proto_field_name=True), ensure_ascii=False))


def track_example(response, address: str) -> str:
    """A `shelfwise track` command for the first result, to copy: it records a click on it."""
    first = response.results[0]
    command = ["shelfwise", "track", "--request-id", response.request_id, "--product-id", first.product.id,
               "--position", str(first.position)]
    if address != GATEWAY_ADDRESS:
        command += ["--address", address]
    return shlex.join(command)


def print_results(title: str, response, address: str) -> None:
    """Each result as position, product id, title, price, category and score (with its two
    largest reasons), then the request_id and a track command for the first result."""
    print(f"\n{title}")
    interpretation = getattr(response, "interpretation", None)
    if interpretation is not None and interpretation.corrected_query:
        print_interpretation(interpretation)
        print(f"  {response.total_size} products match")
    for note in getattr(response, "notes", ()):
        print(f"  note: {note}")
    if response.degraded_stages:
        print(f"  degraded: {', '.join(response.degraded_stages)}")
    for result in response.results:
        product = result.product
        top = sorted(result.reasons, key=lambda r: -r.contribution)[:2]
        why = ", ".join(f"{r.feature} {r.value:.2f}" for r in top)
        print(f"  {result.position:>3}. {product.id:<18} {product.title[:52]:<52} {product.price:>8.2f} "
              f"{product.currency}  [{product.category}] score={result.score:.3f} ({why})")
    if not response.results:
        print("  (no results)")
    timings = ", ".join(f"{t.stage} {t.milliseconds:.0f} ms" for t in response.timings)
    print(f"  request_id={response.request_id} model_version={response.model_version} [{timings}]")
    if response.results:
        print(f"  record a click on the first result: {track_example(response, address)}")


def print_interpretation(interpretation) -> None:
    """What query understanding read in the query: corrections, language, filters, categories."""
    filters = interpretation.extracted_filters
    notes = [f"language={interpretation.language}", f"matched text={interpretation.search_text!r}"]
    if interpretation.translated_text:
        notes.append(f"also searched as {interpretation.translated_text!r}")
    if filters.price.HasField("min") or filters.price.HasField("max"):
        low = f"{filters.price.min:g}" if filters.price.HasField("min") else ""
        high = f"{filters.price.max:g}" if filters.price.HasField("max") else ""
        notes.append(f"price={low}..{high}")
    if filters.attributes:
        notes.append("attributes=" + ",".join(f"{k}={v}" for k, v in filters.attributes.items()))
    if interpretation.prefers_low_price:
        notes.append("prefers low prices")
    if interpretation.predicted_categories:
        notes.append("categories=" + ", ".join(
            f"{c.category} {c.score:.2f}" for c in interpretation.predicted_categories
        ))
    print(f"  understood: {interpretation.corrected_query!r} ({'; '.join(notes)})")


async def search(args) -> int:
    from shelfwise.common.v1 import common_pb2
    from shelfwise.gateway.v1 import gateway_pb2

    channel, stub = gateway_stub(args.address)
    async with channel:
        filters = common_pb2.Filters(
            categories=args.category or [], brands=args.brand or [], in_stock_only=args.in_stock_only
        )
        if args.min_price is not None:
            filters.price.min = args.min_price
        if args.max_price is not None:
            filters.price.max = args.max_price
        request = gateway_pb2.SearchRequest(
            query=args.query, page_size=args.page_size, page_token=args.page_token or "", filters=filters,
            user_id=args.user_id or "", session_id=args.session_id or "",
            facets=[common_pb2.FacetRequest(field=field) for field in args.facet or ()],
            sort=common_pb2.Sort(key=common_pb2.SortKey.Value(f"SORT_KEY_{args.sort.upper()}"), attribute=args.sort_attribute),
        )
        response = await stub.Search(request, timeout=args.timeout)
    if args.json:
        print_json(response)
        return 0
    print_results(f"search {args.query!r}", response, args.address)
    for facet in response.facets:
        values = ", ".join(f"{v.value}{' *' if v.selected else ''} ({v.count})" for v in facet.values)
        print(f"  facet {facet.field}{' (other values of a filtered field)' if facet.disjunctive else ''}: {values}")
    if response.applied_rule_ids:
        print(f"  merchandising rules applied: {', '.join(response.applied_rule_ids)}")
    if response.next_page_token:
        print(f"  next page: --page-token {response.next_page_token}")
    return 0


def recommend_mode(args):
    """The Recommend mode the options ask for, or None when they are contradictory."""
    from shelfwise.gateway.v1 import gateway_pb2

    if args.cart:
        return None if args.product_id or args.for_user else gateway_pb2.RECOMMEND_MODE_COMPLETE_CART
    if args.for_user or args.history:
        return None if args.product_id else gateway_pb2.RECOMMEND_MODE_FOR_USER
    if bool(args.product_id) == bool(args.category):
        return None
    return gateway_pb2.RECOMMEND_MODE_SIMILAR_ITEMS if args.product_id else gateway_pb2.RECOMMEND_MODE_POPULAR_IN_CATEGORY


async def recommend(args) -> int:
    from shelfwise.gateway.v1 import gateway_pb2

    mode = recommend_mode(args)
    if mode is None:
        print("give one of: --product-id (similar items), --category alone (popular in category), --for-user "
              "[--history ID ...] (next for this shopper), --cart ID ... (complete the cart)", file=sys.stderr)
        return 2
    channel, stub = gateway_stub(args.address)
    async with channel:
        response = await stub.Recommend(
            gateway_pb2.RecommendRequest(
                mode=mode, product_id=args.product_id or "", category=args.category or "",
                page_size=args.page_size, user_id=args.user_id or "", session_id=args.session_id or "",
                history_product_ids=args.history or [], cart_product_ids=args.cart or [],
            ),
            timeout=args.timeout,
        )
    if args.json:
        print_json(response)
        return 0
    what = gateway_pb2.RecommendMode.Name(mode).removeprefix("RECOMMEND_MODE_").lower()
    seed = args.product_id or args.category or ",".join(args.cart or args.history or []) or args.user_id or args.session_id
    print_results(f"recommend {what} {seed or ''}".rstrip(), response, args.address)
    return 0


async def suggest(args) -> int:
    from shelfwise.gateway.v1 import gateway_pb2
    from shelfwise.query_understanding.v1 import query_understanding_pb2 as qu_pb2

    channel, stub = gateway_stub(args.address)
    async with channel:
        response = await stub.Suggest(
            gateway_pb2.SuggestRequest(prefix=args.prefix, limit=args.limit, locale=args.locale), timeout=args.timeout
        )
    if args.json:
        print_json(response)
        return 0
    print(f"\nsuggest {args.prefix!r}")
    for number, suggestion in enumerate(response.suggestions, start=1):
        source = qu_pb2.SuggestionSource.Name(suggestion.source).removeprefix("SUGGESTION_SOURCE_").lower()
        typo = "  (typo corrected)" if suggestion.corrected else ""
        print(f"  {number:>2}. {suggestion.text:<48} {source:<8} score={suggestion.score:.3f}{typo}")
    if not response.suggestions:
        print("  (no suggestions)")
    print(f"  request_id={response.request_id} index_version={response.index_version}")
    return 0


async def track(args) -> int:
    from shelfwise.events.v1 import events_pb2
    from shelfwise.gateway.v1 import gateway_pb2

    types = {
        "click": events_pb2.INTERACTION_TYPE_CLICK,
        "add_to_cart": events_pb2.INTERACTION_TYPE_ADD_TO_CART,
        "purchase": events_pb2.INTERACTION_TYPE_PURCHASE,
    }
    channel, stub = gateway_stub(args.address)
    async with channel:
        interaction = events_pb2.Interaction(
            event_id=args.event_id or uuid.uuid4().hex, type=types[args.type], request_id=args.request_id,
            product_id=args.product_id, position=args.position, user_id=args.user_id or "",
            quantity=args.quantity, value=args.value,
        )
        interaction.occurred_at.GetCurrentTime()
        response = await stub.Track(gateway_pb2.TrackRequest(interactions=[interaction]), timeout=args.timeout)
    if args.json:
        print_json(response)
        return 0
    print(f"accepted={response.accepted} duplicates={response.duplicates}")
    return 0


async def import_catalog_file(args) -> int:
    try:
        inserted, updated = await import_catalog(Path(args.file), args.retrieval_address, args.batch_size)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"imported {inserted + updated} products ({inserted} new, {updated} updated)")
    return 0
