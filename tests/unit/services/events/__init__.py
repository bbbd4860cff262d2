"""Unit tests of services/events."""
