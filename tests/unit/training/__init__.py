"""Unit tests of the training/ packages, one folder per package."""
