"""Typed reads of environment variables: a bad value fails at start-up with a message naming
the variable. Settings modules (services/common/config.py and each service's config.py) build
on these; so does the circuit breaker's, which config.py in turn holds."""

from __future__ import annotations

import os
from typing import Mapping


def env_str(name: str, default: str, environ: Mapping[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    value = environ.get(name)
    return default if value is None or value.strip() == "" else value.strip()


def env_int(name: str, default: int, environ: Mapping[str, str] | None = None, minimum: int | None = None) -> int:
    return _env_number(name, default, environ, minimum, int, "an integer")


def env_float(name: str, default: float, environ: Mapping[str, str] | None = None, minimum: float | None = None) -> float:
    return _env_number(name, default, environ, minimum, float, "a number")


def _env_number(name, default, environ, minimum, parse, kind: str):
    raw = env_str(name, str(default), environ)
    try:
        value = parse(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not {kind}") from None
    if minimum is not None and value < minimum:
        raise ValueError(f"environment variable {name}={value} must be >= {minimum}")
    return value


def env_bool(name: str, default: bool, environ: Mapping[str, str] | None = None) -> bool:
    raw = env_str(name, "true" if default else "false", environ).lower()
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"environment variable {name}={raw!r} is not a boolean (true/false)")
