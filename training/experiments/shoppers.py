"""The simulator's shoppers: a world read from Instacart-format files (products, aisles,
departments, orders, synthetic prices), shoppers planned deterministically from a seed (intents
from real baskets, English or Chinese queries, seeded typos), and their reactions to a page
(examination by position, attraction by match level, add-to-cart and purchase). Pure: nothing
here talks to the stack."""

from __future__ import annotations

import hashlib
import math
import random
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

PAGE_SIZE = 10


# Position-based examination: probability that the shopper looks at position k (1-based).
# Decays like the eye-tracking and click-model literature's position curves (Joachims et al.
# 2005; Craswell et al. 2008): nearly everyone reads the first result, about a third the tenth.
EXAMINATION = tuple(round(0.95 * 0.88 ** k, 4) for k in range(PAGE_SIZE))


# Match of a shown product to the shopper's intent, best first.
MATCH_LEVELS = ("product", "basket", "aisle", "department", "none")


ATTRACTIVENESS = {"product": 0.85, "basket": 0.45, "aisle": 0.40, "department": 0.06, "none": 0.02}


ADD_TO_CART = {"product": 0.80, "basket": 0.60, "aisle": 0.45, "department": 0.10, "none": 0.03}


PURCHASE = {"product": 0.90, "basket": 0.85, "aisle": 0.70, "department": 0.40, "none": 0.25}


STOP_AFTER_PURCHASE = 0.6


PRODUCT_INTENT_SHARE = 0.4


TYPO_RATE = 0.1


MAX_INTENTS = 4


DEFAULT_LANGUAGE_MIX = "en:0.7,zh:0.3"


INTENT_AISLES = ("test", "dev", "train", "train-dev", "all")


# What every report of the simulator states next to its figures.
ASSUMPTIONS = (
    "SIMULATED shoppers, not real ones: every figure measures the system against this model.",
    "Intents come from real Instacart baskets (orders/order_products__prior): one product of the "
    f"basket ({PRODUCT_INTENT_SHARE:.0%}) or the aisle of one; 1-{MAX_INTENTS} searches per shopper; by "
    "default only products of the benchmark's held-out test-split aisles are wanted. Warm-up and test "
    "shoppers draw from disjoint halves of the orders.",
    "Queries: aisle name or our written description (English), our Chinese aisle queries, or a "
    f"fragment of the product name; one keyboard typo in {TYPO_RATE:.0%} of English queries.",
    "Clicks: position-based examination, P(examine position k) = "
    + ", ".join(f"{p:.2f}" for p in EXAMINATION)
    + "; P(click | examined) by match to the intent: "
    + ", ".join(f"{level} {ATTRACTIVENESS[level]}" for level in MATCH_LEVELS) + ".",
    "Add-to-cart given a click: " + ", ".join(f"{level} {ADD_TO_CART[level]}" for level in MATCH_LEVELS)
    + "; purchase given add-to-cart: " + ", ".join(f"{level} {PURCHASE[level]}" for level in MATCH_LEVELS)
    + f"; after a purchase the shopper stops reading with probability {STOP_AFTER_PURCHASE}.",
    "Match levels: the intended product > another product of the shopper's real basket > same aisle "
    "> same department > none (aisles and departments are Instacart's own).",
    "Prices are SYNTHETIC (Instacart has none): a deterministic log-normal price per product id "
    "(median about $4); revenue = price x quantity (1-3).",
    "Only the first page (10 results) is read; no reformulation, no pagination, no cross-search memory "
    "beyond the events the system itself records.",
)


@dataclass(frozen=True)
class SimProduct:
    id: str
    name: str
    aisle_id: int
    department_id: int
    price: float


@dataclass(frozen=True)
class World:
    """Instacart as the shoppers know it."""

    products: dict[str, SimProduct]
    aisles: dict[int, str]
    departments: dict[int, str]
    orders: list[tuple[str, tuple[str, ...]]]  # (order id, product ids), only known products
    aisle_queries: dict  # aisle id -> training.search.instacart.AisleQueries

    def catalog(self):
        """The catalogue the shop serves: as ``training.search.instacart.build`` writes it, plus prices."""
        from services.retrieval.catalog import Product

        return [
            Product(id=p.id, title=p.name, category=self.departments.get(p.department_id, ""),
                    price=p.price, currency="USD", locale="en")
            for p in self.products.values()
        ]


