from shelfwise.common.v1 import common_pb2 as _common_pb2
from shelfwise.events.v1 import events_pb2 as _events_pb2
from shelfwise.query_understanding.v1 import query_understanding_pb2 as _query_understanding_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RecommendMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RECOMMEND_MODE_UNSPECIFIED: _ClassVar[RecommendMode]
    RECOMMEND_MODE_SIMILAR_ITEMS: _ClassVar[RecommendMode]
    RECOMMEND_MODE_POPULAR_IN_CATEGORY: _ClassVar[RecommendMode]
    RECOMMEND_MODE_FOR_USER: _ClassVar[RecommendMode]
    RECOMMEND_MODE_COMPLETE_CART: _ClassVar[RecommendMode]
RECOMMEND_MODE_UNSPECIFIED: RecommendMode
RECOMMEND_MODE_SIMILAR_ITEMS: RecommendMode
RECOMMEND_MODE_POPULAR_IN_CATEGORY: RecommendMode
RECOMMEND_MODE_FOR_USER: RecommendMode
RECOMMEND_MODE_COMPLETE_CART: RecommendMode

class SearchRequest(_message.Message):
    __slots__ = ("query", "page_size", "page_token", "filters", "user_id", "session_id", "request_id", "locale", "facets", "sort")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LOCALE_FIELD_NUMBER: _ClassVar[int]
    FACETS_FIELD_NUMBER: _ClassVar[int]
    SORT_FIELD_NUMBER: _ClassVar[int]
    query: str
    page_size: int
    page_token: str
    filters: _common_pb2.Filters
    user_id: str
    session_id: str
    request_id: str
    locale: str
    facets: _containers.RepeatedCompositeFieldContainer[_common_pb2.FacetRequest]
    sort: _common_pb2.Sort
    def __init__(self, query: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., filters: _Optional[_Union[_common_pb2.Filters, _Mapping]] = ..., user_id: _Optional[str] = ..., session_id: _Optional[str] = ..., request_id: _Optional[str] = ..., locale: _Optional[str] = ..., facets: _Optional[_Iterable[_Union[_common_pb2.FacetRequest, _Mapping]]] = ..., sort: _Optional[_Union[_common_pb2.Sort, _Mapping]] = ...) -> None: ...

class SearchResult(_message.Message):
    __slots__ = ("product", "score", "position", "reasons")
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    product: _common_pb2.Product
    score: float
    position: int
    reasons: _containers.RepeatedCompositeFieldContainer[_common_pb2.ScoreReason]
    def __init__(self, product: _Optional[_Union[_common_pb2.Product, _Mapping]] = ..., score: _Optional[float] = ..., position: _Optional[int] = ..., reasons: _Optional[_Iterable[_Union[_common_pb2.ScoreReason, _Mapping]]] = ...) -> None: ...

class QueryInterpretation(_message.Message):
    __slots__ = ("corrected_query", "language", "extracted_filters", "search_text", "translated_text", "predicted_categories", "prefers_low_price")
    CORRECTED_QUERY_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    EXTRACTED_FILTERS_FIELD_NUMBER: _ClassVar[int]
    SEARCH_TEXT_FIELD_NUMBER: _ClassVar[int]
    TRANSLATED_TEXT_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    PREFERS_LOW_PRICE_FIELD_NUMBER: _ClassVar[int]
    corrected_query: str
    language: str
    extracted_filters: _common_pb2.Filters
    search_text: str
    translated_text: str
    predicted_categories: _containers.RepeatedCompositeFieldContainer[_common_pb2.CategoryScore]
    prefers_low_price: bool
    def __init__(self, corrected_query: _Optional[str] = ..., language: _Optional[str] = ..., extracted_filters: _Optional[_Union[_common_pb2.Filters, _Mapping]] = ..., search_text: _Optional[str] = ..., translated_text: _Optional[str] = ..., predicted_categories: _Optional[_Iterable[_Union[_common_pb2.CategoryScore, _Mapping]]] = ..., prefers_low_price: _Optional[bool] = ...) -> None: ...

