"""Unit tests of training/ctr/."""
