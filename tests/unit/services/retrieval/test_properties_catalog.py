"""Property-based tests (hypothesis) of catalogue import from JSONL, CSV and Parquet.

Any row is either accepted, with its fields round-tripping (id, title, price, attributes and
extra columns as `product_from_record` documents), or rejected with an error naming the row
and the field; any file, even bytes that are not text, gives products and row errors or one
InvalidArgument naming the file. Nothing else may escape `read_catalog`, and every accepted
product is storable (valid UTF-8, no NUL, finite non-negative price).
"""

from __future__ import annotations

import csv
import json
import math
import re
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from services.common.errors import InvalidArgument
from services.retrieval.catalog import KNOWN_FIELDS, Product, product_from_record, read_catalog, validate_product

PROPERTY_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
NUMBER = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([10**400, -(10**400), 0, -0.0, 1e308]),
)
PRICE_TEXT = st.one_of(
    NUMBER.map(str),
    st.sampled_from(["", " ", "$5", "$-5", "1e309", "nan", "inf", "-inf", "1_000", "1,000", "5 usd", "0x10", "９９"]),
    ANY_TEXT,
)
SCALAR = st.one_of(st.none(), st.booleans(), NUMBER, ANY_TEXT)
JSON_VALUE = st.recursive(SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(ANY_TEXT, inner, max_size=3)), max_leaves=8)
ATTRIBUTES = st.one_of(
    st.dictionaries(ANY_TEXT, SCALAR, max_size=5),
    st.lists(st.tuples(JSON_VALUE, JSON_VALUE).map(list), max_size=3),  # Parquet-like pairs, or not
    ANY_TEXT,  # a JSON object as text, or not
    JSON_VALUE,
)
FIELD_NAMES = st.one_of(st.sampled_from(KNOWN_FIELDS), ANY_TEXT)
RECORD = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(ANY_TEXT, st.integers(), st.sampled_from(["p1", " p1", "x" * 129, "a\x00b", "'; DROP TABLE products;--"])),
        "title": st.one_of(ANY_TEXT, SCALAR, st.just("t" * 1001)),
        "description": st.one_of(ANY_TEXT, SCALAR),
        "brand": st.one_of(ANY_TEXT, SCALAR),
        "category": st.one_of(ANY_TEXT, SCALAR),
        "price": st.one_of(NUMBER, PRICE_TEXT, st.booleans(), st.none(), JSON_VALUE),
        "currency": st.one_of(ANY_TEXT, st.none()),
        "attributes": ATTRIBUTES,
        "locale": st.one_of(ANY_TEXT, SCALAR),
    },
).flatmap(lambda known: st.dictionaries(ANY_TEXT, JSON_VALUE, max_size=3).map(lambda extra: {**extra, **known}))
# Rows that pass validation more often: hypothesis explores the accepted branch too.
PLAUSIBLE_RECORD = st.fixed_dictionaries(
    {
        "id": st.from_regex(r"[A-Za-z0-9_\-:./]{1,20}", fullmatch=True),
        "title": st.text(min_size=1, max_size=40).filter(lambda t: t.strip() and "\x00" not in t),
        "price": st.one_of(st.floats(min_value=0, max_value=1e9), st.integers(min_value=0, max_value=10**9)),
    },
    optional={
        "brand": st.text(max_size=20).filter(lambda t: "\x00" not in t),
        "attributes": st.dictionaries(
            st.text(min_size=1, max_size=10).filter(lambda t: t.strip() and "\x00" not in t),
            st.text(max_size=10).filter(lambda t: "\x00" not in t),
            max_size=4,
        ),
        "shelf": st.text(max_size=20).filter(lambda t: "\x00" not in t),
    },
)


def field_of(message: str) -> str:
    """'row 3.price: must be ...' -> 'price'; 'row 3.attributes['k']: ...' -> 'attributes'."""
    match = re.match(r"(?:row|line) \d+(?:\.(\w+))?", message)
    assert match, message
    return match.group(1) or ""


