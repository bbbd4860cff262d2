"""Unit tests of training/experiments/."""
