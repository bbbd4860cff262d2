"""The fields of a Suggest request (what a search box sends while the shopper types), checked in
one place: the gateway checks them before it calls query understanding (a bad field refused under
the caller's name without a hop, and a huge prefix never reaches query understanding's smaller
message limit), and query understanding checks them again for callers that reach it directly.
The gateway's and query understanding's SuggestRequest messages share these field names."""

from __future__ import annotations

from services.common.errors import InvalidArgument
from services.common.text import normalize_within

MAX_PREFIX_CHARS = 100
DEFAULT_SUGGESTIONS = 5
MAX_SUGGESTIONS = 20
# A BCP 47 tag ("zh-Hans-CN", "en-US") fits in 35 characters (RFC 5646's advice for buffers).
MAX_LOCALE_CHARS = 35


def suggest_inputs(request) -> tuple[str, int]:
    """(prefix, limit) of a SuggestRequest, or InvalidArgument naming the field and its rule."""
    prefix = request.prefix
    if len(prefix) > MAX_PREFIX_CHARS:
        raise InvalidArgument("prefix", f"must be at most {MAX_PREFIX_CHARS} characters, got {len(prefix)}")
    # Control and invisible characters alone normalise to nothing: no prefix either.
    if not normalize_within(prefix, MAX_PREFIX_CHARS, "prefix"):
        raise InvalidArgument("prefix", f"is required: 1-{MAX_PREFIX_CHARS} characters, not only whitespace")
    limit = request.limit if request.HasField("limit") else DEFAULT_SUGGESTIONS
    if not 1 <= limit <= MAX_SUGGESTIONS:
        raise InvalidArgument("limit", f"must be between 1 and {MAX_SUGGESTIONS}, got {limit}")
    check_locale(request.locale)
    return prefix, limit


def check_locale(locale: str) -> None:
    if len(locale) > MAX_LOCALE_CHARS or not locale.isprintable():
        raise InvalidArgument("locale", f"must be a language tag such as en-US: at most {MAX_LOCALE_CHARS} printable characters")
