"""`shelfwise eval query-understanding`: how well query understanding reads shoppers' queries.

Three measurements, all through the real domain code (`QueryUnderstander` over a
`CatalogVocabulary` built from a catalogue file, by default the demo catalogue):

1. **Extraction** on a hand-labelled set (`training/search/benchmarks/query_understanding_labels.jsonl`,
   English and Chinese queries over the demo catalogue's vocabulary, labelled with what a shop
   would expect, see `training/search/benchmarks/query_understanding.md`). Scored field by field: a price bound is
   right when it equals the label within one cent; brands, categories and attributes are
   compared as sets ((name, value) pairs for attributes, values compared case- and
   space-insensitively, so "500 ml" and "500ml" agree). Micro precision/recall/F1 per field, per
   language and overall, the share of queries with every field right, and language detection.
2. **Spelling robustness** on the labelled English queries: each clean query is misspelt by
   `training.search.misspell.misspell` (one keyboard typo per word of 4+ letters, several seeds); we
   count how often the corrected query is the clean query again, how often a clean query is
   changed at all (false corrections), and extraction F1 on the misspelt queries. Non-English
   queries (`training/search/benchmarks/non_english_queries.tsv`) must come through unchanged too.
3. **Query → category classification** on real queries whose categories Shelfwise's vocabulary
   does not know: WANDS (Wayfair queries and their product class) and, optionally, Best Buy
   (popular queries; the label is the query's top `hierarchicalCategories.lvl1` facet). Seeded
   stratified split (classes with a single query go to train), then: (a) zero-shot nearest
   class name by the project's text encoder; (b) k-NN and logistic regression on its
   embeddings (also with the class names added as training examples); (c) a TF-IDF + logistic
   regression lexical baseline. Logistic regression's C comes from cross-validation on the
   training split. Accuracy and macro-F1 with
   percentile-bootstrap 95% intervals over the test queries.

Embeddings come from the ONNX models of `model_repository/` through the embedded runtime
(`services.common.inference.EmbeddedOnnxRuntime`, `services.common.text_encoder.TextEncoder`),
the same files the services serve. The data sets are read in place from `--data-dir`
(`$SHELFWISE_DATA_DIR`, default `../shared/data`); their licences forbid copying them into the
repository, and a missing folder skips that part with the reason.

Entry point: `main(argv) -> int` (0 on success, 2 on bad input).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from services.common.config import model_repository, shared_data_dir
from services.query_understanding.understanding import QueryUnderstander
from training.search.query_classification import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_SEED,
    DEFAULT_TEST_FRACTION,
    ENCODER_MODELS,
    encoder_factory,
    read_bestbuy,
    read_wands,
    run_classification,
    zero_shot_label_categories,
)
from training.search.query_extraction import (
    DEFAULT_FOREIGN,
    DEFAULT_LABELS,
    DEFAULT_MISSPELL_SEEDS,
    FIELDS,
    demo_catalog_path,
    evaluate_extraction,
    evaluate_spelling,
    load_vocabulary,
    read_foreign_queries,
    read_labels,
)

__all__ = ["main"]


# --------------------------------------------------------------------- classification


def print_label_categories(result: dict[str, Any]) -> None:
    print(f"\nzero-shot nearest category (of {result['categories']}) for labelled queries that name one")
    rows = []
    for name, data in result["encoders"].items():
        for group, acc in data["accuracy"].items():
            rows.append([f"{name} {group}", f"{acc['right']}/{acc['queries']}", f"{acc['accuracy']:.3f}"])
    print(format_table(["encoder / group", "right", "accuracy"], rows))


# ---------------------------------------------------------------------------- output


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]])


def print_extraction(report: dict[str, Any], show_failures: int) -> None:
    rows = []
    for group, data in report["groups"].items():
        for name in FIELDS:
            f = data["fields"][name]
            rows.append([f"{group} {name}", f"{f['precision']:.3f}", f"{f['recall']:.3f}", f"{f['f1']:.3f}",
                         f["tp"], f["fp"], f["fn"]])
        rows.append([f"{group} all fields right", "", "", f"{data['all_fields_right']:.3f}", "", "",
                     f"n={data['queries']}"])
        rows.append([f"{group} language", "", "", f"{data['language_accuracy']:.3f}", "", "", ""])
    print(format_table(["group / field", "precision", "recall", "F1", "tp", "fp", "fn"], rows))
    failures = report["failures"]
    if failures and show_failures:
        shown = failures if show_failures < 0 else failures[:show_failures]
        print(f"\nqueries with a wrong field ({len(failures)}; showing {len(shown)}):")
        for failure in shown:
            problems = "; ".join(
                f"{name}: expected {_short(v['expected'])} got {_short(v['got'])}" for name, v in failure["wrong"].items()
            )
            print(f"  {failure['id']} {failure['query']!r} -> {failure['corrected']!r}: {problems}")


def _short(items: list) -> str:
    return "{" + ", ".join("=".join(map(str, i)) if isinstance(i, (tuple, list)) else str(i) for i in items) + "}"


def print_spelling(report: dict[str, Any]) -> None:
    rows = [
        ["clean queries changed (false corrections)",
         f"{report['clean_false_corrections']}/{report['queries']} = {report['clean_false_correction_rate']:.3f}"],
        [f"misspelt queries restored exactly ({report['seeds']} seeds, rate {report['rate']})",
         f"{report['restored']}/{report['misspelt_queries']} = {report['restored_rate']:.3f}"],
        ["misspelt words", str(report["misspelt_words"])],
        ["misspelt queries reported as English",
         f"{report['misspelt_detected_english']}/{report['misspelt_queries']}"],
    ]
    if report["foreign_queries"]:
        rows.append(["non-English queries changed (false corrections)",
                     f"{report['foreign_changed']}/{report['foreign_queries']}"])
    for name in FIELDS:
        rows.append([f"{name} F1 clean -> misspelt",
                     f"{report['extraction_f1_clean'][name]:.3f} -> {report['extraction_f1_misspelt'][name]:.3f}"])
    print(format_table(["spelling robustness (English)", "value"], rows))
    for example in report["false_correction_examples"][:10]:
        print(f"  false correction: {example['clean']!r} -> {example['corrected']!r}")
    for example in report["not_restored_examples"][:10]:
        print(f"  not restored: {example['clean']!r} -> {example['misspelt']!r} -> {example['corrected']!r}")
    for example in report["foreign_changed_examples"][:10]:
        print(f"  changed {example['lang']}: {example['query']!r} -> {example['corrected']!r}")


def print_classification(name: str, report: dict[str, Any]) -> None:
    print(f"\n{name}: {report['queries']} labelled queries ({report['dropped_without_label']} dropped), "
          f"{report['classes']} classes; train {report['train']}, test {report['test']} "
          f"({report['test_classes']} classes), seed {report['split']['seed']}; logistic regression C "
          "by 3-fold CV on train: " + ", ".join(f"{k} {v:g}" for k, v in report["logreg_c"].items()))
    rows = []
    for method, r in report["methods"].items():
        rows.append([method, f"{r['accuracy']:.3f} [{r['accuracy_ci95'][0]:.3f}, {r['accuracy_ci95'][1]:.3f}]",
                     f"{r['macro_f1']:.3f} [{r['macro_f1_ci95'][0]:.3f}, {r['macro_f1_ci95'][1]:.3f}]"])
    print(format_table(["method", "accuracy [95% CI]", "macro-F1 [95% CI]"], rows))


# ------------------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shelfwise eval query-understanding",
        description="Measure query understanding: extraction on labelled queries, spelling "
        "robustness, and query -> category classification on WANDS / Best Buy.",
    )
    parser.add_argument("--catalog", type=Path, default=None,
                        help="catalogue whose vocabulary is used (JSONL/CSV/Parquet; default: the demo catalogue)")
    parser.add_argument("--labels", type=Path, default=DEFAULT_LABELS,
                        help="labelled queries (JSONL; default: %(default)s)")
    parser.add_argument("--foreign", type=Path, default=DEFAULT_FOREIGN,
                        help="non-English queries (lang<TAB>query) that spelling correction must leave alone "
                             "(default: %(default)s)")
    parser.add_argument("--tasks", nargs="+", default=["extraction", "spelling", "wands"],
                        choices=["extraction", "spelling", "wands", "bestbuy", "label-categories"],
                        help="what to measure (default: extraction spelling wands); label-categories: "
                             "zero-shot nearest catalogue category of the labelled queries, per encoder")
    parser.add_argument("--data-dir", type=Path, default=shared_data_dir(),
                        help="folder holding wands/ and algolia_bestbuy/ (default: $SHELFWISE_DATA_DIR or ../shared/data)")
    parser.add_argument("--model-repository", type=Path,
                        default=model_repository())
    parser.add_argument("--encoder", action="append", dest="encoders", metavar="MODEL",
                        help=f"text encoder model(s) for classification (repeatable; default: those of "
                             f"{', '.join(ENCODER_MODELS)} present)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="split and bootstrap seed (default: %(default)s)")
    parser.add_argument("--test-fraction", type=float, default=DEFAULT_TEST_FRACTION)
    parser.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP, help="bootstrap resamples (default: %(default)s)")
    parser.add_argument("--misspell-seeds", type=int, default=DEFAULT_MISSPELL_SEEDS)
    parser.add_argument("--misspell-rate", type=float, default=1.0,
                        help="probability that a word of 4+ letters gets a typo (default: %(default)s)")
    parser.add_argument("--show-failures", type=int, default=30,
                        help="extraction failures to print (-1: all; the JSON report has all)")
    parser.add_argument("--out", type=Path, default=None, help="write the full report as JSON here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 0.0 <= args.misspell_rate <= 1.0:
        print("error: --misspell-rate must be between 0 and 1", file=sys.stderr)
        return 2
    if not 0.0 < args.test_fraction < 1.0:
        print("error: --test-fraction must be between 0 and 1", file=sys.stderr)
        return 2
    catalog = args.catalog or demo_catalog_path()
    report: dict[str, Any] = {"catalog": str(catalog), "labels": str(args.labels)}
    try:
        understander = QueryUnderstander(load_vocabulary(catalog))
        rows = read_labels(args.labels) if {"extraction", "spelling", "label-categories"} & set(args.tasks) else []
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    if "extraction" in args.tasks:
        scores = evaluate_extraction(understander, rows).as_dict()
        report["extraction"] = scores
        print(f"Extraction on {len(rows)} labelled queries ({args.labels.name}), vocabulary of {catalog.name}")
        print_extraction(scores, args.show_failures)
    if "spelling" in args.tasks:
        try:
            foreign = read_foreign_queries(args.foreign)
        except (OSError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        spelling = evaluate_spelling(understander, rows, args.misspell_seeds, args.misspell_rate, foreign)
        report["spelling"] = spelling
        print()
        print_spelling(spelling)

    wanted = [task for task in ("wands", "bestbuy", "label-categories") if task in args.tasks]
    if wanted:
        report["classification"] = {}
        encoders, notes = [], {}
        for model in args.encoders or ENCODER_MODELS:
            encoder, note = encoder_factory(args.model_repository, model)
            notes[model] = note
            if encoder is not None:
                encoders.append((model, encoder))
            elif args.encoders:
                print(f"error: {note}", file=sys.stderr)
                return 2
        report["classification"]["encoders"] = notes
        print("\nencoders: " + "; ".join(notes.values()))
        readers = {"wands": read_wands, "bestbuy": read_bestbuy}
        if "label-categories" in wanted:
            names = sorted(set(understander.vocabulary.categories.values()))
            result = zero_shot_label_categories(rows, names, encoders)
            report["classification"]["label-categories"] = result
            print_label_categories(result)
        for task in (t for t in wanted if t in readers):
            try:
                data = readers[task](args.data_dir)
            except FileNotFoundError as error:
                print(f"\n{task}: skipped ({error.filename} is missing; set --data-dir or SHELFWISE_DATA_DIR)")
                report["classification"][task] = {"skipped": f"{error.filename} is missing"}
                continue
            result = run_classification(data, encoders, args.test_fraction, args.seed, args.bootstrap)
            report["classification"][task] = result
            print_classification(task, result)

    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        print(f"\nreport: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
