"""`shelfwise export`, `quantize`, `train ...`, `eval ...`, `report experiment` and `simulate`:
the model and data work of training/, each handed to its module's `main(argv)` (see
`delegate`), so that `shelfwise search` never imports torch."""

from __future__ import annotations

from services.cli.commands import delegate


def register(commands) -> None:
    delegate(commands, "export", "export the models to ONNX in model_repository/", "training.encoders.export:main",
             quiet_libraries=True)
    delegate(commands, "quantize", "write an int8 version of a text encoder for CPU serving (~2x faster)",
             "training.encoders.quantize:main")

    train = commands.add_parser("train", help="train models on the shop's data and export them")
    models = train.add_subparsers(dest="model", required=True)
    delegate(models, "encoder", "fine-tune the multilingual text encoder on catalogue-derived pairs",
             "training.encoders.train_encoder:main")
    delegate(models, "rec", "train the sequential recommender on purchase sequences (--events: on this shop's "
             "logged interactions, the served model)", "training.rec.train_rec:main")
    delegate(models, "ranker", "train the relevance ranker (LambdaMART) on relevance judgments",
             "training.search.train_ranker:main")
    delegate(models, "ctr", "train the CTR/CVR head (ESMM + position bias) on logged impressions",
             "training.ctr.train_ctr:main")

    evaluate = commands.add_parser("eval", help="evaluations on data, against baselines, with intervals")
    evaluations = evaluate.add_subparsers(dest="evaluation", required=True)
    delegate(evaluations, "search", "relevance of search pipelines on any catalogue, TSV queries and TREC qrels",
             "training.search.eval_search:main")
    delegate(evaluations, "instacart", "build the Instacart aisle benchmark and evaluate every pipeline on one split",
             "training.search.instacart_eval:instacart_main")
    delegate(evaluations, "query-understanding", "extraction, spelling and query->category accuracy",
             "training.search.eval_query_understanding:main")
    delegate(evaluations, "query-category",
             "the query -> category vote search uses, against majority and BM25-vote baselines",
             "training.search.eval_query_category:main")
    delegate(evaluations, "suggest", "autocomplete MRR@5 on the Best Buy query log: the service's suggestion index "
             "vs plain prefix completion, clean and typo'd prefixes", "training.suggest.eval_suggest:main")
    delegate(evaluations, "rec", "next-item recommendation on Amazon Beauty/Sports/Toys: ours, RecBole SASRec, "
             "popularity", "training.rec.eval_rec:main")
    delegate(evaluations, "ctr", "the trained CTR/CVR head vs logistic regression and LightGBM on a later window "
             "(AUC, log-loss)", "training.ctr.eval_ctr:main")
    delegate(evaluations, "offpolicy", "a ranking's CTR and CVR estimated from explored searches in the logs "
             "(IPS, SNIPS, PBM)", "training.experiments.offpolicy:main")
    delegate(evaluations, "tune-fusion", "tune lexical/dense fusion on the Instacart dev split",
             "training.search.instacart_eval:tune_fusion_main")

    report = commands.add_parser("report", help="reports on logged traffic")
    reports = report.add_subparsers(dest="report", required=True)
    delegate(reports, "experiment", "CTR, add-to-cart rate, CVR and revenue per search per arm, with 95% intervals "
             "and lifts", "training.experiments.experiment_report:main")

    delegate(commands, "simulate", "SIMULATED A/B test: Instacart-grounded shoppers search and buy through the real "
             "stack (--compare learning: what each learned part is worth)", "training.experiments.learning_comparison:main")
