"""Fuzz targets (atheris) and the tests that keep them runnable; `.ci/fuzz` runs them for a bounded time."""
