"""atheris fuzz target for the query parser (query understanding's `understand`).

The input bytes are the query, decoded as UTF-8 with errors="surrogateescape" so that the
seed corpus (tests/fuzz/corpus/query_parser/, one plain query per file) reads as written and
mutated bytes become lone surrogates, which a Python caller can pass too. A crash is any
exception other than InvalidArgument, or a broken invariant of the result: prices finite,
non-negative and ordered, normalisation idempotent, tokens drawn from the search text.

Run it (what `.ci/fuzz` does):
    python tests/fuzz/fuzz_query_parser.py -max_total_time=60 <corpus dir>
`test_one_input` is also what tests/fuzz/test_fuzz_query_parser.py runs on the seeds, so the
target cannot rot between fuzzing runs.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

SEEDS = Path(__file__).resolve().parent / "corpus" / "query_parser"
# Only the parsing code is instrumented for coverage: the rest (numpy, jieba, langid) would
# slow every run and guide the fuzzer towards code that is not under test.
INSTRUMENTED = ["services.query_understanding", "services.common.text"]

_understander = None


def _load_understander():
    """The understander over the demo catalogue's vocabulary (brands, categories, attributes
    and spelling live, as in production); built once, warmed up."""
    from services.local.catalog_import import demo_catalog_path
    from services.query_understanding.understanding import QueryUnderstander
    from services.query_understanding.vocabulary import CatalogVocabulary
    from services.retrieval.catalog import read_catalog

    products, _ = read_catalog(demo_catalog_path())
    vocabulary = CatalogVocabulary.from_products(
        {"title": p.title, "description": p.description, "brand": p.brand, "category": p.category,
         "attributes": dict(p.attributes)}
        for p in products
    )
    understander = QueryUnderstander(vocabulary)
    understander.warm_up()
    return understander


def understander():
    global _understander
    if _understander is None:
        _understander = _load_understander()
    return _understander


def test_one_input(data: bytes) -> None:
    """One fuzz input. Raises (a crash) on anything but a clean result or InvalidArgument."""
    from services.common.errors import InvalidArgument
    from services.common.text import normalize, words
    from services.query_understanding.price_phrases import extract_price

    query = data.decode("utf-8", errors="surrogateescape")
    normalized = normalize(query)
    assert normalize(normalized) == normalized, "normalize is not idempotent"
    price = extract_price(normalized)
    if price is not None:
        for bound in (price.min, price.max):
            assert bound is None or (math.isfinite(bound) and bound >= 0), price
    try:
        result = understander().understand(query)
    except InvalidArgument as error:
        assert error.field == "query" and error.rule, error.message
        return
    assert result.normalized == normalized
    for bound in (result.price_min, result.price_max):
        assert bound is None or (math.isfinite(bound) and bound >= 0), (bound, query)
    if result.price_min is not None and result.price_max is not None:
        assert result.price_min <= result.price_max, (result.price_min, result.price_max)
    assert 0.0 <= result.language_confidence <= 1.0
    assert result.tokens == tuple(words(result.search_text))


def main() -> None:
    import atheris

    with atheris.instrument_imports(include=INSTRUMENTED):
        import services.common.text  # noqa: F401
        import services.query_understanding.understanding  # noqa: F401
    understander()  # load the vocabulary and models before fuzzing starts, not in the first input
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
