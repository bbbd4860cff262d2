"""Page tokens of Search and Recommend: the opaque `next_page_token` a response hands out and the
next request hands back (an offset, and for an explored search the ranks its first page showed)."""

from __future__ import annotations

import base64

from services.common.errors import InvalidArgument
from services.gateway.exploration import MAX_DEPTH

# Deeper than any candidate list (retrieval returns at most 2000); also keeps offsets in int32.
MAX_OFFSET = 100_000


def encode_page_token(offset: int, skip: int = 0) -> str:
    """`skip`: the pool ranks an explored first page showed (a bit mask; services/gateway/
    exploration.py), which later pages leave out of the ranked order."""
    text = f"offset:{offset}" + (f":skip:{skip:x}" if skip else "")
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_page_token(token: str) -> int:
    return decode_search_token(token)[0]


def decode_search_token(token: str) -> tuple[int, int]:
    """(offset, skip mask) of a next_page_token; (0, 0) for none."""
    if not token:
        return 0, 0
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        parts = text.split(":")
        offset = int(parts[1])
        skip = int(parts[3], 16) if len(parts) == 4 and parts[2] == "skip" else 0
        if (parts[0] != "offset" or len(parts) not in (2, 4) or not 0 <= offset <= MAX_OFFSET
                or not 0 <= skip < 1 << MAX_DEPTH or bin(skip).count("1") > offset):
            raise ValueError
        return offset, skip
    except (ValueError, IndexError, UnicodeDecodeError):
        raise InvalidArgument("page_token", "is not a token returned as next_page_token") from None
