"""A synthetic product catalogue and shopper queries for load tests at any size.

Nothing here is real shop data: products are assembled from a small built-in vocabulary
(categories with their nouns, colours, materials, adjectives, made-up brand names, a share of
Chinese titles) so that a 10k or a 1M catalogue can be produced without a data set. Whatever
prints figures measured on it must say the catalogue is synthetic (`DESCRIPTION`), and every
product carries ``extra={"source": "synthetic"}`` so it cannot pass for real data downstream.

Deterministic: the same seed gives the same products in the same order, and the first N
products of a larger catalogue are the N-product catalogue (one random stream, read in order).
Products are yielded one at a time, so a 1M catalogue never has to be held in memory.

Queries come from the same vocabulary (what shoppers of such a shop would type): a noun, a
colour or adjective with a noun, a brand, a price cap ("under $50"), plus a few misspelled and
Chinese queries, so the spelling, price and multilingual paths are all exercised.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from services.retrieval.catalog import Product

DESCRIPTION = "SYNTHETIC catalogue (services.local.synthetic_catalog: generated from a built-in vocabulary, not real shop data)"
SOURCE_TAG = {"source": "synthetic"}
DEFAULT_SEED = 7
CHINESE_SHARE = 0.05


@dataclass(frozen=True)
class Category:
    name: str
    nouns: tuple[str, ...]
    nouns_zh: tuple[str, ...]
    price_range: tuple[float, float]
    # attribute name -> possible values (colour comes from COLORS when listed as ())
    attributes: tuple[tuple[str, tuple[str, ...]], ...]
    uses: tuple[str, ...]


COLORS = ("red", "blue", "black", "white", "green", "grey", "navy", "pink", "yellow", "brown", "orange", "purple")
COLORS_ZH = {
    "red": "红色", "blue": "蓝色", "black": "黑色", "white": "白色", "green": "绿色", "grey": "灰色",
    "navy": "藏青色", "pink": "粉色", "yellow": "黄色", "brown": "棕色", "orange": "橙色", "purple": "紫色",
}
ADJECTIVES = (
    "lightweight", "premium", "classic", "compact", "durable", "organic", "ergonomic", "waterproof",
    "portable", "eco-friendly", "deluxe", "slim", "everyday", "professional", "vintage", "rechargeable",
)
MATERIALS = ("cotton", "leather", "stainless steel", "bamboo", "mesh", "wool", "aluminium", "ceramic", "nylon", "glass")
_SYLLABLES = ("ka", "lo", "ven", "tri", "mar", "zo", "pel", "an", "dor", "sil", "qua", "ri", "bel", "nox", "tar", "eu")

CATEGORIES: tuple[Category, ...] = (
    Category("Running Shoes", ("running shoes", "trail runners", "sneakers"), ("跑鞋", "运动鞋"), (30, 180),
             (("color", ()), ("size", ("7", "8", "9", "10", "11", "12")), ("material", ("mesh", "knit", "leather"))),
             ("road running", "marathon training", "the gym")),
    Category("Headphones", ("headphones", "earbuds", "headset"), ("耳机", "蓝牙耳机"), (15, 400),
             (("color", ()), ("connectivity", ("wireless", "wired", "bluetooth"))),
             ("commuting", "music at home", "calls and meetings")),
    Category("Coffee", ("coffee beans", "ground coffee", "espresso"), ("咖啡", "咖啡豆"), (6, 40),
             (("roast", ("light", "medium", "dark")), ("weight", ("250g", "500g", "1kg"))),
             ("espresso machines", "french press", "pour-over")),
    Category("Tea", ("green tea", "black tea", "oolong tea", "herbal tea"), ("绿茶", "红茶", "乌龙茶"), (4, 35),
             (("weight", ("50g", "100g", "250g")), ("form", ("loose leaf", "tea bags"))),
             ("a quiet afternoon", "gifting", "every morning")),
    Category("Red Wine", ("red wine", "malbec", "cabernet sauvignon", "pinot noir"), ("红酒", "葡萄酒"), (9, 90),
             (("color", ("red",)), ("volume", ("750ml", "1.5l")), ("vintage", ("2018", "2019", "2020", "2021"))),
             ("grilled steak", "pasta night", "celebrations")),
    Category("Cookware", ("frying pan", "saucepan", "cookware set", "dutch oven"), ("炒锅", "锅具套装"), (20, 300),
             (("material", ("stainless steel", "cast iron", "ceramic", "non-stick")), ("size", ("20cm", "24cm", "28cm"))),
             ("everyday cooking", "induction hobs", "slow braising")),
    Category("Tents", ("tent", "camping tent", "backpacking tent"), ("帐篷", "露营帐篷"), (40, 500),
             (("capacity", ("1 person", "2 person", "4 person", "6 person")), ("color", ())),
             ("weekend camping", "festivals", "alpine trips")),
    Category("Backpacks", ("backpack", "daypack", "laptop backpack"), ("背包", "双肩包"), (20, 200),
             (("color", ()), ("volume", ("15l", "20l", "30l", "45l")), ("material", ("nylon", "canvas", "polyester"))),
             ("school", "hiking", "business travel")),
    Category("Moisturizer", ("face moisturizer", "night cream", "day cream"), ("面霜", "保湿霜"), (8, 80),
             (("skin type", ("dry", "oily", "combination", "sensitive")), ("volume", ("50ml", "100ml"))),
             ("dry skin", "sensitive skin", "daily care")),
    Category("Yoga Mats", ("yoga mat", "exercise mat", "pilates mat"), ("瑜伽垫",), (15, 120),
             (("color", ()), ("thickness", ("4mm", "6mm", "8mm"))),
             ("hot yoga", "home workouts", "stretching")),
    Category("Desk Lamps", ("desk lamp", "led lamp", "reading light"), ("台灯", "护眼台灯"), (12, 150),
             (("color", ()), ("power", ("usb", "mains", "battery"))),
             ("late-night reading", "home office", "studying")),
    Category("Board Games", ("board game", "card game", "strategy game"), ("桌游", "卡牌游戏"), (10, 90),
             (("players", ("2-4", "2-6", "3-8")), ("age", ("8+", "10+", "14+"))),
             ("family night", "parties", "two players")),
    Category("Kitchen Knives", ("chef knife", "knife set", "paring knife"), ("菜刀", "刀具套装"), (15, 250),
             (("material", ("stainless steel", "damascus steel", "ceramic")),),
             ("home chefs", "meal prep", "gifting")),
    Category("Water Bottles", ("water bottle", "insulated bottle", "tumbler"), ("水杯", "保温杯"), (8, 60),
             (("color", ()), ("volume", ("500ml", "750ml", "1l"))),
             ("the gym", "hiking", "the office")),
    Category("T-Shirts", ("t-shirt", "tee", "polo shirt"), ("T恤", "短袖"), (8, 60),
             (("color", ()), ("size", ("S", "M", "L", "XL")), ("material", ("cotton", "linen", "polyester"))),
             ("summer", "everyday wear", "sport")),
    Category("Jackets", ("rain jacket", "down jacket", "fleece jacket"), ("夹克", "羽绒服"), (35, 400),
             (("color", ()), ("size", ("S", "M", "L", "XL")), ("material", ("nylon", "down", "fleece"))),
             ("winter", "rainy commutes", "mountain days")),
    Category("Phone Cases", ("phone case", "phone cover", "wallet case"), ("手机壳",), (5, 50),
             (("color", ()), ("material", ("silicone", "leather", "plastic"))),
             ("drops", "everyday protection", "style")),
    Category("Blenders", ("blender", "smoothie blender", "hand blender"), ("搅拌机", "榨汁机"), (25, 350),
             (("color", ()), ("power", ("300w", "600w", "1000w"))),
             ("smoothies", "soups", "crushing ice")),
    Category("Sunglasses", ("sunglasses", "polarized sunglasses", "sports sunglasses"), ("太阳镜", "墨镜"), (10, 250),
             (("color", ()), ("lens", ("polarized", "mirrored", "gradient"))),
             ("driving", "the beach", "cycling")),
    Category("Watches", ("watch", "smartwatch", "dive watch"), ("手表", "智能手表"), (20, 900),
             (("color", ()), ("strap", ("leather", "steel", "silicone"))),
             ("everyday wear", "running", "formal occasions")),
)


def brand_names(seed: int = DEFAULT_SEED, count: int = 240) -> list[str]:
    """Made-up brand names (two or three syllables), unique, the same for a seed."""
    rng = random.Random(f"brands:{seed}")
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < count:
        name = "".join(rng.choice(_SYLLABLES) for _ in range(rng.choice((2, 2, 3)))).capitalize()
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def _price(rng: random.Random, low: float, high: float) -> float:
    # Skewed towards the cheap end, as shop prices are; ends in .99 or .49 like real ones.
    value = low + (high - low) * rng.random() ** 2
    return round(max(int(value), 1) + rng.choice((0.99, 0.49, 0.0)), 2)


def generate_products(count: int, seed: int = DEFAULT_SEED) -> Iterator[Product]:
    """`count` synthetic products, one at a time (ids `syn-0000001`...)."""
    rng = random.Random(seed)
    brands = brand_names(seed)
    for number in range(1, count + 1):
        category = CATEGORIES[rng.randrange(len(CATEGORIES))]
        brand = brands[int(len(brands) * rng.random() ** 1.5)]  # a few big brands, a long tail
        noun = rng.choice(category.nouns)
        attributes: dict[str, str] = {}
        for name, values in category.attributes:
            attributes[name] = rng.choice(values or COLORS)
        color = attributes.get("color", "")
        adjective = rng.choice(ADJECTIVES)
        price = _price(rng, *category.price_range)
        use = rng.choice(category.uses)
        spec = next((attributes[k] for k in ("size", "volume", "weight", "capacity", "power") if k in attributes), "")
        if rng.random() < CHINESE_SHARE:
            title = f"{brand} {COLORS_ZH.get(color, '')}{rng.choice(category.nouns_zh)} {spec}".strip()
            description = f"{brand}出品，{COLORS_ZH.get(color, '')}{category.nouns_zh[0]}，适合日常使用。"
            locale = "zh-CN"
        else:
            title = " ".join(part for part in (brand, adjective.capitalize(), color, noun, spec) if part)
            material = attributes.get("material") or rng.choice(MATERIALS)
            description = (
                f"{'An' if adjective[0] in 'aeiou' else 'A'} {adjective} {noun} by {brand}, made for {use}. "
                f"{material.capitalize()} build{f', {color} finish' if color else ''}."
            )
            locale = "en-US"
        yield Product(
            id=f"syn-{number:07d}",
            title=title,
            price=price,
            description=description,
            brand=brand,
            category=category.name,
            currency="USD",
            attributes=attributes,
            locale=locale,
            extra=dict(SOURCE_TAG),
        )


def _misspell(rng: random.Random, word: str) -> str:
    """One typo a shopper makes: a letter dropped, doubled or two swapped (long words only)."""
    if len(word) < 5:
        return word
    i = rng.randrange(1, len(word) - 2)
    kind = rng.randrange(3)
    if kind == 0:
        return word[:i] + word[i + 1 :]
    if kind == 1:
        return word[:i] + word[i] + word[i:]
    return word[:i] + word[i + 1] + word[i] + word[i + 2 :]


def generate_queries(count: int, seed: int = DEFAULT_SEED) -> list[str]:
    """`count` shopper queries over the synthetic catalogue's vocabulary (about 8% misspelled,
    6% Chinese, 12% with a price cap)."""
    rng = random.Random(f"queries:{seed}")
    brands = brand_names(seed)
    queries = []
    for _ in range(count):
        category = CATEGORIES[rng.randrange(len(CATEGORIES))]
        noun = rng.choice(category.nouns)
        colored = any(name == "color" and not values for name, values in category.attributes)
        color = rng.choice(COLORS) if colored else rng.choice(ADJECTIVES)
        roll = rng.random()
        if roll < 0.06:
            zh = rng.choice(category.nouns_zh)
            query = rng.choice((zh, COLORS_ZH[rng.choice(COLORS)] + zh, f"{zh} {int(category.price_range[1] / 2)}元以内"))
        elif roll < 0.14:
            query = " ".join(_misspell(rng, word) for word in f"{color} {noun}".split())
        elif roll < 0.26:
            query = f"{noun} under ${int(category.price_range[0] + (category.price_range[1] - category.price_range[0]) / 3)}"
        elif roll < 0.46:
            query = f"{color} {noun}"
        elif roll < 0.62:
            query = f"{rng.choice(ADJECTIVES)} {noun}"
        elif roll < 0.74:
            query = f"{brands[int(len(brands) * rng.random() ** 1.5)].lower()} {noun}"
        elif roll < 0.86:
            query = f"{noun} for {rng.choice(category.uses)}"
        else:
            query = noun
        queries.append(query)
    return queries


def write_jsonl(path: Path, count: int, seed: int = DEFAULT_SEED) -> Path:
    """Writes the catalogue as JSONL in the import format (`shelfwise import-catalog` reads it)."""
    with path.open("w", encoding="utf-8") as out:
        for product in generate_products(count, seed):
            row = {
                "id": product.id, "title": product.title, "description": product.description,
                "brand": product.brand, "category": product.category, "price": product.price,
                "currency": product.currency, "attributes": dict(product.attributes), "locale": product.locale,
                **product.extra,
            }
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def summary(products: Sequence[Product]) -> dict[str, int]:
    """Counts for a report: products, Chinese titles, categories, brands."""
    return {
        "products": len(products),
        "chinese": sum(1 for p in products if p.locale == "zh-CN"),
        "categories": len({p.category for p in products}),
        "brands": len({p.brand for p in products}),
    }