def synthetic_price(product_id: str) -> float:
    """A deterministic price from the product id: log-normal, median $4, clipped to $0.50-$60.
    Instacart publishes no prices; revenue figures rest on these."""
    digest = hashlib.sha256(f"shelfwise-price:{product_id}".encode()).digest()
    uniform = (int.from_bytes(digest[:8], "big") + 0.5) / 2**64
    z = statistics.NormalDist().inv_cdf(uniform)
    return round(min(max(math.exp(math.log(4.0) + 0.7 * z), 0.5), 60.0), 2)


def load_world(data_dir: Path) -> World:
    from training.search.instacart import EXCLUDED_AISLES, _read_csv, read_written_queries

    source = Path(data_dir) / "instacart"
    aisles = {int(r["aisle_id"]): r["aisle"].strip() for r in _read_csv(source / "aisles.csv")}
    departments = {int(r["department_id"]): r["department"].strip() for r in _read_csv(source / "departments.csv")}
    products = {}
    for row in _read_csv(source / "products.csv"):
        product_id = row["product_id"].strip()
        products[product_id] = SimProduct(
            product_id, row["product_name"].strip(), int(row["aisle_id"]), int(row["department_id"]),
            synthetic_price(product_id),
        )
    baskets: dict[str, list[str]] = {}
    for row in _read_csv(source / "order_products__prior.csv"):
        product_id = row["product_id"].strip()
        if product_id in products:
            baskets.setdefault(row["order_id"].strip(), []).append(product_id)
    # Intents need a query: products of "other"/"missing" aisles cannot be asked for by aisle.
    queryable = {a for a, name in aisles.items() if name not in EXCLUDED_AISLES}
    orders = sorted(
        (order_id, tuple(items)) for order_id, items in baskets.items()
        if any(products[p].aisle_id in queryable for p in items)
    )
    if not orders:
        raise ValueError(f"{source}: no orders with known products; is order_products__prior.csv there?")
    return World(products, aisles, departments, orders, read_written_queries())


@dataclass(frozen=True)
class Intent:
    kind: str  # "product" or "aisle"
    aisle_id: int
    department_id: int
    product_id: str = ""
    basket: frozenset[str] = frozenset()


@dataclass(frozen=True)
class PlannedSearch:
    intent: Intent
    query: str
    language: str


@dataclass(frozen=True)
class Shopper:
    user_id: str
    order_id: str
    language: str
    searches: tuple[PlannedSearch, ...]
    seed: int


def parse_language_mix(text: str) -> dict[str, float]:
    mix = {}
    for part in text.split(","):
        language, _, share = part.partition(":")
        language = language.strip()
        if language not in ("en", "zh"):
            raise ValueError(f"--language-mix: language must be en or zh, got {language!r}")
        try:
            mix[language] = float(share)
        except ValueError:
            raise ValueError(f"--language-mix: share of {language} must be a number, got {share!r}") from None
        if mix[language] < 0:
            raise ValueError(f"--language-mix: share of {language} must be >= 0")
    total = sum(mix.values())
    if total <= 0:
        raise ValueError("--language-mix: shares must sum to more than 0")
    return {language: share / total for language, share in mix.items()}


def in_period(order_id: str, period: str) -> bool:
    """Warm-up and test shoppers use disjoint halves of the orders."""
    digest = hashlib.sha256(f"shelfwise-sim-period:{order_id}".encode()).digest()
    return (digest[0] % 2 == 0) == (period == "warmup")


