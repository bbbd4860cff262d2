"""gRPC adapter of the query understanding service."""

from __future__ import annotations

from shelfwise.common.v1 import common_pb2
from shelfwise.query_understanding.v1 import query_understanding_pb2 as qu_pb2
from shelfwise.query_understanding.v1 import query_understanding_pb2_grpc as qu_pb2_grpc

from services.common.errors import InvalidArgument
from services.common.text import normalize_within
from services.query_understanding.catalog_source import CatalogVocabularySource
from services.query_understanding.suggestion_source import SuggestionSource

MODEL_VERSION = "rules/1"
# A BCP 47 tag ("zh-Hans-CN", "en-US") fits in 35 characters (RFC 5646's advice for buffers).
MAX_LOCALE_CHARS = 35
MAX_REQUEST_ID_CHARS = 128
# Suggest: what a search box sends while the shopper types (SuggestRequest in the proto).
MAX_PREFIX_CHARS = 100
DEFAULT_SUGGESTIONS = 5
MAX_SUGGESTIONS = 20


def validate_request(request: qu_pb2.UnderstandRequest | qu_pb2.SuggestRequest) -> None:
    """The fields besides the query or prefix (the understander checks the query)."""
    if len(request.locale) > MAX_LOCALE_CHARS or not request.locale.isprintable():
        raise InvalidArgument("locale", f"must be a language tag such as en-US: at most {MAX_LOCALE_CHARS} printable characters")
    if len(request.request_id) > MAX_REQUEST_ID_CHARS or not request.request_id.isprintable():
        raise InvalidArgument("request_id", f"must be at most {MAX_REQUEST_ID_CHARS} printable characters")


def validate_suggest(request: qu_pb2.SuggestRequest) -> tuple[str, int]:
    """(prefix, limit) of a SuggestRequest, or InvalidArgument naming the field."""
    prefix = request.prefix
    if len(prefix) > MAX_PREFIX_CHARS:
        raise InvalidArgument("prefix", f"must be at most {MAX_PREFIX_CHARS} characters, got {len(prefix)}")
    # Control and invisible characters alone normalise to nothing: no prefix either.
    if not normalize_within(prefix, MAX_PREFIX_CHARS, "prefix"):
        raise InvalidArgument("prefix", f"is required: 1-{MAX_PREFIX_CHARS} characters, not only whitespace")
    limit = request.limit if request.HasField("limit") else DEFAULT_SUGGESTIONS
    if not 1 <= limit <= MAX_SUGGESTIONS:
        raise InvalidArgument("limit", f"must be between 1 and {MAX_SUGGESTIONS}, got {limit}")
    validate_request(request)
    return prefix, limit


class QueryUnderstandingServicer(qu_pb2_grpc.QueryUnderstandingServiceServicer):
    def __init__(self, source: CatalogVocabularySource, suggestions: SuggestionSource):
        self._source = source
        self._suggestions = suggestions

    async def Suggest(self, request: qu_pb2.SuggestRequest, context) -> qu_pb2.SuggestResponse:
        prefix, limit = validate_suggest(request)
        index = self._suggestions.index  # one index for the whole answer, even if a rebuild swaps it now
        return qu_pb2.SuggestResponse(
            suggestions=[
                qu_pb2.Suggestion(text=s.text, source=int(s.source), score=s.score, corrected=s.corrected)
                for s in index.suggest(prefix, limit)
            ],
            index_version=index.version,
        )

    async def Understand(self, request: qu_pb2.UnderstandRequest, context) -> qu_pb2.UnderstandResponse:
        validate_request(request)
        understanding = self._source.understander.understand(request.query)
        price = common_pb2.PriceRange()
        if understanding.price_min is not None:
            price.min = understanding.price_min
        if understanding.price_max is not None:
            price.max = understanding.price_max
        return qu_pb2.UnderstandResponse(
            original_query=understanding.original,
            normalized_query=understanding.normalized,
            corrected_query=understanding.corrected,
            corrections=[qu_pb2.SpellingCorrection(original=o, corrected=c) for o, c in understanding.corrections],
            language=understanding.language,
            language_confidence=understanding.language_confidence,
            filters=common_pb2.Filters(
                categories=[category for category, _ in understanding.categories],
                brands=list(understanding.brands),
                price=price,
                attributes=dict(understanding.attributes),
            ),
            categories=[qu_pb2.CategoryPrediction(category=c, score=s) for c, s in understanding.categories],
            search_text=understanding.search_text,
            tokens=list(understanding.tokens),
            model_version=MODEL_VERSION,
            translated_query=understanding.translation,
            prefers_low_price=understanding.prefers_low_price,
            notes=list(understanding.notes),
            vocabulary_version=self._source.version,
        )
