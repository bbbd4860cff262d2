"""Unit tests of services/query_understanding."""
