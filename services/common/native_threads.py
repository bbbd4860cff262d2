"""One native thread per service process for numpy's BLAS and FAISS's OpenMP, unless
SHELFWISE_NATIVE_THREADS says otherwise.

A service's matrix work is small and per request (the exact dense scores of one query, a
200-row feature matrix), and several service processes share the machine's cores. With a
pool per library, OpenBLAS's workers spin while they wait: the dense scores of one query over
10k x 384 vectors cost 1.26 ms of CPU with two OpenBLAS threads and 0.48 ms with one (this
2-core machine, 2026-12-05). ONNX Runtime keeps its own pool (services/common/inference.py).
Only libraries loaded when this runs are limited, so each service calls it after its imports.
"""

from __future__ import annotations

import os
from typing import Mapping

from threadpoolctl import threadpool_limits


def native_threads(environ: Mapping[str, str] | None = None) -> int:
    raw = (environ if environ is not None else os.environ).get("SHELFWISE_NATIVE_THREADS", "1").strip() or "1"
    try:
        threads = int(raw)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ValueError(f"SHELFWISE_NATIVE_THREADS must be a whole number >= 1, got {raw!r}")
    return threads


def limit_native_threads(environ: Mapping[str, str] | None = None) -> int:
    """Limits the BLAS and OpenMP pools loaded so far; returns the limit."""
    threads = native_threads(environ)
    threadpool_limits(limits=threads)
    return threads