def shopper_seed(seed: int, period: str, index: int) -> int:
    digest = hashlib.sha256(f"{seed}:{period}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


_WORD = re.compile(r"[A-Za-z][A-Za-z'&-]*")


def product_query(name: str, rng: random.Random) -> str:
    """A fragment a shopper would type for a product: its last word or two (the head noun of
    most product names: "Organic Hass Avocado" -> "hass avocado"), sometimes the whole name."""
    words = [w.lower() for w in _WORD.findall(name)] or [name.lower()]
    draw = rng.random()
    if draw < 0.35:
        return words[-1]
    if draw < 0.8:
        return " ".join(words[-2:])
    return " ".join(words)


def aisle_query(world: World, aisle_id: int, language: str, rng: random.Random) -> str:
    written = world.aisle_queries.get(aisle_id)
    if language == "zh" and written is not None:
        return written.zh_name if rng.random() < 0.5 else written.zh_describe
    if written is not None and rng.random() < 0.5:
        return written.en_describe
    return world.aisles[aisle_id]


def intent_aisles(world: World, which: str) -> set[int]:
    """Aisles a shopper may want: ``test`` = the Instacart benchmark's test-split aisles only,
    whose queries no training step reads (``shelfwise train encoder`` and ``train ranker`` train
    on the others), so a trained model cannot be flattered by queries it was trained on;
    ``train``, ``dev``, ``train-dev`` = the benchmark's other splits (``--compare learning``
    warms up on train-dev and tests on test, or, to develop on, warms up on train and tests on
    dev, so that what is learned from behaviour meets new aisles and query strings in the
    test period); ``all`` = every aisle with queries."""
    from training.search.instacart import EXCLUDED_AISLES, split_of

    if which not in INTENT_AISLES:
        raise ValueError(f"--intent-aisles: must be one of {', '.join(INTENT_AISLES)}, got {which!r}")
    aisles = {a for a, name in world.aisles.items() if name not in EXCLUDED_AISLES}
    if which == "all":
        return aisles
    return {a for a in aisles if split_of(a) in which.split("-")}


@dataclass(frozen=True)
class Audience:
    """Who shops in a period: the language mix of their queries, which benchmark split's aisles
    they want (INTENT_AISLES), and the experiment their user ids name."""

    language_mix: dict[str, float]
    aisles: str = "test"
    experiment: str = "sim"


def plan_shoppers(world: World, count: int, seed: int, period: str, audience: Audience) -> list[Shopper]:
    """The shoppers of a period, deterministic given the seed. Their user ids name the
    experiment, so two experiments never share a shopper (nor their event histories)."""
    from training.search.instacart import one_typo

    language_mix, aisles, experiment = audience.language_mix, audience.aisles, audience.experiment

    queryable = intent_aisles(world, aisles)
    orders = [
        order for order in world.orders
        if in_period(order[0], period) and any(world.products[p].aisle_id in queryable for p in order[1])
    ]
    if not orders:
        raise ValueError(f"no {period} orders hold a product of the {aisles} aisles")
    languages = sorted(language_mix)
    shoppers = []
    for index in range(count):
        own_seed = shopper_seed(seed, period, index)
        rng = random.Random(own_seed)
        order_id, items = orders[rng.randrange(len(orders))]
        language = rng.choices(languages, weights=[language_mix[lang] for lang in languages])[0]
        basket = frozenset(items)
        candidates = [p for p in items if world.products[p].aisle_id in queryable]
        searches = []
        for _ in range(min(1 + rng.randrange(MAX_INTENTS), len(candidates))):
            product = world.products[candidates[rng.randrange(len(candidates))]]
            if rng.random() < PRODUCT_INTENT_SHARE:
                intent = Intent("product", product.aisle_id, product.department_id, product.id, basket)
                query = product_query(product.name, rng) if language == "en" else aisle_query(world, product.aisle_id, language, rng)
            else:
                intent = Intent("aisle", product.aisle_id, product.department_id, "", basket)
                query = aisle_query(world, product.aisle_id, language, rng)
            if language == "en" and rng.random() < TYPO_RATE:
                query = one_typo(query, rng)
            searches.append(PlannedSearch(intent, query, language))
        shoppers.append(Shopper(f"sim-{experiment}-{seed}-{index}", order_id, language, tuple(searches), own_seed))
    return shoppers


def match_level(intent: Intent, product: SimProduct | None) -> str:
    if product is None:
        return "none"
    if intent.kind == "product" and product.id == intent.product_id:
        return "product"
    if product.id in intent.basket and product.id != intent.product_id:
        return "basket"
    if product.aisle_id == intent.aisle_id:
        return "aisle"
    if product.department_id == intent.department_id:
        return "department"
    return "none"


@dataclass(frozen=True)
class Action:
    kind: str  # "click", "add_to_cart", "purchase"
    product_id: str
    position: int
    quantity: int = 1
    value: float = 0.0


def react(intent: Intent, page: Sequence[str], world: World, rng: random.Random,
          stop_after_purchase: float = STOP_AFTER_PURCHASE) -> list[Action]:
    """What a shopper does with a page of product ids (position = index + 1)."""
    actions = []
    for index, product_id in enumerate(page[: len(EXAMINATION)]):
        if rng.random() >= EXAMINATION[index]:
            continue
        product = world.products.get(product_id)
        level = match_level(intent, product)
        if rng.random() >= ATTRACTIVENESS[level]:
            continue
        position = index + 1
        actions.append(Action("click", product_id, position))
        if rng.random() >= ADD_TO_CART[level]:
            continue
        quantity = 1 + rng.randrange(3)
        actions.append(Action("add_to_cart", product_id, position, quantity))
        if rng.random() >= PURCHASE[level]:
            continue
        actions.append(Action("purchase", product_id, position, quantity, round(product.price * quantity, 2)))
        if rng.random() < stop_after_purchase:
            break
    return actions
