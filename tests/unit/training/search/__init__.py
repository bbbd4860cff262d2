"""Unit tests of training/search/."""
