"""Catalogue products: the domain record, its validation rules, and catalogue file parsing.

Catalogue files are JSONL, CSV or Parquet with `id, title, description, brand, category,
price, attributes, locale` (plus `currency`, `in_stock` and `listed_at`); any other column is
kept in `extra`. Parsing
reports every bad row with its line number and field, so an import never half-succeeds
silently.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from services.common.errors import InvalidArgument

MAX_ID_CHARS = 128
MAX_TITLE_CHARS = 1_000
MAX_DESCRIPTION_CHARS = 20_000
MAX_SHORT_FIELD_CHARS = 200
MAX_ATTRIBUTES = 64
# Extra columns are kept as they come (a shop feed may carry many, some long), so their limits
# are generous: they only stop a row from carrying megabytes into every read of the catalogue.
MAX_EXTRA_FIELDS = 200
MAX_EXTRA_VALUE_CHARS = MAX_DESCRIPTION_CHARS
# A lone surrogate is not Unicode text: UTF-8 cannot encode it, so neither PostgreSQL nor the
# content hash can take it. JSON's "\ud800" decodes to one, and files are read with
# errors="surrogateescape", so an invalid UTF-8 byte becomes one too: the row that holds it is
# reported, the file's other rows still import.
_SURROGATE = re.compile("[\ud800-\udfff]")
KNOWN_FIELDS = (
    "id", "title", "description", "brand", "category", "price", "currency", "attributes", "locale", "in_stock",
    "listed_at",
)
# Spellings of an availability column a feed may carry (CSV writes booleans as text).
_TRUE_TEXTS = {"true", "1", "yes", "in stock", "in_stock", "instock", "available"}
_FALSE_TEXTS = {"false", "0", "no", "out of stock", "out_of_stock", "outofstock", "unavailable", "sold out"}


@dataclass(frozen=True)
class Product:
    id: str
    title: str
    price: float
    description: str = ""
    brand: str = ""
    category: str = ""
    currency: str = "USD"
    attributes: Mapping[str, str] = field(default_factory=dict)
    locale: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)
    # Whether the shop can sell it now (catalogues without the field: in stock).
    in_stock: bool = True
    # When it was first listed, RFC 3339 with a zone; "" on import = at its first import (the
    # store fills it in, services/retrieval/store.py).
    listed_at: str = ""

    def embedding_text(self) -> str:
        """What the text encoder reads for this product. Attributes stay out: specs such as
        "abv 14%" or "volume 750ml" dilute the meaning (measured on the demo catalogue); they
        reach retrieval through BM25 and filters instead."""
        return ". ".join(part for part in (self.title, self.brand, self.category, self.description) if part)

    def content_hash(self) -> str:
        return hashlib.sha256(self.embedding_text().encode("utf-8")).hexdigest()[:32]


def validate_product(product: Product, where: str = "product") -> Product:
    """Raises InvalidArgument naming `where.<field>` and the rule; returns the product."""

    def check_text(name: str, value: str, limit: int, required: bool = False) -> None:
        if required and not value.strip():
            raise InvalidArgument(f"{where}.{name}", "must not be empty")
        if len(value) > limit:
            raise InvalidArgument(f"{where}.{name}", f"must be at most {limit} characters, got {len(value)}")
        if "\x00" in value:
            raise InvalidArgument(f"{where}.{name}", "must not contain NUL characters")
        if _SURROGATE.search(value):
            raise InvalidArgument(f"{where}.{name}", "must be valid UTF-8 text (it has an invalid byte or a lone surrogate)")

    check_text("id", product.id, MAX_ID_CHARS, required=True)
    if product.id != product.id.strip():
        raise InvalidArgument(f"{where}.id", "must not start or end with whitespace")
    check_text("title", product.title, MAX_TITLE_CHARS, required=True)
    check_text("description", product.description, MAX_DESCRIPTION_CHARS)
    for name in ("brand", "category", "currency", "locale"):
        check_text(name, getattr(product, name), MAX_SHORT_FIELD_CHARS)
    if not math.isfinite(product.price) or product.price < 0:
        raise InvalidArgument(f"{where}.price", f"must be a finite number >= 0, got {product.price}")
    if product.listed_at:
        listed_timestamp(product.listed_at, f"{where}.listed_at")
    if len(product.attributes) > MAX_ATTRIBUTES:
        raise InvalidArgument(f"{where}.attributes", f"must have at most {MAX_ATTRIBUTES} entries")
    for key, value in product.attributes.items():
        check_text(f"attributes[{key[:40]!r}]", key, MAX_SHORT_FIELD_CHARS, required=True)
        check_text(f"attributes[{key[:40]!r}]", value, MAX_SHORT_FIELD_CHARS)
    if len(product.extra) > MAX_EXTRA_FIELDS:
        raise InvalidArgument(f"{where}.extra", f"must have at most {MAX_EXTRA_FIELDS} fields, got {len(product.extra)}")
    for key, value in product.extra.items():
        check_text(f"extra[{key[:40]!r}]", key, MAX_SHORT_FIELD_CHARS)
        check_text(f"extra[{key[:40]!r}]", value, MAX_EXTRA_VALUE_CHARS)
    return product


def listed_timestamp(listed_at: str, where: str = "listed_at") -> float:
    """Seconds since the epoch of an RFC 3339 time with a zone ("2026-11-30T09:00:00Z");
    InvalidArgument naming `where` otherwise."""
    try:
        moment = datetime.fromisoformat(listed_at.strip())
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise InvalidArgument(where, f"must be an RFC 3339 time with a zone, e.g. 2026-11-30T09:00:00Z, got {listed_at[:40]!r}")
    return moment.timestamp()


def _in_stock(value: Any, where: str) -> bool:
    if value is None or value == "":
        return True
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().casefold()
    if text in _TRUE_TEXTS:
        return True
    if text in _FALSE_TEXTS:
        return False
    raise InvalidArgument(where, f"must be true or false (or in stock / out of stock), got {_preview(value)}")


def product_from_record(record: Mapping[str, Any], where: str) -> Product:
    """A product from one parsed catalogue row (JSON object, CSV row or Parquet row)."""
    if not isinstance(record, Mapping):
        raise InvalidArgument(where, "must be an object with product fields")
    raw_price = record.get("price")
    if raw_price is None or (isinstance(raw_price, str) and not raw_price.strip()):
        raise InvalidArgument(f"{where}.price", "is required")
    if isinstance(raw_price, bool):
        raise InvalidArgument(f"{where}.price", f"must be a number, got {raw_price!r}")
    try:
        price = float(str(raw_price).strip().lstrip("$")) if isinstance(raw_price, str) else float(raw_price)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond any float
        raise InvalidArgument(f"{where}.price", f"must be a number, got {_preview(raw_price)}") from None
    attributes = record.get("attributes") or {}
    if isinstance(attributes, str):
        try:
            attributes = json.loads(attributes) if attributes.strip() else {}
        except (ValueError, RecursionError):  # bad JSON, an integer too long, nesting too deep
            raise InvalidArgument(f"{where}.attributes", "must be a JSON object") from None
    if isinstance(attributes, list) and all(
        isinstance(p, (tuple, list)) and len(p) == 2 and isinstance(p[0], (str, int, float)) for p in attributes
    ):
        attributes = dict(attributes)  # Parquet map<string,string> columns arrive as key/value pairs
    if not isinstance(attributes, Mapping):
        raise InvalidArgument(f"{where}.attributes", "must be an object of attribute name to value")
    extra = {
        str(key): value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        for key, value in record.items()
        if key not in KNOWN_FIELDS and value is not None
    }

    def text(name: str, default: str = "") -> str:
        value = record.get(name)
        return default if value is None else str(value)

    product = Product(
        id=text("id"),
        title=text("title"),
        description=text("description"),
        brand=text("brand"),
        category=text("category"),
        price=price,
        currency=text("currency", "USD") or "USD",
        attributes={str(k): str(v) for k, v in attributes.items() if v is not None},
        locale=text("locale"),
        extra=extra,
        in_stock=_in_stock(record.get("in_stock"), f"{where}.in_stock"),
        listed_at=text("listed_at").strip(),
    )
    return validate_product(product, where)


def _preview(value: Any) -> str:
    """The start of a bad value for an error message (str() itself fails on huge integers)."""
    try:
        return repr(str(value)[:40])
    except ValueError:
        return f"a {type(value).__name__} too long to show"


@dataclass(frozen=True)
class RowError:
    row: int
    message: str


def _records(path: Path) -> Iterator[tuple[int, Any]]:
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".ndjson"}:
        with path.open(encoding="utf-8", errors="surrogateescape") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        yield number, json.loads(line)
                    except json.JSONDecodeError as error:
                        yield number, InvalidArgument(f"line {number}", f"is not valid JSON ({error.msg})")
                    except ValueError as error:  # e.g. an integer of more than 4300 digits
                        yield number, InvalidArgument(f"line {number}", f"is not valid JSON ({str(error)[:80]})")
                    except RecursionError:
                        yield number, InvalidArgument(f"line {number}", "is not valid JSON (nested too deeply)")
    elif suffix == ".csv":
        with path.open(encoding="utf-8", errors="surrogateescape", newline="") as handle:
            reader = csv.DictReader(handle)
            number = 1  # line 1 is the header, so data rows start at 2
            while True:
                number += 1
                try:
                    row = next(reader)
                except StopIteration:
                    break
                except csv.Error as error:  # e.g. a field over csv's size limit: this row only
                    yield number, InvalidArgument(f"row {number}", f"is not valid CSV ({error})")
                    continue
                yield number, row
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except (pa.ArrowException, OSError) as error:
            raise InvalidArgument("file", f"is not a readable Parquet file ({str(error)[:200]})") from None
        for number, row in enumerate(rows, start=1):
            yield number, row
    else:
        raise InvalidArgument("file", f"must end in .jsonl, .ndjson, .csv or .parquet, got {path.name!r}")


def read_catalog(path: Path) -> tuple[list[Product], list[RowError]]:
    """All valid products of a file, and an error for every invalid row (none are dropped silently)."""
    products: list[Product] = []
    errors: list[RowError] = []
    seen: dict[str, int] = {}
    for number, record in _records(path):
        try:
            if isinstance(record, InvalidArgument):
                raise record
            product = product_from_record(record, where=f"row {number}")
        except InvalidArgument as error:
            errors.append(RowError(number, error.message))
            continue
        if product.id in seen:
            errors.append(RowError(number, f"row {number}.id: duplicates the id of row {seen[product.id]}"))
            continue
        seen[product.id] = number
        products.append(product)
    return products, errors


def chunked(items: Iterable, size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
