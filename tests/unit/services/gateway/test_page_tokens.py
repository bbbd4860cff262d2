"""Unit tests of services.gateway.page_tokens: round trips, the empty token, and malformed tokens."""

from __future__ import annotations

import base64

import pytest

from services.common.errors import InvalidArgument
from services.gateway.page_tokens import decode_page_token, encode_page_token


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


# --- page tokens -----------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [0, 1, 10, 99, 12_345, 100_000])
def test_page_token_round_trips(offset) -> None:
    token = encode_page_token(offset)
    assert "=" not in token
    assert decode_page_token(token) == offset


def test_empty_page_token_means_first_page() -> None:
    assert decode_page_token("") == 0


def test_padded_page_token_is_also_accepted() -> None:
    assert decode_page_token(base64.urlsafe_b64encode(b"offset:20").decode()) == 20


@pytest.mark.parametrize(
    "token", ["abc", b64("offset:-1"), b64("other:3"), b64("offset:"), b64("offset:x"), b64("3"), "!!!!", "a"]
)
def test_malformed_page_token_is_invalid_argument(token) -> None:
    with pytest.raises(InvalidArgument) as caught:
        decode_page_token(token)
    assert caught.value.field == "page_token"


def test_page_token_with_offset_beyond_int32_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument) as caught:
        decode_page_token(b64(f"offset:{2**31}"))
    assert caught.value.field == "page_token"