def check_storable(product: Product) -> None:
    validate_product(product)
    product.content_hash()  # UTF-8 encodable
    for text in (product.id, product.title, product.description, product.brand, product.category, product.locale,
                 *product.attributes, *product.attributes.values(), *product.extra, *product.extra.values()):
        assert "\x00" not in text
        text.encode("utf-8")
    assert math.isfinite(product.price) and product.price >= 0


def check_round_trip(product: Product, record: dict) -> None:
    """Accepted: the known fields are the row's, as `product_from_record` documents."""
    assert product.id == str(record["id"])
    assert product.title == str(record["title"])
    raw = record["price"]
    expected = float(raw.strip().lstrip("$")) if isinstance(raw, str) else float(raw)
    assert product.price == expected
    for name in ("description", "brand", "category", "locale"):
        value = record.get(name)
        assert getattr(product, name) == ("" if value is None else str(value))
    attributes = record.get("attributes")
    if isinstance(attributes, dict):
        assert dict(product.attributes) == {str(k): str(v) for k, v in attributes.items() if v is not None}
    extra = {k: v for k, v in record.items() if k not in KNOWN_FIELDS and v is not None}
    assert set(product.extra) == {str(k) for k in extra}
    for key, value in extra.items():
        kept = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        assert product.extra[str(key)] == kept


@PROPERTY_SETTINGS
@given(record=st.one_of(RECORD, PLAUSIBLE_RECORD, JSON_VALUE))
@example(record={"id": "p1", "title": "t", "price": 10**400})
@example(record={"id": "p1", "title": "t", "price": 1, "attributes": [[[1], 2]]})
@example(record={"id": "p1", "title": "t", "price": 1, "attributes": [[{"a": 1}, 2]]})
@example(record={"id": "\ud800", "title": "t", "price": 1})
@example(record={"id": "p1", "title": "t", "price": 1, "note": "a\x00b"})
@example(record={"id": "p1", "title": "t", "price": "$-5"})
def test_a_record_is_accepted_whole_or_rejected_naming_its_field(record):
    try:
        product = product_from_record(record, "row 1")
    except InvalidArgument as error:
        assert error.message.startswith("row 1"), error.message
        assert error.field == "row 1" or error.field.startswith("row 1."), error.field
        return
    check_storable(product)
    check_round_trip(product, record)
    # Accepted once, accepted again unchanged: exporting the product and importing it back is
    # the identity (a re-import never alters or loses what was stored).
    again = {
        "id": product.id, "title": product.title, "description": product.description, "brand": product.brand,
        "category": product.category, "price": product.price, "currency": product.currency,
        "attributes": dict(product.attributes), "locale": product.locale, **product.extra,
    }
    assert product_from_record(again, "row 1") == product


def read(path: Path):
    try:
        return read_catalog(path)
    except InvalidArgument as error:
        assert error.field == "file", error.message
        return None


@PROPERTY_SETTINGS
@given(records=st.lists(st.one_of(RECORD, PLAUSIBLE_RECORD), min_size=1, max_size=4))
def test_jsonl_rows_are_each_accepted_or_reported(records):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "catalog.jsonl"
        lines = [json.dumps(r, default=str) for r in records]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
        result = read(path)
    assert result is not None
    products, errors = result
    assert len(products) + len(errors) == len(records)  # none dropped silently
    reported = {e.row for e in errors}
    accepted = iter(products)
    for number, record in enumerate(records, start=1):
        if number in reported:
            continue
        product = next(accepted)
        check_storable(product)
        check_round_trip(product, json.loads(lines[number - 1]))
    assert len(set(p.id for p in products)) == len(products)


@PROPERTY_SETTINGS
@given(records=st.lists(st.one_of(RECORD, PLAUSIBLE_RECORD), min_size=1, max_size=4))
def test_csv_rows_are_each_accepted_or_reported(records):
    columns = list(dict.fromkeys(k for r in records for k in r if isinstance(k, str)))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "catalog.csv"
        with path.open("w", encoding="utf-8", errors="surrogatepass", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns or ["id"])
            writer.writeheader()
            for record in records:
                writer.writerow({k: (v if isinstance(v, str) else json.dumps(v)) for k, v in record.items()})
        result = read(path)
    if result is None:  # a whole-file error (e.g. a surrogate written as bytes is not UTF-8)
        return
    products, errors = result
    for error in errors:
        assert re.match(r"(row|line) \d+", error.message), error.message
    for product in products:
        check_storable(product)


