"""Search relevance: the Instacart benchmark and our hand-written queries (`benchmarks/`), the
evaluation of every search pipeline, the query-understanding and query-category evaluations,
seeded typos, and the relevance ranker's training."""
