"""Unit tests of services/ranking."""
