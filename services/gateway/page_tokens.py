"""Page tokens of Search and Recommend: the opaque `next_page_token` a response hands out and the
next request hands back (an offset, and for an explored search the ranks its first page showed),
bound to the request that made it.

A token carries a digest of what decided the result list (`request_scope`): the normalised
query, the filters and the kind of request. Replayed with another query, other filters or
another mode, it would otherwise silently give positions 6-10 of a different list; instead it
is INVALID_ARGUMENT. Page size, user and session are not part of the scope: a shopper may
change the page size between pages.
"""

from __future__ import annotations

import base64
import hashlib
import json

from shelfwise.common.v1 import common_pb2
from shelfwise.gateway.v1 import gateway_pb2

from services.common.errors import InvalidArgument
from services.common.text import facet_form, normalize
from services.gateway.exploration import MAX_DEPTH

# Deeper than any candidate list (retrieval returns at most 2000); also keeps offsets in int32.
MAX_OFFSET = 100_000
# Hex digits of the scope digest a token carries: enough that two requests' scopes collide
# only by a 1 in 2^64 chance.
SCOPE_DIGITS = 16
MALFORMED = "is not a token returned as next_page_token"
OTHER_SCOPE = "was issued for another query or filters; start again without it"


def _filters_key(filters: common_pb2.Filters) -> dict:
    """The filters as compared for a scope: facet values ignoring case, spaces and order."""
    return {
        "categories": sorted({facet_form(c) for c in filters.categories if c}),
        "brands": sorted({facet_form(b) for b in filters.brands if b}),
        "price": [filters.price.min if filters.price.HasField("min") else None,
                  filters.price.max if filters.price.HasField("max") else None],
        "attributes": sorted((facet_form(name), facet_form(value)) for name, value in filters.attributes.items()),
        # Only when set: tokens issued before the field existed stay valid.
        **({"in_stock_only": True} if filters.in_stock_only else {}),
    }


def _digest(scope: dict) -> str:
    text = json.dumps(scope, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:SCOPE_DIGITS]


def search_scope(request: gateway_pb2.SearchRequest) -> str:
    scope = {"kind": "search", "query": normalize(request.query), "filters": _filters_key(request.filters)}
    if request.sort.key not in (common_pb2.SORT_KEY_UNSPECIFIED, common_pb2.SORT_KEY_RELEVANCE):
        scope["sort"] = [request.sort.key, facet_form(request.sort.attribute)]
    return _digest(scope)


def recommend_scope(request: gateway_pb2.RecommendRequest) -> str:
    return _digest({
        "kind": "recommend",
        "mode": gateway_pb2.RecommendMode.Name(request.mode) if request.mode in gateway_pb2.RecommendMode.values()
        else request.mode,
        "product_id": request.product_id,
        "category": facet_form(request.category),
        "history": list(request.history_product_ids),
        "cart": list(request.cart_product_ids),
        "filters": _filters_key(request.filters),
    })


def encode_page_token(offset: int, scope: str, skip: int = 0) -> str:
    """`scope`: the request's search_scope / recommend_scope. `skip`: the pool ranks an explored
    first page showed (a bit mask; services/gateway/exploration.py), which later pages leave out
    of the ranked order."""
    text = f"offset:{offset}" + (f":skip:{skip:x}" if skip else "") + f":scope:{scope}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_page_token(token: str, scope: str) -> int:
    return decode_search_token(token, scope)[0]


def decode_search_token(token: str, scope: str) -> tuple[int, int]:
    """(offset, skip mask) of a next_page_token issued for `scope`; (0, 0) for none."""
    if not token:
        return 0, 0
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        parts = text.split(":")
        if len(parts) not in (4, 6) or parts[0] != "offset" or parts[-2] != "scope":
            raise ValueError
        offset = int(parts[1])
        skip = int(parts[3], 16) if len(parts) == 6 and parts[2] == "skip" else 0
        if (len(parts) == 6 and parts[2] != "skip") or not 0 <= offset <= MAX_OFFSET \
                or not 0 <= skip < 1 << MAX_DEPTH or bin(skip).count("1") > offset:
            raise ValueError
        issued_for = parts[-1]
    except (ValueError, IndexError, UnicodeDecodeError):
        raise InvalidArgument("page_token", MALFORMED) from None
    if issued_for != scope:
        raise InvalidArgument("page_token", OTHER_SCOPE)
    return offset, skip
