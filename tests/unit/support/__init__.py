"""Unit tests of the shared test helpers in tests/support."""
