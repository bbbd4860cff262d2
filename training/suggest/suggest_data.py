"""The query log autocomplete is evaluated on, what the shopper is taken to have typed, the
plain prefix baseline and the metric (`shelfwise eval suggest`, eval_suggest.py).

The log is Algolia's Best Buy query suggestions (/work/shared/data/algolia_bestbuy/, real
queries): each query with its `popularity` and its category facet counts. A query's popularity
plus one is its count of clicked searches (every listed query was searched; many have
popularity 0), and the category names of the facets, each with its largest product count seen,
are the catalogue side, as `services.query_understanding.suggestions` takes them in the service.

Dev and test are a deterministic half each by a hash of the query text, so every setting is
chosen on dev without looking at test. What was typed: the query's first 1, 2 or 3 characters
(clean), or its first 3-5 characters with one seeded keyboard typo (`training.search.misspell`:
deletion, transposition, QWERTY-neighbour substitution or insertion, first letter kept), for
prefixes of ASCII letters only. The metric is the reciprocal rank of the query itself among the
first five suggestions (0 when absent: MRR@5).
"""

from __future__ import annotations

import hashlib
import json
import random
from bisect import bisect_left
from dataclasses import dataclass
from pathlib import Path

from services.common.text import normalize
from services.query_understanding.suggestions import Candidate, Source, query_candidates

DATA_FILE = Path("algolia_bestbuy") / "query_suggestions.json"
CUTOFF = 5
CLEAN_LENGTHS = (1, 2, 3)
TYPO_LENGTHS = (3, 4, 5)


@dataclass(frozen=True)
class LoggedQuery:
    text: str  # normalized
    popularity: int
    categories: tuple[tuple[str, int], ...]

    @property
    def split(self) -> str:
        """"dev" or "test", half each, by a hash of the text (stable across runs and machines)."""
        return "dev" if hashlib.sha256(self.text.encode()).digest()[0] % 2 == 0 else "test"


def read_log(data_dir: Path) -> list[LoggedQuery]:
    """The logged queries, normalized, first occurrence of a text kept."""
    path = Path(data_dir) / DATA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (set --data-dir or SHELFWISE_DATA_DIR)")
    seen, log = set(), []
    for record in json.loads(path.read_text(encoding="utf-8")):
        text = normalize(str(record.get("query", "")))
        if not text or text in seen:
            continue
        seen.add(text)
        facets = (((record.get("instant_search") or {}).get("facets") or {}).get("exact_matches") or {})
        categories = tuple((str(v["value"]), int(v.get("count", 0))) for v in facets.get("categories") or ())
        log.append(LoggedQuery(text, int(record.get("popularity") or 0), categories))
    return log


def index_candidates(log: list[LoggedQuery]) -> list[Candidate]:
    """What the service's index is built from: the queries as the query log (popularity + 1
    clicked searches) and the facets' category names as the catalogue."""
    categories: dict[str, int] = {}
    for query in log:
        for name, count in query.categories:
            categories[name] = max(categories.get(name, 0), count)
    return query_candidates((q.text, q.popularity + 1) for q in log) + [
        Candidate(name, Source.CATEGORY, count) for name, count in categories.items()
    ]


class PrefixBaseline:
    """Plain prefix completion over the logged queries: those that start with what was typed,
    most popular first; ties broken by `tie_break` ("text": alphabetical; "length": shorter
    first, then alphabetical)."""

    def __init__(self, log: list[LoggedQuery], tie_break: str = "length"):
        self.tie_break = tie_break
        self._texts = sorted(q.text for q in log)
        self._popularity = {q.text: q.popularity + 1 for q in log}

    def suggest(self, prefix: str, limit: int) -> list[str]:
        typed = normalize(prefix) + (" " if prefix[-1:].isspace() else "")
        lo = bisect_left(self._texts, typed)
        hi = bisect_left(self._texts, typed + chr(0x10FFFF))
        if self.tie_break == "length":
            order = lambda text: (-self._popularity[text], len(text), text)  # noqa: E731
        else:
            order = lambda text: (-self._popularity[text], text)  # noqa: E731
        return sorted(self._texts[lo:hi], key=order)[:limit]


def reciprocal_rank(suggested: list[str], target: str) -> float:
    """1/rank of `target` among the first CUTOFF suggestions (compared normalized), else 0."""
    for rank, text in enumerate(suggested[:CUTOFF], start=1):
        if normalize(text) == target:
            return 1.0 / rank
    return 0.0


def typo_prefix(query: str, length: int, seed: int) -> str | None:
    """The first `length` characters of `query` with one seeded typo, or None when they are
    not all ASCII letters (typos of digits and spaces are another model) or too short."""
    from training.search.misspell import misspell_word

    head = query[:length]
    if len(head) < length or not (head.isascii() and head.isalpha()):
        return None
    return misspell_word(head, random.Random(f"{seed}:{query}:{length}"))
