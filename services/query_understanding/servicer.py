"""gRPC adapter of the query understanding service."""

from __future__ import annotations

from shelfwise.common.v1 import common_pb2
from shelfwise.query_understanding.v1 import query_understanding_pb2 as qu_pb2
from shelfwise.query_understanding.v1 import query_understanding_pb2_grpc as qu_pb2_grpc

from services.common.errors import InvalidArgument
from services.query_understanding.catalog_source import CatalogVocabularySource

MODEL_VERSION = "rules/1"
# A BCP 47 tag ("zh-Hans-CN", "en-US") fits in 35 characters (RFC 5646's advice for buffers).
MAX_LOCALE_CHARS = 35
MAX_REQUEST_ID_CHARS = 128


def validate_request(request: qu_pb2.UnderstandRequest) -> None:
    """The fields besides the query (the understander checks that one)."""
    if len(request.locale) > MAX_LOCALE_CHARS or not request.locale.isprintable():
        raise InvalidArgument("locale", f"must be a language tag such as en-US: at most {MAX_LOCALE_CHARS} printable characters")
    if len(request.request_id) > MAX_REQUEST_ID_CHARS or not request.request_id.isprintable():
        raise InvalidArgument("request_id", f"must be at most {MAX_REQUEST_ID_CHARS} printable characters")


class QueryUnderstandingServicer(qu_pb2_grpc.QueryUnderstandingServiceServicer):
    def __init__(self, source: CatalogVocabularySource):
        self._source = source

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
