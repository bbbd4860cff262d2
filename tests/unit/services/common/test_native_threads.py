"""Unit tests of services.common.native_threads: the BLAS/OpenMP thread limit of a service."""

from __future__ import annotations

import numpy  # noqa: F401 - loads OpenBLAS, which the limit then applies to
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from services.common.native_threads import limit_native_threads, native_threads


def test_one_thread_unless_configured() -> None:
    assert native_threads({}) == 1
    assert native_threads({"SHELFWISE_NATIVE_THREADS": "4"}) == 4


@pytest.mark.parametrize("raw", ["0", "-1", "two", "1.5"])
def test_a_bad_setting_names_the_variable(raw: str) -> None:
    with pytest.raises(ValueError, match="SHELFWISE_NATIVE_THREADS"):
        native_threads({"SHELFWISE_NATIVE_THREADS": raw})


def test_the_limit_reaches_the_loaded_blas() -> None:
    with threadpool_limits(limits=None):  # restores this process's pools afterwards
        limit_native_threads({"SHELFWISE_NATIVE_THREADS": "1"})
        blas = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
        assert blas and all(pool["num_threads"] == 1 for pool in blas)
