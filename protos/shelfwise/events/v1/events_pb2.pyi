import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Surface(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SURFACE_UNSPECIFIED: _ClassVar[Surface]
    SURFACE_SEARCH: _ClassVar[Surface]
    SURFACE_RECOMMEND: _ClassVar[Surface]

class InteractionType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INTERACTION_TYPE_UNSPECIFIED: _ClassVar[InteractionType]
    INTERACTION_TYPE_CLICK: _ClassVar[InteractionType]
    INTERACTION_TYPE_ADD_TO_CART: _ClassVar[InteractionType]
    INTERACTION_TYPE_PURCHASE: _ClassVar[InteractionType]

class MetricsGrouping(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METRICS_GROUPING_UNSPECIFIED: _ClassVar[MetricsGrouping]
    METRICS_GROUPING_REQUEST: _ClassVar[MetricsGrouping]
    METRICS_GROUPING_EXPERIMENT_ARM: _ClassVar[MetricsGrouping]
    METRICS_GROUPING_MODEL_VERSION: _ClassVar[MetricsGrouping]
SURFACE_UNSPECIFIED: Surface
SURFACE_SEARCH: Surface
SURFACE_RECOMMEND: Surface
INTERACTION_TYPE_UNSPECIFIED: InteractionType
INTERACTION_TYPE_CLICK: InteractionType
INTERACTION_TYPE_ADD_TO_CART: InteractionType
INTERACTION_TYPE_PURCHASE: InteractionType
METRICS_GROUPING_UNSPECIFIED: MetricsGrouping
METRICS_GROUPING_REQUEST: MetricsGrouping
METRICS_GROUPING_EXPERIMENT_ARM: MetricsGrouping
METRICS_GROUPING_MODEL_VERSION: MetricsGrouping

class Impression(_message.Message):
    __slots__ = ("event_id", "request_id", "user_id", "session_id", "surface", "query", "product_ids", "first_position", "model_version", "experiment_arm", "occurred_at", "features", "interleaving_arms", "propensities", "exploration_pool", "exploration_pool_features", "exploration_pool_shown")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SURFACE_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_IDS_FIELD_NUMBER: _ClassVar[int]
    FIRST_POSITION_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_ARM_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    INTERLEAVING_ARMS_FIELD_NUMBER: _ClassVar[int]
    PROPENSITIES_FIELD_NUMBER: _ClassVar[int]
    EXPLORATION_POOL_FIELD_NUMBER: _ClassVar[int]
    EXPLORATION_POOL_FEATURES_FIELD_NUMBER: _ClassVar[int]
    EXPLORATION_POOL_SHOWN_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    request_id: str
    user_id: str
    session_id: str
    surface: Surface
    query: str
    product_ids: _containers.RepeatedScalarFieldContainer[str]
    first_position: int
    model_version: str
    experiment_arm: str
    occurred_at: _timestamp_pb2.Timestamp
    features: _containers.RepeatedCompositeFieldContainer[ProductFeatures]
    interleaving_arms: _containers.RepeatedScalarFieldContainer[str]
    propensities: _containers.RepeatedScalarFieldContainer[float]
    exploration_pool: _containers.RepeatedScalarFieldContainer[str]
    exploration_pool_features: _containers.RepeatedCompositeFieldContainer[ProductFeatures]
    exploration_pool_shown: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, event_id: _Optional[str] = ..., request_id: _Optional[str] = ..., user_id: _Optional[str] = ..., session_id: _Optional[str] = ..., surface: _Optional[_Union[Surface, str]] = ..., query: _Optional[str] = ..., product_ids: _Optional[_Iterable[str]] = ..., first_position: _Optional[int] = ..., model_version: _Optional[str] = ..., experiment_arm: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., features: _Optional[_Iterable[_Union[ProductFeatures, _Mapping]]] = ..., interleaving_arms: _Optional[_Iterable[str]] = ..., propensities: _Optional[_Iterable[float]] = ..., exploration_pool: _Optional[_Iterable[str]] = ..., exploration_pool_features: _Optional[_Iterable[_Union[ProductFeatures, _Mapping]]] = ..., exploration_pool_shown: _Optional[_Iterable[float]] = ...) -> None: ...

class ProductFeatures(_message.Message):
    __slots__ = ("values",)
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.ScalarMap[str, float]
    def __init__(self, values: _Optional[_Mapping[str, float]] = ...) -> None: ...

class Interaction(_message.Message):
    __slots__ = ("event_id", "type", "request_id", "product_id", "position", "user_id", "session_id", "quantity", "value", "occurred_at")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    type: InteractionType
    request_id: str
    product_id: str
    position: int
    user_id: str
    session_id: str
    quantity: int
    value: float
    occurred_at: _timestamp_pb2.Timestamp
    def __init__(self, event_id: _Optional[str] = ..., type: _Optional[_Union[InteractionType, str]] = ..., request_id: _Optional[str] = ..., product_id: _Optional[str] = ..., position: _Optional[int] = ..., user_id: _Optional[str] = ..., session_id: _Optional[str] = ..., quantity: _Optional[int] = ..., value: _Optional[float] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class LogEventsRequest(_message.Message):
    __slots__ = ("impressions", "interactions")
    IMPRESSIONS_FIELD_NUMBER: _ClassVar[int]
    INTERACTIONS_FIELD_NUMBER: _ClassVar[int]
    impressions: _containers.RepeatedCompositeFieldContainer[Impression]
    interactions: _containers.RepeatedCompositeFieldContainer[Interaction]
    def __init__(self, impressions: _Optional[_Iterable[_Union[Impression, _Mapping]]] = ..., interactions: _Optional[_Iterable[_Union[Interaction, _Mapping]]] = ...) -> None: ...

class LogEventsResponse(_message.Message):
    __slots__ = ("accepted", "duplicates")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    duplicates: int
    def __init__(self, accepted: _Optional[int] = ..., duplicates: _Optional[int] = ...) -> None: ...

class StreamEventsRequest(_message.Message):
    __slots__ = ("sequence", "impressions", "interactions")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    IMPRESSIONS_FIELD_NUMBER: _ClassVar[int]
    INTERACTIONS_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    impressions: _containers.RepeatedCompositeFieldContainer[Impression]
    interactions: _containers.RepeatedCompositeFieldContainer[Interaction]
    def __init__(self, sequence: _Optional[int] = ..., impressions: _Optional[_Iterable[_Union[Impression, _Mapping]]] = ..., interactions: _Optional[_Iterable[_Union[Interaction, _Mapping]]] = ...) -> None: ...

class StreamEventsResponse(_message.Message):
    __slots__ = ("sequence", "accepted", "duplicates")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    accepted: int
    duplicates: int
    def __init__(self, sequence: _Optional[int] = ..., accepted: _Optional[int] = ..., duplicates: _Optional[int] = ...) -> None: ...

class GetMetricsRequest(_message.Message):
    __slots__ = ("group_by", "request_id", "since", "until", "limit")
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    group_by: MetricsGrouping
    request_id: str
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    limit: int
    def __init__(self, group_by: _Optional[_Union[MetricsGrouping, str]] = ..., request_id: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., limit: _Optional[int] = ...) -> None: ...

class MetricsRow(_message.Message):
    __slots__ = ("key", "requests", "impressions", "clicks", "add_to_carts", "purchases", "revenue", "ctr", "conversion_rate")
    KEY_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    IMPRESSIONS_FIELD_NUMBER: _ClassVar[int]
    CLICKS_FIELD_NUMBER: _ClassVar[int]
    ADD_TO_CARTS_FIELD_NUMBER: _ClassVar[int]
    PURCHASES_FIELD_NUMBER: _ClassVar[int]
    REVENUE_FIELD_NUMBER: _ClassVar[int]
    CTR_FIELD_NUMBER: _ClassVar[int]
    CONVERSION_RATE_FIELD_NUMBER: _ClassVar[int]
    key: str
    requests: int
    impressions: int
    clicks: int
    add_to_carts: int
    purchases: int
    revenue: float
    ctr: float
    conversion_rate: float
    def __init__(self, key: _Optional[str] = ..., requests: _Optional[int] = ..., impressions: _Optional[int] = ..., clicks: _Optional[int] = ..., add_to_carts: _Optional[int] = ..., purchases: _Optional[int] = ..., revenue: _Optional[float] = ..., ctr: _Optional[float] = ..., conversion_rate: _Optional[float] = ...) -> None: ...

class GetMetricsResponse(_message.Message):
    __slots__ = ("rows",)
    ROWS_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[MetricsRow]
    def __init__(self, rows: _Optional[_Iterable[_Union[MetricsRow, _Mapping]]] = ...) -> None: ...

class ListPopularProductsRequest(_message.Message):
    __slots__ = ("window_days", "limit", "since", "until")
    WINDOW_DAYS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    window_days: int
    limit: int
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    def __init__(self, window_days: _Optional[int] = ..., limit: _Optional[int] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PopularProduct(_message.Message):
    __slots__ = ("product_id", "clicks", "add_to_carts", "purchases", "score")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    CLICKS_FIELD_NUMBER: _ClassVar[int]
    ADD_TO_CARTS_FIELD_NUMBER: _ClassVar[int]
    PURCHASES_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    clicks: int
    add_to_carts: int
    purchases: int
    score: float
    def __init__(self, product_id: _Optional[str] = ..., clicks: _Optional[int] = ..., add_to_carts: _Optional[int] = ..., purchases: _Optional[int] = ..., score: _Optional[float] = ...) -> None: ...

class ListPopularProductsResponse(_message.Message):
    __slots__ = ("products",)
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    products: _containers.RepeatedCompositeFieldContainer[PopularProduct]
    def __init__(self, products: _Optional[_Iterable[_Union[PopularProduct, _Mapping]]] = ...) -> None: ...

class ListUserHistoryRequest(_message.Message):
    __slots__ = ("user_id", "session_id", "limit")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    session_id: str
    limit: int
    def __init__(self, user_id: _Optional[str] = ..., session_id: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class HistoryEntry(_message.Message):
    __slots__ = ("product_id", "type", "occurred_at")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    type: InteractionType
    occurred_at: _timestamp_pb2.Timestamp
    def __init__(self, product_id: _Optional[str] = ..., type: _Optional[_Union[InteractionType, str]] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListUserHistoryResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[HistoryEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[HistoryEntry, _Mapping]]] = ...) -> None: ...
