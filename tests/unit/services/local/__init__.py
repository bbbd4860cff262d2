"""Unit tests of services/local."""
