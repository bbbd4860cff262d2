"""Unit tests of services.gateway.page_tokens: round trips, the empty token, malformed tokens, and
tokens bound to the query, filters and mode that made them."""

from __future__ import annotations

import base64

import pytest
from shelfwise.common.v1 import common_pb2
from shelfwise.gateway.v1 import gateway_pb2

from services.common.errors import InvalidArgument
from services.gateway.page_tokens import (
    OTHER_SCOPE,
    decode_page_token,
    decode_search_token,
    encode_page_token,
    recommend_scope,
    search_scope,
)

SCOPE = "0123456789abcdef"


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


# --- page tokens -----------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [0, 1, 10, 99, 12_345, 100_000])
def test_page_token_round_trips(offset) -> None:
    token = encode_page_token(offset, SCOPE)
    assert "=" not in token
    assert decode_page_token(token, SCOPE) == offset


def test_a_search_token_keeps_its_skip_mask() -> None:
    assert decode_search_token(encode_page_token(5, SCOPE, skip=0b1011), SCOPE) == (5, 0b1011)


def test_empty_page_token_means_first_page() -> None:
    assert decode_page_token("", SCOPE) == 0


def test_padded_page_token_is_also_accepted() -> None:
    assert decode_page_token(base64.urlsafe_b64encode(f"offset:20:scope:{SCOPE}".encode()).decode(), SCOPE) == 20


@pytest.mark.parametrize(
    "token", ["abc", b64("offset:-1"), b64("other:3"), b64("offset:"), b64("offset:x"), b64("3"), "!!!!", "a",
              b64(f"offset:-1:scope:{SCOPE}"), b64(f"offset:3:skop:1:scope:{SCOPE}"), b64("offset:20")]
)
def test_malformed_page_token_is_invalid_argument(token) -> None:
    with pytest.raises(InvalidArgument) as caught:
        decode_page_token(token, SCOPE)
    assert caught.value.field == "page_token"


def test_page_token_with_offset_beyond_int32_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument) as caught:
        decode_page_token(b64(f"offset:{2**31}:scope:{SCOPE}"), SCOPE)
    assert caught.value.field == "page_token"


def test_a_token_replayed_for_another_scope_is_invalid_argument() -> None:
    token = encode_page_token(5, search_scope(gateway_pb2.SearchRequest(query="red wine")))
    with pytest.raises(InvalidArgument) as caught:
        decode_page_token(token, search_scope(gateway_pb2.SearchRequest(query="white wine")))
    assert caught.value.message == f"page_token: {OTHER_SCOPE}"


def test_scopes_ignore_case_spaces_and_facet_order_but_not_filters_or_mode() -> None:
    def search(query: str, **filters) -> str:
        return search_scope(gateway_pb2.SearchRequest(query=query, filters=common_pb2.Filters(**filters)))

    assert search("Red  Wine") == search("red wine")
    assert search("wine", categories=["Red Wine", "Beer"]) == search("wine", categories=["beer", " red wine"])
    assert search("wine", categories=["Beer"]) != search("wine")
    assert search("wine", price=common_pb2.PriceRange(max=20)) != search("wine")
    similar = recommend_scope(gateway_pb2.RecommendRequest(mode=gateway_pb2.RECOMMEND_MODE_SIMILAR_ITEMS, product_id="a"))
    popular = recommend_scope(gateway_pb2.RecommendRequest(mode=gateway_pb2.RECOMMEND_MODE_POPULAR_IN_CATEGORY, product_id="a"))
    assert similar != popular != search("a")
