from shelfwise.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RetrievalMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RETRIEVAL_MODE_UNSPECIFIED: _ClassVar[RetrievalMode]
    RETRIEVAL_MODE_HYBRID: _ClassVar[RetrievalMode]
    RETRIEVAL_MODE_LEXICAL: _ClassVar[RetrievalMode]
    RETRIEVAL_MODE_DENSE: _ClassVar[RetrievalMode]

class RuleAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RULE_ACTION_UNSPECIFIED: _ClassVar[RuleAction]
    RULE_ACTION_PIN: _ClassVar[RuleAction]
    RULE_ACTION_HIDE: _ClassVar[RuleAction]
    RULE_ACTION_BURY: _ClassVar[RuleAction]
    RULE_ACTION_BOOST: _ClassVar[RuleAction]
    RULE_ACTION_SYNONYM: _ClassVar[RuleAction]
RETRIEVAL_MODE_UNSPECIFIED: RetrievalMode
RETRIEVAL_MODE_HYBRID: RetrievalMode
RETRIEVAL_MODE_LEXICAL: RetrievalMode
RETRIEVAL_MODE_DENSE: RetrievalMode
RULE_ACTION_UNSPECIFIED: RuleAction
RULE_ACTION_PIN: RuleAction
RULE_ACTION_HIDE: RuleAction
RULE_ACTION_BURY: RuleAction
RULE_ACTION_BOOST: RuleAction
RULE_ACTION_SYNONYM: RuleAction

