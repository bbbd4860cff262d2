"""Unit tests of training/encoders/."""
