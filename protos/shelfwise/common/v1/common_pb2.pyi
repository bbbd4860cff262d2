from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SortKey(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SORT_KEY_UNSPECIFIED: _ClassVar[SortKey]
    SORT_KEY_RELEVANCE: _ClassVar[SortKey]
    SORT_KEY_PRICE_ASCENDING: _ClassVar[SortKey]
    SORT_KEY_PRICE_DESCENDING: _ClassVar[SortKey]
    SORT_KEY_NEWEST: _ClassVar[SortKey]
    SORT_KEY_ATTRIBUTE_ASCENDING: _ClassVar[SortKey]
    SORT_KEY_ATTRIBUTE_DESCENDING: _ClassVar[SortKey]
SORT_KEY_UNSPECIFIED: SortKey
SORT_KEY_RELEVANCE: SortKey
SORT_KEY_PRICE_ASCENDING: SortKey
SORT_KEY_PRICE_DESCENDING: SortKey
SORT_KEY_NEWEST: SortKey
SORT_KEY_ATTRIBUTE_ASCENDING: SortKey
SORT_KEY_ATTRIBUTE_DESCENDING: SortKey

class Product(_message.Message):
    __slots__ = ("id", "title", "description", "brand", "category", "price", "currency", "attributes", "locale", "extra", "in_stock", "listed_at")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class ExtraEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    BRAND_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    LOCALE_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    IN_STOCK_FIELD_NUMBER: _ClassVar[int]
    LISTED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    title: str
    description: str
    brand: str
    category: str
    price: float
    currency: str
    attributes: _containers.ScalarMap[str, str]
    locale: str
    extra: _containers.ScalarMap[str, str]
    in_stock: bool
    listed_at: str
    def __init__(self, id: _Optional[str] = ..., title: _Optional[str] = ..., description: _Optional[str] = ..., brand: _Optional[str] = ..., category: _Optional[str] = ..., price: _Optional[float] = ..., currency: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ..., locale: _Optional[str] = ..., extra: _Optional[_Mapping[str, str]] = ..., in_stock: _Optional[bool] = ..., listed_at: _Optional[str] = ...) -> None: ...

class PriceRange(_message.Message):
    __slots__ = ("min", "max")
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    min: float
    max: float
    def __init__(self, min: _Optional[float] = ..., max: _Optional[float] = ...) -> None: ...

class Filters(_message.Message):
    __slots__ = ("categories", "brands", "price", "attributes", "in_stock_only")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    BRANDS_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    IN_STOCK_ONLY_FIELD_NUMBER: _ClassVar[int]
    categories: _containers.RepeatedScalarFieldContainer[str]
    brands: _containers.RepeatedScalarFieldContainer[str]
    price: PriceRange
    attributes: _containers.ScalarMap[str, str]
    in_stock_only: bool
    def __init__(self, categories: _Optional[_Iterable[str]] = ..., brands: _Optional[_Iterable[str]] = ..., price: _Optional[_Union[PriceRange, _Mapping]] = ..., attributes: _Optional[_Mapping[str, str]] = ..., in_stock_only: _Optional[bool] = ...) -> None: ...

class FacetRequest(_message.Message):
    __slots__ = ("field", "max_values", "price_bounds")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    MAX_VALUES_FIELD_NUMBER: _ClassVar[int]
    PRICE_BOUNDS_FIELD_NUMBER: _ClassVar[int]
    field: str
    max_values: int
    price_bounds: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, field: _Optional[str] = ..., max_values: _Optional[int] = ..., price_bounds: _Optional[_Iterable[float]] = ...) -> None: ...

class FacetValue(_message.Message):
    __slots__ = ("value", "count", "selected", "min", "max")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SELECTED_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    value: str
    count: int
    selected: bool
    min: float
    max: float
    def __init__(self, value: _Optional[str] = ..., count: _Optional[int] = ..., selected: _Optional[bool] = ..., min: _Optional[float] = ..., max: _Optional[float] = ...) -> None: ...

class Facet(_message.Message):
    __slots__ = ("field", "values", "products_with_value", "distinct_values", "disjunctive", "min_price", "max_price")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    PRODUCTS_WITH_VALUE_FIELD_NUMBER: _ClassVar[int]
    DISTINCT_VALUES_FIELD_NUMBER: _ClassVar[int]
    DISJUNCTIVE_FIELD_NUMBER: _ClassVar[int]
    MIN_PRICE_FIELD_NUMBER: _ClassVar[int]
    MAX_PRICE_FIELD_NUMBER: _ClassVar[int]
    field: str
    values: _containers.RepeatedCompositeFieldContainer[FacetValue]
    products_with_value: int
    distinct_values: int
    disjunctive: bool
    min_price: float
    max_price: float
    def __init__(self, field: _Optional[str] = ..., values: _Optional[_Iterable[_Union[FacetValue, _Mapping]]] = ..., products_with_value: _Optional[int] = ..., distinct_values: _Optional[int] = ..., disjunctive: _Optional[bool] = ..., min_price: _Optional[float] = ..., max_price: _Optional[float] = ...) -> None: ...

class Sort(_message.Message):
    __slots__ = ("key", "attribute")
    KEY_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTE_FIELD_NUMBER: _ClassVar[int]
    key: SortKey
    attribute: str
    def __init__(self, key: _Optional[_Union[SortKey, str]] = ..., attribute: _Optional[str] = ...) -> None: ...

class ScoreReason(_message.Message):
    __slots__ = ("feature", "value", "contribution")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    feature: str
    value: float
    contribution: float
    def __init__(self, feature: _Optional[str] = ..., value: _Optional[float] = ..., contribution: _Optional[float] = ...) -> None: ...

class CategoryScore(_message.Message):
    __slots__ = ("category", "score")
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    category: str
    score: float
    def __init__(self, category: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...
