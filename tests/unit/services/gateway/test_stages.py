"""Unit tests of services.gateway.stages: the fallback query understanding."""

from __future__ import annotations

from shelfwise.common.v1 import common_pb2

from services.gateway.stages import fallback_understanding


# --- fallback understanding ------------------------------------------------------------------


def test_fallback_understanding_normalizes_text() -> None:
    understood = fallback_understanding("  Red \t RUNNING\nＳｈｏｅｓ  ")
    assert understood.original_query == "  Red \t RUNNING\nＳｈｏｅｓ  "
    assert understood.normalized_query == "red running shoes"
    assert understood.corrected_query == "red running shoes"
    assert understood.search_text == "red running shoes"


def test_fallback_understanding_has_no_filters_or_model_version() -> None:
    understood = fallback_understanding("shoes under $50")
    assert understood.search_text == "shoes under $50"
    assert not understood.HasField("filters") or understood.filters == common_pb2.Filters()
    assert understood.model_version == ""
