from shelfwise.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SuggestionSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SUGGESTION_SOURCE_UNSPECIFIED: _ClassVar[SuggestionSource]
    SUGGESTION_SOURCE_QUERY: _ClassVar[SuggestionSource]
    SUGGESTION_SOURCE_TITLE: _ClassVar[SuggestionSource]
    SUGGESTION_SOURCE_BRAND: _ClassVar[SuggestionSource]
    SUGGESTION_SOURCE_CATEGORY: _ClassVar[SuggestionSource]
SUGGESTION_SOURCE_UNSPECIFIED: SuggestionSource
SUGGESTION_SOURCE_QUERY: SuggestionSource
SUGGESTION_SOURCE_TITLE: SuggestionSource
SUGGESTION_SOURCE_BRAND: SuggestionSource
SUGGESTION_SOURCE_CATEGORY: SuggestionSource

class UnderstandRequest(_message.Message):
    __slots__ = ("query", "locale", "request_id")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    LOCALE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    query: str
    locale: str
    request_id: str
    def __init__(self, query: _Optional[str] = ..., locale: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class SpellingCorrection(_message.Message):
    __slots__ = ("original", "corrected")
    ORIGINAL_FIELD_NUMBER: _ClassVar[int]
    CORRECTED_FIELD_NUMBER: _ClassVar[int]
    original: str
    corrected: str
    def __init__(self, original: _Optional[str] = ..., corrected: _Optional[str] = ...) -> None: ...

class CategoryPrediction(_message.Message):
    __slots__ = ("category", "score")
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    category: str
    score: float
    def __init__(self, category: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class UnderstandResponse(_message.Message):
    __slots__ = ("original_query", "normalized_query", "corrected_query", "corrections", "language", "language_confidence", "filters", "categories", "search_text", "tokens", "model_version", "translated_query", "prefers_low_price", "notes", "vocabulary_version")
    ORIGINAL_QUERY_FIELD_NUMBER: _ClassVar[int]
    NORMALIZED_QUERY_FIELD_NUMBER: _ClassVar[int]
    CORRECTED_QUERY_FIELD_NUMBER: _ClassVar[int]
    CORRECTIONS_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    SEARCH_TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRANSLATED_QUERY_FIELD_NUMBER: _ClassVar[int]
    PREFERS_LOW_PRICE_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    VOCABULARY_VERSION_FIELD_NUMBER: _ClassVar[int]
    original_query: str
    normalized_query: str
    corrected_query: str
    corrections: _containers.RepeatedCompositeFieldContainer[SpellingCorrection]
    language: str
    language_confidence: float
    filters: _common_pb2.Filters
    categories: _containers.RepeatedCompositeFieldContainer[CategoryPrediction]
    search_text: str
    tokens: _containers.RepeatedScalarFieldContainer[str]
    model_version: str
    translated_query: str
    prefers_low_price: bool
    notes: _containers.RepeatedScalarFieldContainer[str]
    vocabulary_version: str
    def __init__(self, original_query: _Optional[str] = ..., normalized_query: _Optional[str] = ..., corrected_query: _Optional[str] = ..., corrections: _Optional[_Iterable[_Union[SpellingCorrection, _Mapping]]] = ..., language: _Optional[str] = ..., language_confidence: _Optional[float] = ..., filters: _Optional[_Union[_common_pb2.Filters, _Mapping]] = ..., categories: _Optional[_Iterable[_Union[CategoryPrediction, _Mapping]]] = ..., search_text: _Optional[str] = ..., tokens: _Optional[_Iterable[str]] = ..., model_version: _Optional[str] = ..., translated_query: _Optional[str] = ..., prefers_low_price: _Optional[bool] = ..., notes: _Optional[_Iterable[str]] = ..., vocabulary_version: _Optional[str] = ...) -> None: ...

class SuggestRequest(_message.Message):
    __slots__ = ("prefix", "limit", "locale", "request_id")
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    LOCALE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    prefix: str
    limit: int
    locale: str
    request_id: str
    def __init__(self, prefix: _Optional[str] = ..., limit: _Optional[int] = ..., locale: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class Suggestion(_message.Message):
    __slots__ = ("text", "source", "score", "corrected")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    CORRECTED_FIELD_NUMBER: _ClassVar[int]
    text: str
    source: SuggestionSource
    score: float
    corrected: bool
    def __init__(self, text: _Optional[str] = ..., source: _Optional[_Union[SuggestionSource, str]] = ..., score: _Optional[float] = ..., corrected: _Optional[bool] = ...) -> None: ...

class SuggestResponse(_message.Message):
    __slots__ = ("suggestions", "index_version")
    SUGGESTIONS_FIELD_NUMBER: _ClassVar[int]
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    suggestions: _containers.RepeatedCompositeFieldContainer[Suggestion]
    index_version: str
    def __init__(self, suggestions: _Optional[_Iterable[_Union[Suggestion, _Mapping]]] = ..., index_version: _Optional[str] = ...) -> None: ...
