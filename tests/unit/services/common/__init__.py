"""Unit tests of services/common."""