class StageTiming(_message.Message):
    __slots__ = ("stage", "milliseconds")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    MILLISECONDS_FIELD_NUMBER: _ClassVar[int]
    stage: str
    milliseconds: float
    def __init__(self, stage: _Optional[str] = ..., milliseconds: _Optional[float] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("request_id", "results", "next_page_token", "total_size", "interpretation", "model_version", "timings", "degraded_stages", "notes", "facets", "applied_rule_ids")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    INTERPRETATION_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_STAGES_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    FACETS_FIELD_NUMBER: _ClassVar[int]
    APPLIED_RULE_IDS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    results: _containers.RepeatedCompositeFieldContainer[SearchResult]
    next_page_token: str
    total_size: int
    interpretation: QueryInterpretation
    model_version: str
    timings: _containers.RepeatedCompositeFieldContainer[StageTiming]
    degraded_stages: _containers.RepeatedScalarFieldContainer[str]
    notes: _containers.RepeatedScalarFieldContainer[str]
    facets: _containers.RepeatedCompositeFieldContainer[_common_pb2.Facet]
    applied_rule_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, request_id: _Optional[str] = ..., results: _Optional[_Iterable[_Union[SearchResult, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ..., interpretation: _Optional[_Union[QueryInterpretation, _Mapping]] = ..., model_version: _Optional[str] = ..., timings: _Optional[_Iterable[_Union[StageTiming, _Mapping]]] = ..., degraded_stages: _Optional[_Iterable[str]] = ..., notes: _Optional[_Iterable[str]] = ..., facets: _Optional[_Iterable[_Union[_common_pb2.Facet, _Mapping]]] = ..., applied_rule_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class RecommendRequest(_message.Message):
    __slots__ = ("mode", "product_id", "category", "page_size", "page_token", "filters", "user_id", "session_id", "request_id", "history_product_ids", "cart_product_ids")
    MODE_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    HISTORY_PRODUCT_IDS_FIELD_NUMBER: _ClassVar[int]
    CART_PRODUCT_IDS_FIELD_NUMBER: _ClassVar[int]
    mode: RecommendMode
    product_id: str
    category: str
    page_size: int
    page_token: str
    filters: _common_pb2.Filters
    user_id: str
    session_id: str
    request_id: str
    history_product_ids: _containers.RepeatedScalarFieldContainer[str]
    cart_product_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, mode: _Optional[_Union[RecommendMode, str]] = ..., product_id: _Optional[str] = ..., category: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., filters: _Optional[_Union[_common_pb2.Filters, _Mapping]] = ..., user_id: _Optional[str] = ..., session_id: _Optional[str] = ..., request_id: _Optional[str] = ..., history_product_ids: _Optional[_Iterable[str]] = ..., cart_product_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class RecommendResponse(_message.Message):
    __slots__ = ("request_id", "results", "next_page_token", "total_size", "model_version", "timings", "degraded_stages", "unknown_product_ids")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_STAGES_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_PRODUCT_IDS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    results: _containers.RepeatedCompositeFieldContainer[SearchResult]
    next_page_token: str
    total_size: int
    model_version: str
    timings: _containers.RepeatedCompositeFieldContainer[StageTiming]
    degraded_stages: _containers.RepeatedScalarFieldContainer[str]
    unknown_product_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, request_id: _Optional[str] = ..., results: _Optional[_Iterable[_Union[SearchResult, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ..., model_version: _Optional[str] = ..., timings: _Optional[_Iterable[_Union[StageTiming, _Mapping]]] = ..., degraded_stages: _Optional[_Iterable[str]] = ..., unknown_product_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class TrackRequest(_message.Message):
    __slots__ = ("interactions",)
    INTERACTIONS_FIELD_NUMBER: _ClassVar[int]
    interactions: _containers.RepeatedCompositeFieldContainer[_events_pb2.Interaction]
    def __init__(self, interactions: _Optional[_Iterable[_Union[_events_pb2.Interaction, _Mapping]]] = ...) -> None: ...

class TrackResponse(_message.Message):
    __slots__ = ("accepted", "duplicates")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    duplicates: int
    def __init__(self, accepted: _Optional[int] = ..., duplicates: _Optional[int] = ...) -> None: ...

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

class SuggestResponse(_message.Message):
    __slots__ = ("request_id", "suggestions", "index_version")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SUGGESTIONS_FIELD_NUMBER: _ClassVar[int]
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    suggestions: _containers.RepeatedCompositeFieldContainer[_query_understanding_pb2.Suggestion]
    index_version: str
    def __init__(self, request_id: _Optional[str] = ..., suggestions: _Optional[_Iterable[_Union[_query_understanding_pb2.Suggestion, _Mapping]]] = ..., index_version: _Optional[str] = ...) -> None: ...
