"""Unit tests of services/retrieval."""