@PROPERTY_SETTINGS
@given(records=st.lists(PLAUSIBLE_RECORD, min_size=1, max_size=4))
def test_csv_round_trips_plausible_rows(records):
    columns = ["id", "title", "price", "brand", "attributes", "shelf"]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "catalog.csv"
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            for record in records:
                writer.writerow({**record, "price": repr(record["price"]), "attributes": json.dumps(record.get("attributes", {}))})
        products, errors = read_catalog(path)
    assert len(products) + len(errors) == len(records)
    for error in errors:
        assert field_of(error.message) == "id" and "duplicates" in error.message, error.message
    first = {}
    for record in records:
        first.setdefault(record["id"], record)
    assert [p.id for p in products] == list(first)
    for product in products:
        record = first[product.id]
        assert product.title == record["title"] and product.price == float(record["price"])
        assert product.brand == record.get("brand", "")
        assert dict(product.attributes) == record.get("attributes", {})
        # Every CSV column is present in every row: an absent value is an empty string.
        assert product.extra == {"shelf": record.get("shelf", "")}


@PROPERTY_SETTINGS
@given(records=st.lists(PLAUSIBLE_RECORD, min_size=1, max_size=4), prices=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=4, max_size=4))
@example(records=[{"id": "p1", "title": "t", "price": 1.0}], prices=[math.nan, math.inf, -1.0, 5.0])
def test_parquet_rows_are_each_accepted_or_reported(records, prices):
    rows = [
        {
            "id": r["id"],
            "title": r["title"],
            "price": prices[i % len(prices)],
            "attributes": list(r.get("attributes", {}).items()),
            "shelf": r.get("shelf"),
        }
        for i, r in enumerate(records)
    ]
    schema = pa.schema(
        [("id", pa.string()), ("title", pa.string()), ("price", pa.float64()),
         ("attributes", pa.map_(pa.string(), pa.string())), ("shelf", pa.string())]
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "catalog.parquet"
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
        result = read(path)
    assert result is not None
    products, errors = result
    assert len(products) + len(errors) == len(rows)
    by_id = {p.id: p for p in products}
    for number, row in enumerate(rows, start=1):
        message = next((e.message for e in errors if e.row == number), None)
        if message is None:
            product = by_id[row["id"]]
            assert product.title == row["title"] and product.price == row["price"]
            assert dict(product.attributes) == dict(row["attributes"])
            assert product.extra == ({"shelf": row["shelf"]} if row["shelf"] is not None else {})
        elif not (math.isfinite(row["price"]) and row["price"] >= 0):
            assert field_of(message) == "price", message
        else:
            assert field_of(message) == "id" and "duplicates" in message, message


@PROPERTY_SETTINGS
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".jsonl", ".csv", ".parquet"]))
@example(data=b'{"id": "p1", "title": "t", "price": 1}\n\xff\xfe\n', suffix=".jsonl")
@example(data=b"id,title,price\np1,\xff,1\n", suffix=".csv")
@example(data=b"[" * 100_000, suffix=".jsonl")
@example(data=b'{"id": "p1", "title": "t", "price": ' + b"9" * 5000 + b"}", suffix=".jsonl")
@example(data=b"id,title,price\np1," + b"t" * 200_000 + b",1\n", suffix=".csv")
@example(data=b"PAR1garbagePAR1", suffix=".parquet")
def test_any_bytes_give_rows_and_row_errors_or_one_file_error(data, suffix):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"catalog{suffix}"
        path.write_bytes(data)
        result = read(path)
    if result is not None:
        products, errors = result
        for product in products:
            check_storable(product)
        for error in errors:
            assert re.match(r"(row|line) \d+", error.message), error.message
