"""Unit tests of services.retrieval.catalog: product records, validation, catalogue files."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from services.common.errors import InvalidArgument
from services.retrieval.catalog import Product, RowError, product_from_record, read_catalog


def record(**overrides):
    base = {
        "id": "sku-1",
        "title": "Stride Red Running Shoes",
        "description": "Lightweight mesh upper.",
        "brand": "Stride",
        "category": "Running Shoes",
        "price": 59.0,
        "attributes": {"color": "Red"},
        "locale": "en-US",
    }
    base.update(overrides)
    return base


# --- product_from_record ---------------------------------------------------------------------


def test_product_from_record_reads_all_known_fields() -> None:
    product = product_from_record(record(currency="EUR"), where="row 1")
    assert product == Product(
        id="sku-1",
        title="Stride Red Running Shoes",
        price=59.0,
        description="Lightweight mesh upper.",
        brand="Stride",
        category="Running Shoes",
        currency="EUR",
        attributes={"color": "Red"},
        locale="en-US",
        extra={},
    )


def test_product_from_record_accepts_integer_price_as_float() -> None:
    product = product_from_record(record(price=12), where="row 1")
    assert product.price == 12.0
    assert isinstance(product.price, float)


def test_product_from_record_parses_dollar_price_string() -> None:
    assert product_from_record(record(price="$12.50"), where="row 1").price == 12.5
    assert product_from_record(record(price=" 7.25 "), where="row 1").price == 7.25


def test_product_from_record_defaults_currency_to_usd() -> None:
    assert product_from_record(record(), where="row 1").currency == "USD"
    assert product_from_record(record(currency=""), where="row 1").currency == "USD"


def test_non_numeric_price_is_invalid_and_names_row_and_field() -> None:
    with pytest.raises(InvalidArgument) as caught:
        product_from_record(record(price="abc"), where="row 3")
    assert caught.value.field == "row 3.price"
    assert caught.value.message.startswith("row 3.price")
    assert "'abc'" in caught.value.message


def test_boolean_price_is_invalid() -> None:
    with pytest.raises(InvalidArgument) as caught:
        product_from_record(record(price=True), where="row 3")
    assert caught.value.field == "row 3.price"


@pytest.mark.parametrize("missing", [None, "", "   "])
def test_missing_price_is_required(missing) -> None:
    with pytest.raises(InvalidArgument) as caught:
        product_from_record(record(price=missing), where="row 3")
    assert caught.value.message == "row 3.price: is required"


def test_absent_price_key_is_required() -> None:
    row = record()
    del row["price"]
    with pytest.raises(InvalidArgument) as caught:
        product_from_record(row, where="row 3")
    assert caught.value.message == "row 3.price: is required"


@pytest.mark.parametrize("price", [-0.01, -5, "-1", float("nan"), "nan", float("inf"), "inf", float("-inf")])
def test_negative_nan_and_infinite_prices_are_invalid(price) -> None:
    with pytest.raises(InvalidArgument) as caught:
        product_from_record(record(price=price), where="row 3")
    assert caught.value.field == "row 3.price"
    assert "finite number >= 0" in caught.value.rule


def test_zero_price_is_valid() -> None:
    assert product_from_record(record(price=0), where="row 1").price == 0.0


def test_attributes_given_as_json_string_are_parsed_to_strings() -> None:
    product = product_from_record(record(attributes='{"color": "Red", "size": 9, "gone": null}'), where="row 1")
    assert product.attributes == {"color": "Red", "size": "9"}


def test_empty_attributes_string_means_no_attributes() -> None:
    assert product_from_record(record(attributes="  "), where="row 1").attributes == {}


def test_attributes_that_are_not_json_are_invalid() -> None:
    with pytest.raises(InvalidArgument) as caught:
        product_from_record(record(attributes="color=red"), where="row 2")
    assert caught.value.field == "row 2.attributes"


def test_attributes_json_that_is_not_an_object_is_invalid() -> None:
    with pytest.raises(InvalidArgument) as caught:
        product_from_record(record(attributes='["red"]'), where="row 2")
    assert caught.value.field == "row 2.attributes"


def test_extra_fields_are_kept_as_strings() -> None:
    product = product_from_record(
        record(gtin="0123", stock=5, tags=["sale", "new"], meta={"a": 1}, dropped=None), where="row 1"
    )
    assert product.extra == {"gtin": "0123", "stock": "5", "tags": '["sale", "new"]', "meta": '{"a": 1}'}
    assert all(isinstance(value, str) for value in product.extra.values())


def test_known_fields_never_land_in_extra() -> None:
    assert product_from_record(record(currency="USD"), where="row 1").extra == {}


@pytest.mark.parametrize("title", ["", "   ", None])
def test_empty_title_is_invalid(title) -> None:
    with pytest.raises(InvalidArgument) as caught:
        product_from_record(record(title=title), where="row 4")
    assert caught.value.message == "row 4.title: must not be empty"


def test_empty_id_is_invalid() -> None:
    with pytest.raises(InvalidArgument) as caught:
        product_from_record(record(id=""), where="row 4")
    assert caught.value.field == "row 4.id"


@pytest.mark.parametrize("product_id", [" sku-1", "sku-1 ", "\tsku-1\n"])
def test_id_with_surrounding_whitespace_is_invalid(product_id) -> None:
    with pytest.raises(InvalidArgument) as caught:
        product_from_record(record(id=product_id), where="row 5")
    assert caught.value.field == "row 5.id"
    assert "whitespace" in caught.value.rule


def test_numeric_id_becomes_a_string() -> None:
    assert product_from_record(record(id=1234), where="row 1").id == "1234"


def test_too_long_title_is_invalid() -> None:
    with pytest.raises(InvalidArgument) as caught:
        product_from_record(record(title="x" * 1_001), where="row 1")
    assert caught.value.field == "row 1.title"


def test_record_that_is_not_an_object_is_invalid() -> None:
    with pytest.raises(InvalidArgument) as caught:
        product_from_record(["sku-1", "title"], where="row 6")  # type: ignore[arg-type]
    assert caught.value.field == "row 6"


# --- content_hash ----------------------------------------------------------------------------


def test_content_hash_changes_when_title_changes() -> None:
    product = product_from_record(record(), where="row 1")
    assert replace(product, title="Stride Blue Running Shoes").content_hash() != product.content_hash()


def test_content_hash_ignores_price_and_attributes() -> None:
    product = product_from_record(record(), where="row 1")
    assert replace(product, price=1.0).content_hash() == product.content_hash()
    assert replace(product, attributes={"color": "Blue"}).content_hash() == product.content_hash()


def test_content_hash_is_32_hex_characters() -> None:
    digest = product_from_record(record(), where="row 1").content_hash()
    assert len(digest) == 32
    int(digest, 16)


# --- read_catalog ----------------------------------------------------------------------------


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_read_catalog_jsonl_reports_bad_row_with_line_number_and_keeps_valid_ones(tmp_path) -> None:
    path = write_jsonl(
        tmp_path / "products.jsonl",
        [
            json.dumps(record(id="a")),
            json.dumps(record(id="b", price="abc")),
            json.dumps(record(id="c", price="$3.00")),
        ],
    )
    products, errors = read_catalog(path)
    assert [p.id for p in products] == ["a", "c"]
    assert products[1].price == 3.0
    assert len(errors) == 1
    assert errors[0].row == 2
    assert errors[0].message.startswith("row 2.price")


def test_read_catalog_jsonl_skips_blank_lines_but_keeps_line_numbers(tmp_path) -> None:
    path = write_jsonl(tmp_path / "products.ndjson", [json.dumps(record(id="a")), "", json.dumps(record(id="b", title=""))])
    products, errors = read_catalog(path)
    assert [p.id for p in products] == ["a"]
    assert errors == [RowError(3, "row 3.title: must not be empty")]


def test_read_catalog_jsonl_reports_invalid_json_line(tmp_path) -> None:
    path = write_jsonl(tmp_path / "products.jsonl", [json.dumps(record(id="a")), "{not json"])
    products, errors = read_catalog(path)
    assert [p.id for p in products] == ["a"]
    assert len(errors) == 1
    assert errors[0].row == 2
    assert errors[0].message.startswith("line 2: is not valid JSON")


def test_read_catalog_jsonl_reports_row_that_is_not_an_object(tmp_path) -> None:
    path = write_jsonl(tmp_path / "products.jsonl", ["[1, 2]", json.dumps(record(id="a"))])
    products, errors = read_catalog(path)
    assert [p.id for p in products] == ["a"]
    assert [e.row for e in errors] == [1]


def test_read_catalog_reports_duplicate_ids_and_keeps_the_first(tmp_path) -> None:
    path = write_jsonl(
        tmp_path / "products.jsonl",
        [json.dumps(record(id="a", title="First")), json.dumps(record(id="b")), json.dumps(record(id="a", title="Second"))],
    )
    products, errors = read_catalog(path)
    assert [(p.id, p.title) for p in products] == [("a", "First"), ("b", "Stride Red Running Shoes")]
    assert errors == [RowError(3, "row 3.id: duplicates the id of row 1")]


def test_read_catalog_csv_data_rows_start_at_line_2(tmp_path) -> None:
    path = tmp_path / "products.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "title", "brand", "category", "price", "attributes", "gtin"])
        writer.writerow(["a", "Red Shoes", "Stride", "Shoes", "$12.50", '{"color": "Red"}', "0001"])
        writer.writerow(["b", "Blue Shoes", "Stride", "Shoes", "abc", "", "0002"])
        writer.writerow(["c", "Green Shoes", "", "Shoes", "7", "", ""])
    products, errors = read_catalog(path)
    assert [p.id for p in products] == ["a", "c"]
    assert products[0].price == 12.5
    assert products[0].attributes == {"color": "Red"}
    assert products[0].extra == {"gtin": "0001"}
    assert products[1].brand == ""
    assert len(errors) == 1
    assert errors[0].row == 3
    assert errors[0].message.startswith("row 3.price")


def test_read_catalog_csv_reports_duplicate_ids(tmp_path) -> None:
    path = tmp_path / "products.csv"
    path.write_text("id,title,price\na,One,1\na,Two,2\n", encoding="utf-8")
    products, errors = read_catalog(path)
    assert [p.title for p in products] == ["One"]
    assert errors == [RowError(3, "row 3.id: duplicates the id of row 2")]


def test_read_catalog_parquet_reports_bad_row_and_keeps_valid_ones(tmp_path) -> None:
    path = tmp_path / "products.parquet"
    table = pa.table(
        {
            "id": ["a", "b", "c"],
            "title": ["Red Shoes", "", "Green Shoes"],
            "price": [12.5, 3.0, 7.0],
            "brand": ["Stride", "Stride", None],
            "attributes": ['{"color": "Red"}', None, '{"color": "Green"}'],
            "stock": [1, 2, 3],
        }
    )
    pq.write_table(table, path)
    products, errors = read_catalog(path)
    assert [p.id for p in products] == ["a", "c"]
    assert products[0].attributes == {"color": "Red"}
    assert products[0].extra == {"stock": "1"}
    assert products[1].brand == ""
    assert errors == [RowError(2, "row 2.title: must not be empty")]


def test_read_catalog_parquet_struct_attributes_are_read(tmp_path) -> None:
    path = tmp_path / "products.parquet"
    pq.write_table(
        pa.table({"id": ["a"], "title": ["Red Shoes"], "price": [1.0], "attributes": [{"color": "Red", "size": None}]}),
        path,
    )
    products, errors = read_catalog(path)
    assert errors == []
    assert products[0].attributes == {"color": "Red"}


def test_read_catalog_parquet_map_attributes_are_read(tmp_path) -> None:
    path = tmp_path / "products.parquet"
    attributes = pa.array([[("color", "Red")]], type=pa.map_(pa.string(), pa.string()))
    pq.write_table(pa.table({"id": ["a"], "title": ["Red Shoes"], "price": [1.0], "attributes": attributes}), path)
    products, errors = read_catalog(path)
    assert errors == []
    assert products[0].attributes == {"color": "Red"}


def test_read_catalog_rejects_unknown_extension(tmp_path) -> None:
    path = tmp_path / "products.xlsx"
    path.write_text("id,title,price\n", encoding="utf-8")
    with pytest.raises(InvalidArgument) as caught:
        read_catalog(path)
    assert caught.value.field == "file"
    assert "products.xlsx" in caught.value.rule


def test_read_catalog_extension_is_case_insensitive(tmp_path) -> None:
    path = write_jsonl(tmp_path / "PRODUCTS.JSONL", [json.dumps(record(id="a"))])
    products, errors = read_catalog(path)
    assert [p.id for p in products] == ["a"] and errors == []
