"""The primitive checkers of the study schema: each turns a raw TOML value into a typed one or
raises a one-line :class:`ConfigError` naming the file, the table and the key."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

__all__ = ["ConfigError", "Where", "MAX_SEED", "NAME_PATTERN", "check_name", "is_int", "is_real",
           "as_int", "as_float", "as_str", "as_bool", "as_int_list", "as_table",
           "reject_unknown"]

#: the largest seed a generator accepts (torch and the Philox stream take signed 64-bit seeds)
MAX_SEED = 2**63 - 1

#: study names become folder names: letters, digits, ``-``, ``_`` and ``.`` (not leading)
NAME_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


class ConfigError(ValueError):
    """A study file or an override is invalid; the message is one line naming file and key."""


class Where:
    """Where a value comes from, for error messages: the file and the table."""

    def __init__(self, file: str, table: str):
        self.file, self.table = file, table

    def fail(self, key: str, message: str) -> ConfigError:
        table = f"[{self.table}] " if self.table else ""
        return ConfigError(" ".join(f"{self.file}: {table}{key} {message}".split()))


def check_name(name: object, what: str = "study name") -> str:
    """``name`` if it is a safe folder name (:data:`NAME_PATTERN`: no ``/``, no ``..``, no
    leading dot), else :class:`ConfigError` — a name must never place a run folder outside the
    runs folder (``../../escaped``)."""
    if not isinstance(name, str) or NAME_PATTERN.fullmatch(name) is None:
        raise ConfigError(f"{what} must be letters, digits, '-', '_' or '.' (not leading), "
                          f"got {name!r}")
    return name


def is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_real(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def as_int(w: Where, key: str, v: object, minimum: int = 0, maximum: int | None = None) -> int:
    if not is_int(v) or v < minimum or (maximum is not None and v > maximum):
        bound = f"in [{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
        raise w.fail(key, f"must be an integer {bound}, got {v!r}")
    return int(v)


def as_float(w: Where, key: str, v: object, *, positive: bool = False, signed: bool = False
             ) -> float:
    if not is_real(v):
        raise w.fail(key, f"must be a finite number, got {v!r}")
    v = float(v)
    if positive and v <= 0:
        raise w.fail(key, f"must be > 0, got {v!r}")
    if not signed and v < 0:
        raise w.fail(key, f"must be >= 0, got {v!r}")
    return v


def as_str(w: Where, key: str, v: object, choices: Sequence[str] | None = None) -> str:
    if not isinstance(v, str):
        raise w.fail(key, f"must be a string, got {v!r}")
    if choices is not None and v not in choices:
        raise w.fail(key, f"must be one of {', '.join(choices)}; got {v!r}")
    return v


def as_bool(w: Where, key: str, v: object) -> bool:
    if not isinstance(v, bool):
        raise w.fail(key, f"must be true or false, got {v!r}")
    return v


def as_int_list(w: Where, key: str, v: object, minimum: int = 0) -> tuple[int, ...]:
    if not isinstance(v, list) or not all(is_int(x) and x >= minimum for x in v):
        raise w.fail(key, f"must be a list of integers >= {minimum}, got {v!r}")
    return tuple(int(x) for x in v)


def as_table(w: Where, key: str, v: object) -> dict:
    if not isinstance(v, Mapping):
        raise w.fail(key, f"must be a table, got {v!r}")
    return dict(v)


def reject_unknown(w: Where, table: Mapping, allowed: Sequence[str]) -> None:
    for key in table:
        if key not in allowed:
            raise w.fail(
                repr(key), f"is not a known key (allowed: {', '.join(sorted(allowed))})"
            )
