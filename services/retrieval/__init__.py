"""Candidate retrieval service: BM25 + dense ANN candidates, fused and filtered."""
