"""Validation of what a caller sends the gateway: the limits of each field, and the checks that
turn a malformed field into INVALID_ARGUMENT naming it, before any stage is called."""

from __future__ import annotations

import uuid

from shelfwise.common.v1 import common_pb2
from shelfwise.gateway.v1 import gateway_pb2

from services.common.errors import InvalidArgument
from services.common.text import normalize_within

MAX_QUERY_CHARS = 512
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 100
MAX_TRACK_EVENTS = 500
MAX_HISTORY_IDS = 200
MAX_ID_CHARS = 128
MAX_CATEGORY_CHARS = 200
MAX_FACETS = 20
# The one wording of a missing required field: "<field path>: is required".
REQUIRED = "is required"


def enum_names(enum, skip_unspecified: bool = True) -> str:
    """The proto names of an enum's values, as errors list them (e.g. RECOMMEND_MODE_FOR_USER)."""
    return ", ".join(name for name in enum.keys() if not (skip_unspecified and name.endswith("_UNSPECIFIED")))


def mode_of(request) -> int:
    """RecommendRequest.mode: required, one of the RecommendMode values."""
    if request.mode == gateway_pb2.RECOMMEND_MODE_UNSPECIFIED:
        raise InvalidArgument("mode", REQUIRED)
    if request.mode not in gateway_pb2.RecommendMode.values():
        raise InvalidArgument("mode", f"must be one of {enum_names(gateway_pb2.RecommendMode)}, got {request.mode}")
    return request.mode


def required_id(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument(field, REQUIRED)
    if len(value) > MAX_ID_CHARS:
        raise InvalidArgument(field, f"must be at most {MAX_ID_CHARS} characters")
    return value


def query_of(request) -> str:
    query = request.query
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidArgument("query", f"must be at most {MAX_QUERY_CHARS} characters, got {len(query)}")
    if not query.strip():  # whitespace alone is no query either
        raise InvalidArgument("query", REQUIRED)
    # Every stage reads the normalised text: refused here, under the caller's field name, rather
    # than by a stage under its own.
    normalize_within(query, MAX_QUERY_CHARS, "query")
    return query


def page_size_of(request) -> int:
    size = request.page_size if request.HasField("page_size") else DEFAULT_PAGE_SIZE
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise InvalidArgument("page_size", f"must be between 1 and {MAX_PAGE_SIZE}, got {size}")
    return size


def request_id_of(request) -> str:
    if not request.request_id:
        return uuid.uuid4().hex
    if len(request.request_id) > MAX_ID_CHARS or not request.request_id.isprintable():
        raise InvalidArgument("request_id", f"must be 1-{MAX_ID_CHARS} printable characters")
    return request.request_id


def shopper_ids_of(request) -> None:
    for name in ("user_id", "session_id"):
        value = getattr(request, name)
        if len(value) > MAX_ID_CHARS or (value and not value.isprintable()):
            raise InvalidArgument(name, f"must be at most {MAX_ID_CHARS} printable characters")


def product_ids_of(values, field: str, maximum: int, required: bool = False) -> list[str]:
    ids = list(values)
    if required and not ids:
        raise InvalidArgument(field, REQUIRED)
    if len(ids) > maximum:
        raise InvalidArgument(field, f"must list at most {maximum} product ids, got {len(ids)}")
    for index, product_id in enumerate(ids):
        if not product_id or len(product_id) > MAX_ID_CHARS:
            raise InvalidArgument(f"{field}[{index}]", f"must be 1-{MAX_ID_CHARS} characters")
    return ids


def validate_filters(filters: common_pb2.Filters, where: str = "filters") -> None:
    for bound in ("min", "max"):
        if filters.price.HasField(bound):
            value = getattr(filters.price, bound)
            if not (value >= 0 and value != float("inf")):
                raise InvalidArgument(f"{where}.price.{bound}", f"must be a finite number >= 0, got {value}")
    if filters.price.HasField("min") and filters.price.HasField("max") and filters.price.min > filters.price.max:
        raise InvalidArgument(f"{where}.price", "min must not exceed max")


def validate_track_size(request) -> None:
    count = len(request.interactions)
    if not count:
        raise InvalidArgument("interactions", REQUIRED)
    if count > MAX_TRACK_EVENTS:
        raise InvalidArgument("interactions", f"must contain 1-{MAX_TRACK_EVENTS} events, got {count}")


def validate_facets_and_sort(request) -> None:
    """What the gateway checks before any stage runs; retrieval checks the fields against the
    catalogue (an unknown attribute is INVALID_ARGUMENT there, naming the same field)."""
    if len(request.facets) > MAX_FACETS:
        raise InvalidArgument("facets", f"must list at most {MAX_FACETS} facets, got {len(request.facets)}")
    for index, facet in enumerate(request.facets):
        if not facet.field.strip() or len(facet.field) > MAX_CATEGORY_CHARS + len("attributes."):
            raise InvalidArgument(f"facets[{index}].field", "must be category, brand, price or attributes.<name>")
    if request.sort.key not in common_pb2.SortKey.values():
        raise InvalidArgument("sort.key", f"must be one of {enum_names(common_pb2.SortKey)}, got {request.sort.key}")
    if len(request.sort.attribute) > MAX_CATEGORY_CHARS:
        raise InvalidArgument("sort.attribute", f"must be at most {MAX_CATEGORY_CHARS} characters")
