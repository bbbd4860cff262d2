"""gRPC adapter of the query understanding service."""

from __future__ import annotations

from shelfwise.common.v1 import common_pb2
from shelfwise.query_understanding.v1 import query_understanding_pb2 as qu_pb2
from shelfwise.query_understanding.v1 import query_understanding_pb2_grpc as qu_pb2_grpc

from services.common.errors import InvalidArgument
from services.common.suggest_request import check_locale, suggest_inputs
from services.query_understanding.catalog_source import CatalogVocabularySource
from services.query_understanding.suggestion_source import SuggestionSource

MODEL_VERSION = "rules/1"
MAX_REQUEST_ID_CHARS = 128


def validate_request(request: qu_pb2.UnderstandRequest | qu_pb2.SuggestRequest) -> None:
    """The fields besides the query or prefix (the understander checks the query)."""
    check_locale(request.locale)
    if len(request.request_id) > MAX_REQUEST_ID_CHARS or not request.request_id.isprintable():
        raise InvalidArgument("request_id", f"must be at most {MAX_REQUEST_ID_CHARS} printable characters")


def validate_suggest(request: qu_pb2.SuggestRequest) -> tuple[str, int]:
    """(prefix, limit) of a SuggestRequest, or InvalidArgument naming the field."""
    prefix, limit = suggest_inputs(request)
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
