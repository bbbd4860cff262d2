"""The Instacart aisle-search benchmark: catalogue, queries and judgments built from
``../shared/data/instacart`` at run time (its licence forbids copying the data into the
repository, so only the builder and our own hand-written queries are committed).

Task: a query names or describes an aisle; the relevant products are that aisle's products
(binary grades: aisles are curated by Instacart, and a product of the same department but
another aisle is not what the shopper asked for). Many products do not contain the aisle's
words ("fresh fruits" → "Banana"), which is where semantic matching has to beat lexical search.

Catalogue: every product, ``title`` = product name and ``category`` = its department (a shop
knows its departments; the aisle is the label, so it never appears in the catalogue). Aisles
"other" and "missing" get no queries (they describe nothing); their products stay in the
catalogue as distractors. Instacart has no prices, so every price is 0.

Split (published, deterministic): aisles are ordered by SHA-256 of ``"{SPLIT_SALT}:{aisle_id}"``
and cut 50% train / 20% dev / 30% test. Training and tuning read only the train and dev files;
the test files are for final reporting. Query sets per split, all judged by the same qrels:

- ``{split}.en.queries.tsv``: the aisle's name as a query, and an English description of it
  (written by us, ``training/search/benchmarks/instacart_aisle_queries.tsv``);
- ``{split}.zh.queries.tsv``: the same two queries written in Chinese (by us);
- ``{split}.en-misspelled.queries.tsv``: the English queries with one seeded typo each (one
  edit in one word of four letters or more, ``training.search.misspell``; most misspelt queries in
  real logs carry one typo), same query ids.

Query files carry the language as an optional third column, so per-language results do not
depend on language detection of two-word, misspelt queries.

Query ids are ``a{aisle_id}-{kind}`` with kind ``name`` or ``describe``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

SPLIT_SALT = "shelfwise-instacart-v1"
SPLIT_FRACTIONS = (("train", 0.5), ("dev", 0.2), ("test", 0.3))
EXCLUDED_AISLES = frozenset({"other", "missing"})
MISSPELL_SEED = 20261123
QUERIES_FILE = Path(__file__).parent / "benchmarks" / "instacart_aisle_queries.tsv"


@dataclass(frozen=True)
class Aisle:
    id: int
    name: str
    department_ids: frozenset[int]


@dataclass(frozen=True)
class AisleQueries:
    en_describe: str
    zh_name: str
    zh_describe: str


def split_of(aisle_id: int) -> str:
    """The split an aisle belongs to; depends only on its id and the salt."""
    digest = hashlib.sha256(f"{SPLIT_SALT}:{aisle_id}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    cumulative = 0.0
    for name, fraction in SPLIT_FRACTIONS:
        cumulative += fraction
        if position < cumulative:
            return name
    return SPLIT_FRACTIONS[-1][0]


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; set SHELFWISE_DATA_DIR to the folder holding instacart/")
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def read_written_queries(path: Path = QUERIES_FILE) -> dict[int, AisleQueries]:
    rows = {}
    with path.open(encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n").split("\t")
        if header != ["aisle_id", "en_describe", "zh_name", "zh_describe"]:
            raise ValueError(f"{path}: unexpected header {header}")
        for number, line in enumerate(handle, start=2):
            if not line.strip():
                continue
            cells = line.rstrip("\n").split("\t")
            if len(cells) != 4 or not all(cell.strip() for cell in cells):
                raise ValueError(f"{path}:{number}: expected 4 non-empty tab-separated cells")
            rows[int(cells[0])] = AisleQueries(*(cell.strip() for cell in cells[1:]))
    return rows


@dataclass(frozen=True)
class BenchmarkFiles:
    folder: Path
    catalog: Path

    def queries(self, split: str, query_set: str) -> Path:
        return self.folder / f"{split}.{query_set}.queries.tsv"

    def qrels(self, split: str) -> Path:
        return self.folder / f"{split}.qrels"


QUERY_SETS = ("en", "zh", "en-misspelled")


def build(data_dir: Path, out_dir: Path) -> BenchmarkFiles:
    """Writes the catalogue, the query sets and the qrels of every split into ``out_dir``."""
    
    source = Path(data_dir) / "instacart"
    aisles = {int(r["aisle_id"]): r["aisle"].strip() for r in _read_csv(source / "aisles.csv")}
    departments = {int(r["department_id"]): r["department"].strip() for r in _read_csv(source / "departments.csv")}
    products = _read_csv(source / "products.csv")
    written = read_written_queries()

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = BenchmarkFiles(out_dir, out_dir / "catalog.jsonl")
    members: dict[int, list[str]] = {}
    with files.catalog.open("w", encoding="utf-8") as handle:
        for row in products:
            product_id, aisle_id = row["product_id"].strip(), int(row["aisle_id"])
            members.setdefault(aisle_id, []).append(product_id)
            record = {
                "id": product_id,
                "title": row["product_name"].strip(),
                "category": departments.get(int(row["department_id"]), ""),
                "price": 0,
                "locale": "en",
            }
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    rng = random.Random(MISSPELL_SEED)
    for split, _ in SPLIT_FRACTIONS:
        queried = sorted(
            aisle_id
            for aisle_id, name in aisles.items()
            if name not in EXCLUDED_AISLES and split_of(aisle_id) == split and members.get(aisle_id)
        )
        missing = [aisle_id for aisle_id in queried if aisle_id not in written]
        if missing:
            raise ValueError(f"{QUERIES_FILE}: no written queries for aisles {missing}")
        sets: dict[str, list[tuple[str, str, str]]] = {name: [] for name in QUERY_SETS}
        for aisle_id in queried:
            own = written[aisle_id]
            english = [(f"a{aisle_id}-name", aisles[aisle_id]), (f"a{aisle_id}-describe", own.en_describe)]
            sets["en"] += [(qid, text, "en") for qid, text in english]
            sets["zh"] += [(f"a{aisle_id}-name", own.zh_name, "zh"), (f"a{aisle_id}-describe", own.zh_describe, "zh")]
            sets["en-misspelled"] += [(qid, one_typo(text, rng), "en") for qid, text in english]
        for name, rows in sets.items():
            _write_queries(files.queries(split, name), rows)
        with files.qrels(split).open("w", encoding="utf-8") as handle:
            for aisle_id in queried:
                for kind in ("name", "describe"):
                    for product_id in members[aisle_id]:
                        handle.write(f"a{aisle_id}-{kind} 0 {product_id} 1\n")
    return files


def one_typo(text: str, rng: random.Random) -> str:
    """``text`` with one keyboard typo in one of its words of 4+ letters (chosen by ``rng``)."""
    from training.search.misspell import MIN_WORD_LETTERS, misspell_word

    words = text.split(" ")
    eligible = [i for i, word in enumerate(words) if word.isascii() and word.isalpha() and len(word) >= MIN_WORD_LETTERS]
    if not eligible:
        return text
    i = eligible[rng.randrange(len(eligible))]
    words[i] = misspell_word(words[i], rng)
    return " ".join(words)


def _write_queries(path: Path, rows: Iterable[tuple[str, str, str]]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for qid, text, language in rows:
            handle.write(f"{qid}\t{' '.join(text.split())}\t{language}\n")


def split_summary(data_dir: Path) -> dict[str, int]:
    """Number of queried aisles per split (printed by the builder)."""
    aisles = _read_csv(Path(data_dir) / "instacart" / "aisles.csv")
    counts: dict[str, int] = {}
    for row in aisles:
        if row["aisle"].strip() not in EXCLUDED_AISLES:
            split = split_of(int(row["aisle_id"]))
            counts[split] = counts.get(split, 0) + 1
    return counts
