"""Unit tests of training/rec/."""
