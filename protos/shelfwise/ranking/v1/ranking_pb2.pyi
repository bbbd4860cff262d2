from shelfwise.common.v1 import common_pb2 as _common_pb2
from shelfwise.retrieval.v1 import retrieval_pb2 as _retrieval_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RankingPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RANKING_POLICY_UNSPECIFIED: _ClassVar[RankingPolicy]
    RANKING_POLICY_MODEL: _ClassVar[RankingPolicy]
    RANKING_POLICY_FORMULA: _ClassVar[RankingPolicy]
    RANKING_POLICY_RETRIEVAL_ORDER: _ClassVar[RankingPolicy]
RANKING_POLICY_UNSPECIFIED: RankingPolicy
RANKING_POLICY_MODEL: RankingPolicy
RANKING_POLICY_FORMULA: RankingPolicy
RANKING_POLICY_RETRIEVAL_ORDER: RankingPolicy

class RankRequest(_message.Message):
    __slots__ = ("request_id", "query", "candidates", "preferred_brands", "preferred_categories", "preferred_attributes", "offset", "limit", "user_id", "policy", "ctr_head_version", "translated_query", "prefer_low_price", "exclude_popularity", "exclude_personalization", "exclude_ctr_head")
    class PreferredAttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    PREFERRED_BRANDS_FIELD_NUMBER: _ClassVar[int]
    PREFERRED_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    PREFERRED_ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    CTR_HEAD_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRANSLATED_QUERY_FIELD_NUMBER: _ClassVar[int]
    PREFER_LOW_PRICE_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_POPULARITY_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_PERSONALIZATION_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_CTR_HEAD_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    query: str
    candidates: _containers.RepeatedCompositeFieldContainer[_retrieval_pb2.Candidate]
    preferred_brands: _containers.RepeatedScalarFieldContainer[str]
    preferred_categories: _containers.RepeatedScalarFieldContainer[str]
    preferred_attributes: _containers.ScalarMap[str, str]
    offset: int
    limit: int
    user_id: str
    policy: RankingPolicy
    ctr_head_version: int
    translated_query: str
    prefer_low_price: bool
    exclude_popularity: bool
    exclude_personalization: bool
    exclude_ctr_head: bool
    def __init__(self, request_id: _Optional[str] = ..., query: _Optional[str] = ..., candidates: _Optional[_Iterable[_Union[_retrieval_pb2.Candidate, _Mapping]]] = ..., preferred_brands: _Optional[_Iterable[str]] = ..., preferred_categories: _Optional[_Iterable[str]] = ..., preferred_attributes: _Optional[_Mapping[str, str]] = ..., offset: _Optional[int] = ..., limit: _Optional[int] = ..., user_id: _Optional[str] = ..., policy: _Optional[_Union[RankingPolicy, str]] = ..., ctr_head_version: _Optional[int] = ..., translated_query: _Optional[str] = ..., prefer_low_price: _Optional[bool] = ..., exclude_popularity: _Optional[bool] = ..., exclude_personalization: _Optional[bool] = ..., exclude_ctr_head: _Optional[bool] = ...) -> None: ...

class RankedItem(_message.Message):
    __slots__ = ("product_id", "score", "position", "reasons")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    score: float
    position: int
    reasons: _containers.RepeatedCompositeFieldContainer[_common_pb2.ScoreReason]
    def __init__(self, product_id: _Optional[str] = ..., score: _Optional[float] = ..., position: _Optional[int] = ..., reasons: _Optional[_Iterable[_Union[_common_pb2.ScoreReason, _Mapping]]] = ...) -> None: ...

class RankResponse(_message.Message):
    __slots__ = ("items", "total", "model_version", "degraded_components", "query_categories", "relevant")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    QUERY_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    RELEVANT_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[RankedItem]
    total: int
    model_version: str
    degraded_components: _containers.RepeatedScalarFieldContainer[str]
    query_categories: _containers.RepeatedCompositeFieldContainer[_common_pb2.CategoryScore]
    relevant: int
    def __init__(self, items: _Optional[_Iterable[_Union[RankedItem, _Mapping]]] = ..., total: _Optional[int] = ..., model_version: _Optional[str] = ..., degraded_components: _Optional[_Iterable[str]] = ..., query_categories: _Optional[_Iterable[_Union[_common_pb2.CategoryScore, _Mapping]]] = ..., relevant: _Optional[int] = ...) -> None: ...