class RetrieveRequest(_message.Message):
    __slots__ = ("request_id", "query_text", "similar_to_product_id", "filters", "limit", "language", "history_product_ids", "exclude_product_ids", "preferred_product_ids", "mode", "translated_text", "facets", "sort")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_TEXT_FIELD_NUMBER: _ClassVar[int]
    SIMILAR_TO_PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    HISTORY_PRODUCT_IDS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_PRODUCT_IDS_FIELD_NUMBER: _ClassVar[int]
    PREFERRED_PRODUCT_IDS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    TRANSLATED_TEXT_FIELD_NUMBER: _ClassVar[int]
    FACETS_FIELD_NUMBER: _ClassVar[int]
    SORT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    query_text: str
    similar_to_product_id: str
    filters: _common_pb2.Filters
    limit: int
    language: str
    history_product_ids: _containers.RepeatedScalarFieldContainer[str]
    exclude_product_ids: _containers.RepeatedScalarFieldContainer[str]
    preferred_product_ids: _containers.RepeatedScalarFieldContainer[str]
    mode: RetrievalMode
    translated_text: str
    facets: _containers.RepeatedCompositeFieldContainer[_common_pb2.FacetRequest]
    sort: _common_pb2.Sort
    def __init__(self, request_id: _Optional[str] = ..., query_text: _Optional[str] = ..., similar_to_product_id: _Optional[str] = ..., filters: _Optional[_Union[_common_pb2.Filters, _Mapping]] = ..., limit: _Optional[int] = ..., language: _Optional[str] = ..., history_product_ids: _Optional[_Iterable[str]] = ..., exclude_product_ids: _Optional[_Iterable[str]] = ..., preferred_product_ids: _Optional[_Iterable[str]] = ..., mode: _Optional[_Union[RetrievalMode, str]] = ..., translated_text: _Optional[str] = ..., facets: _Optional[_Iterable[_Union[_common_pb2.FacetRequest, _Mapping]]] = ..., sort: _Optional[_Union[_common_pb2.Sort, _Mapping]] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("product", "lexical_score", "dense_score", "fused_score", "lexical_rank", "dense_rank", "lexical_coverage", "personal_score", "personal_rank", "multilingual_score", "multilingual_rank", "rule_boost", "buried", "rule_ids")
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    LEXICAL_SCORE_FIELD_NUMBER: _ClassVar[int]
    DENSE_SCORE_FIELD_NUMBER: _ClassVar[int]
    FUSED_SCORE_FIELD_NUMBER: _ClassVar[int]
    LEXICAL_RANK_FIELD_NUMBER: _ClassVar[int]
    DENSE_RANK_FIELD_NUMBER: _ClassVar[int]
    LEXICAL_COVERAGE_FIELD_NUMBER: _ClassVar[int]
    PERSONAL_SCORE_FIELD_NUMBER: _ClassVar[int]
    PERSONAL_RANK_FIELD_NUMBER: _ClassVar[int]
    MULTILINGUAL_SCORE_FIELD_NUMBER: _ClassVar[int]
    MULTILINGUAL_RANK_FIELD_NUMBER: _ClassVar[int]
    RULE_BOOST_FIELD_NUMBER: _ClassVar[int]
    BURIED_FIELD_NUMBER: _ClassVar[int]
    RULE_IDS_FIELD_NUMBER: _ClassVar[int]
    product: _common_pb2.Product
    lexical_score: float
    dense_score: float
    fused_score: float
    lexical_rank: int
    dense_rank: int
    lexical_coverage: float
    personal_score: float
    personal_rank: int
    multilingual_score: float
    multilingual_rank: int
    rule_boost: float
    buried: bool
    rule_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, product: _Optional[_Union[_common_pb2.Product, _Mapping]] = ..., lexical_score: _Optional[float] = ..., dense_score: _Optional[float] = ..., fused_score: _Optional[float] = ..., lexical_rank: _Optional[int] = ..., dense_rank: _Optional[int] = ..., lexical_coverage: _Optional[float] = ..., personal_score: _Optional[float] = ..., personal_rank: _Optional[int] = ..., multilingual_score: _Optional[float] = ..., multilingual_rank: _Optional[int] = ..., rule_boost: _Optional[float] = ..., buried: _Optional[bool] = ..., rule_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class PinnedProduct(_message.Message):
    __slots__ = ("product", "position", "rule_id")
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    product: _common_pb2.Product
    position: int
    rule_id: str
    def __init__(self, product: _Optional[_Union[_common_pb2.Product, _Mapping]] = ..., position: _Optional[int] = ..., rule_id: _Optional[str] = ...) -> None: ...

class RetrieveResponse(_message.Message):
    __slots__ = ("candidates", "total_matching", "model_version", "degraded_components", "personal_model_version", "facets", "pinned", "applied_rule_ids", "rules_version")
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MATCHING_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    PERSONAL_MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    FACETS_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    APPLIED_RULE_IDS_FIELD_NUMBER: _ClassVar[int]
    RULES_VERSION_FIELD_NUMBER: _ClassVar[int]
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    total_matching: int
    model_version: str
    degraded_components: _containers.RepeatedScalarFieldContainer[str]
    personal_model_version: str
    facets: _containers.RepeatedCompositeFieldContainer[_common_pb2.Facet]
    pinned: _containers.RepeatedCompositeFieldContainer[PinnedProduct]
    applied_rule_ids: _containers.RepeatedScalarFieldContainer[str]
    rules_version: int
    def __init__(self, candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., total_matching: _Optional[int] = ..., model_version: _Optional[str] = ..., degraded_components: _Optional[_Iterable[str]] = ..., personal_model_version: _Optional[str] = ..., facets: _Optional[_Iterable[_Union[_common_pb2.Facet, _Mapping]]] = ..., pinned: _Optional[_Iterable[_Union[PinnedProduct, _Mapping]]] = ..., applied_rule_ids: _Optional[_Iterable[str]] = ..., rules_version: _Optional[int] = ...) -> None: ...

class UpsertProductsRequest(_message.Message):
    __slots__ = ("products",)
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    products: _containers.RepeatedCompositeFieldContainer[_common_pb2.Product]
    def __init__(self, products: _Optional[_Iterable[_Union[_common_pb2.Product, _Mapping]]] = ...) -> None: ...

class UpsertProductsResponse(_message.Message):
    __slots__ = ("inserted", "updated", "model_version")
    INSERTED_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    inserted: int
    updated: int
    model_version: str
    def __init__(self, inserted: _Optional[int] = ..., updated: _Optional[int] = ..., model_version: _Optional[str] = ...) -> None: ...

class DeleteProductsRequest(_message.Message):
    __slots__ = ("product_ids",)
    PRODUCT_IDS_FIELD_NUMBER: _ClassVar[int]
    product_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, product_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteProductsResponse(_message.Message):
    __slots__ = ("deleted", "not_found_ids", "model_version")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    NOT_FOUND_IDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    not_found_ids: _containers.RepeatedScalarFieldContainer[str]
    model_version: str
    def __init__(self, deleted: _Optional[int] = ..., not_found_ids: _Optional[_Iterable[str]] = ..., model_version: _Optional[str] = ...) -> None: ...

class GetProductsRequest(_message.Message):
    __slots__ = ("product_ids",)
    PRODUCT_IDS_FIELD_NUMBER: _ClassVar[int]
    product_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, product_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GetProductsResponse(_message.Message):
    __slots__ = ("products", "not_found_ids", "model_version")
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    NOT_FOUND_IDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    products: _containers.RepeatedCompositeFieldContainer[_common_pb2.Product]
    not_found_ids: _containers.RepeatedScalarFieldContainer[str]
    model_version: str
    def __init__(self, products: _Optional[_Iterable[_Union[_common_pb2.Product, _Mapping]]] = ..., not_found_ids: _Optional[_Iterable[str]] = ..., model_version: _Optional[str] = ...) -> None: ...

class Rule(_message.Message):
    __slots__ = ("id", "action", "query", "category", "product_ids", "position", "attribute", "value", "boost", "terms", "one_way", "note", "version")
    ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_IDS_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOST_FIELD_NUMBER: _ClassVar[int]
    TERMS_FIELD_NUMBER: _ClassVar[int]
    ONE_WAY_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    id: str
    action: RuleAction
    query: str
    category: str
    product_ids: _containers.RepeatedScalarFieldContainer[str]
    position: int
    attribute: str
    value: str
    boost: float
    terms: _containers.RepeatedScalarFieldContainer[str]
    one_way: bool
    note: str
    version: int
    def __init__(self, id: _Optional[str] = ..., action: _Optional[_Union[RuleAction, str]] = ..., query: _Optional[str] = ..., category: _Optional[str] = ..., product_ids: _Optional[_Iterable[str]] = ..., position: _Optional[int] = ..., attribute: _Optional[str] = ..., value: _Optional[str] = ..., boost: _Optional[float] = ..., terms: _Optional[_Iterable[str]] = ..., one_way: _Optional[bool] = ..., note: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class PutRuleRequest(_message.Message):
    __slots__ = ("rule",)
    RULE_FIELD_NUMBER: _ClassVar[int]
    rule: Rule
    def __init__(self, rule: _Optional[_Union[Rule, _Mapping]] = ...) -> None: ...

class PutRuleResponse(_message.Message):
    __slots__ = ("rule", "created", "rules_version")
    RULE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    RULES_VERSION_FIELD_NUMBER: _ClassVar[int]
    rule: Rule
    created: bool
    rules_version: int
    def __init__(self, rule: _Optional[_Union[Rule, _Mapping]] = ..., created: _Optional[bool] = ..., rules_version: _Optional[int] = ...) -> None: ...

class DeleteRuleRequest(_message.Message):
    __slots__ = ("rule_id",)
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    rule_id: str
    def __init__(self, rule_id: _Optional[str] = ...) -> None: ...

class DeleteRuleResponse(_message.Message):
    __slots__ = ("rules_version",)
    RULES_VERSION_FIELD_NUMBER: _ClassVar[int]
    rules_version: int
    def __init__(self, rules_version: _Optional[int] = ...) -> None: ...

class ListRulesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListRulesResponse(_message.Message):
    __slots__ = ("rules", "rules_version")
    RULES_FIELD_NUMBER: _ClassVar[int]
    RULES_VERSION_FIELD_NUMBER: _ClassVar[int]
    rules: _containers.RepeatedCompositeFieldContainer[Rule]
    rules_version: int
    def __init__(self, rules: _Optional[_Iterable[_Union[Rule, _Mapping]]] = ..., rules_version: _Optional[int] = ...) -> None: ...
