"""Unit tests of services/gateway."""
