"""A tiny Instacart-format data folder (24 products, 20 orders) for the simulator's tests, unit
and integration: real file formats, small enough to load in milliseconds."""

from __future__ import annotations

import csv
from pathlib import Path

AISLES = {24: "fresh fruits", 83: "fresh vegetables", 84: "milk", 120: "yogurt", 21: "packaged cheese"}
DEPARTMENTS = {4: "produce", 16: "dairy eggs"}
PRODUCTS = [
    (1, "Banana", 24, 4), (2, "Organic Hass Avocado", 24, 4), (3, "Honeycrisp Apple", 24, 4),
    (4, "Organic Strawberries", 24, 4), (5, "Seedless Red Grapes", 24, 4), (6, "Large Lemon", 24, 4),
    (7, "Organic Yellow Onion", 83, 4), (8, "Broccoli Crown", 83, 4), (9, "Organic Baby Spinach", 83, 4),
    (10, "Red Bell Pepper", 83, 4), (11, "Organic Garlic", 83, 4), (12, "Cucumber Kirby", 83, 4),
    (13, "Organic Whole Milk", 84, 16), (14, "Reduced Fat 2% Milk", 84, 16), (15, "Unsweetened Almond Milk", 84, 16),
    (16, "Fat Free Skim Milk", 84, 16), (17, "Greek Plain Nonfat Yogurt", 120, 16),
    (18, "Strawberry Lowfat Yogurt", 120, 16), (19, "Vanilla Skyr Yogurt", 120, 16), (20, "Plain Kefir", 120, 16),
    (21, "Sharp Cheddar Cheese Slices", 21, 16), (22, "Shredded Mozzarella Cheese", 21, 16),
    (23, "Swiss Cheese Slices", 21, 16), (24, "Colby Jack Cheese Stick", 21, 16),
]
ORDERS = {
    101: [1, 13, 17, 7], 102: [2, 9, 21], 103: [3, 4, 18, 14], 104: [8, 10, 22, 5], 105: [11, 12, 19, 15],
    106: [1, 2, 3, 16], 107: [20, 23, 24, 6], 108: [13, 9, 4], 109: [17, 18, 8, 12], 110: [7, 14, 21, 5],
    111: [1, 4, 9, 19], 112: [2, 10, 22], 113: [3, 11, 23, 13], 114: [6, 12, 24, 17], 115: [5, 8, 15, 20],
    116: [1, 7, 14], 117: [4, 10, 18, 21], 118: [2, 11, 16, 22], 119: [3, 12, 19, 23], 120: [6, 9, 20, 24],
}


def write_instacart(folder: Path) -> Path:
    """An Instacart-format data folder (``<folder>/instacart/*.csv``) of 24 products, 20 orders."""
    source = folder / "instacart"
    source.mkdir(parents=True, exist_ok=True)

    def write(name: str, header: list[str], rows) -> None:
        with (source / name).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)

    write("aisles.csv", ["aisle_id", "aisle"], AISLES.items())
    write("departments.csv", ["department_id", "department"], DEPARTMENTS.items())
    write("products.csv", ["product_id", "product_name", "aisle_id", "department_id"], PRODUCTS)
    write("orders.csv", ["order_id", "user_id", "eval_set", "order_number", "order_dow", "order_hour_of_day",
                         "days_since_prior_order"], [(o, o + 1000, "prior", 1, 0, "10", "") for o in ORDERS])
    write("order_products__prior.csv", ["order_id", "product_id", "add_to_cart_order", "reordered"],
          [(o, p, n, 0) for o, items in ORDERS.items() for n, p in enumerate(items, start=1)])
    return folder
