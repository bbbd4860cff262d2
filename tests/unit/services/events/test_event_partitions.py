"""Unit tests of services.events.partitions: which monthly partitions the events service keeps."""

from __future__ import annotations

from datetime import date

from services.events.partitions import months_from, partition_name


def test_months_from_starts_at_the_first_of_this_month_and_crosses_the_year():
    assert months_from(date(2026, 11, 30), 2) == [date(2026, 11, 1), date(2026, 12, 1), date(2027, 1, 1)]


def test_months_from_with_nothing_ahead_is_this_month_only():
    assert months_from(date(2025, 1, 1), 0) == [date(2025, 1, 1)]


def test_partition_names_are_parent_year_and_month():
    assert partition_name("impressions", date(2027, 3, 1)) == "impressions_2027_03"
