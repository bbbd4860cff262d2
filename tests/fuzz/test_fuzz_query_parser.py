"""The query-parser fuzz target stays runnable: its input function on every seed of its corpus,
plus inputs that once broke parsers (no fuzzing here; `.ci/fuzz` does that for a bounded time)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz import fuzz_query_parser

SEEDS = sorted(fuzz_query_parser.SEEDS.iterdir())
EXTRA_INPUTS = [
    b"",
    b"\x00" * 600,
    b"\xff\xfe\xfd",
    "ﷺ".encode() * 200,
    b"under $" + b"9" * 400,
    b"between 1e309 and -5 dollars",
    "一百万亿元以下".encode(),
]


def test_the_seed_corpus_is_not_empty():
    assert len(SEEDS) >= 10


@pytest.mark.parametrize("seed", SEEDS, ids=[p.name for p in SEEDS])
def test_the_target_accepts_each_seed(seed: Path):
    fuzz_query_parser.test_one_input(seed.read_bytes())


@pytest.mark.parametrize("data", EXTRA_INPUTS)
def test_the_target_accepts_hostile_inputs(data: bytes):
    fuzz_query_parser.test_one_input(data)


def test_the_target_runs_under_atheris_and_libfuzzer(tmp_path):
    # A few hundred runs through atheris itself: the instrumented imports, Setup and Fuzz.
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for seed in SEEDS[:3]:
        (corpus / seed.name).write_bytes(seed.read_bytes())
    result = subprocess.run(
        [sys.executable, fuzz_query_parser.__file__, "-runs=200", "-max_len=256", str(corpus)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done 200 runs" in result.stderr
