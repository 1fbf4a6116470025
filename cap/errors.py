"""One exception family. Every message says what was wrong and what to do about it."""

from __future__ import annotations

import math
from collections.abc import Iterable


class CapError(Exception):
    """Base class of every error the companion raises on purpose."""


class UnknownNameError(CapError, KeyError):
    """A preset, dataset or option name that is not one of the valid choices."""

    def __init__(self, kind: str, name: object, choices: Iterable[str]):
        self.kind, self.name, self.choices = kind, name, sorted(choices)
        super().__init__(f"unknown {kind} {name!r}; valid choices: {', '.join(self.choices)}")

    def __str__(self) -> str:  # KeyError would otherwise quote the whole message
        return self.args[0]


class ParameterError(CapError, ValueError):
    """A parameter of the wrong type or out of its valid range."""


_SIMPLE_TYPES = {"int": int, "float": (int, float), "str": str, "bool": bool, "list": list, "dict": dict,
                 "None": type(None)}


def matches_types(value: object, type_names: list[str]) -> bool | None:
    """Whether ``value`` is one of the named simple types (a bool is not an int or float here);
    None when a name is not a simple type, so the caller cannot check it."""
    if any(name not in _SIMPLE_TYPES for name in type_names):
        return None
    return any(isinstance(value, _SIMPLE_TYPES[name]) and not (name in ("int", "float") and isinstance(value, bool))
               for name in type_names)


def check_int(name: str, value: object, minimum: int | None = None) -> int:
    """Return ``value`` if it is an int (not a bool) at least ``minimum``; raise ParameterError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParameterError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ParameterError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_float(name: str, value: object, low: float | None = None, high: float | None = None) -> float:
    """Return ``value`` as float if it is a finite real number within [low, high]; raise
    ParameterError otherwise (NaN and ±inf compare false with everything, so they are refused first)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParameterError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
        bounds = {(True, True): f" in [{low}, {high}]", (True, False): f" >= {low}", (False, True): f" <= {high}",
                  (False, False): ""}[(low is not None, high is not None)]
        raise ParameterError(f"{name} must be a finite number{bounds}, got {value}")
    return value
