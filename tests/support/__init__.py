"""Shared test support: what several test modules need (waiting with a bound, ...)."""
