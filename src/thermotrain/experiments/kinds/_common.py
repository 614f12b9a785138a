"""Pieces shared by every experiment kind (thermo, landscape, swaps): the TOML schema walker,
the top-level keys every study may carry, torch thread limiting, matplotlib on Agg, the
figures/ folder, the notes section and report.md."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from ..config import ConfigError
from ..run_folder import atomic_write_text

#: top-level keys any study TOML may carry besides its own schema
COMMON = {"experiment": str, "name": str, "description": str, "source": str, "notes": list,
          "paper": dict, "_file": str}

#: a schema marker -> (accepts(value), what the error message says the value "must be")
Checks = Mapping[Any, tuple[Callable[[Any], bool], str]]


def validate(spec: Mapping[str, Any], schema: Mapping[str, Any], file: str, prefix: str = "",
             *, checks: Checks, required: bool = False) -> None:
    """Reject unknown keys and ill-typed values with a message naming ``file`` and the key.

    A schema value is a nested schema (a table), a marker of ``checks``, a tuple of allowed
    values, or a type (``bool`` is not accepted for a non-bool type). With ``required``,
    every key of a schema except the :data:`COMMON` ones must be present."""
    for key, value in spec.items():
        name = f"{prefix}{key}"
        if key not in schema:
            allowed = ", ".join(sorted(k for k in schema if not k.startswith("_")))
            raise ConfigError(f"{file}: unknown key {name!r} (allowed: {allowed})")
        want = schema[key]
        if isinstance(want, dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{file}: {name} must be a table, got {value!r}")
            validate(value, want, file, f"{name}.", checks=checks, required=required)
            continue
        check = _lookup(checks, want)
        if check is not None:
            ok, what = check
            if not ok(value):
                raise ConfigError(f"{file}: {name} must be {what}, got {value!r}")
        elif isinstance(want, tuple):
            if value not in want:
                raise ConfigError(f"{file}: {name} must be one of "
                                  f"{', '.join(map(str, want))}, got {value!r}")
        elif not isinstance(value, want) or isinstance(value, bool) and want is not bool:
            raise ConfigError(f"{file}: {name} must be {want.__name__}, got {value!r}")
    if required:
        for key in schema:
            if key not in spec and key not in COMMON:
                raise ConfigError(f"{file}: missing key {prefix}{key!r}")


def _lookup(checks: Checks, want: Any) -> tuple[Callable[[Any], bool], str] | None:
    # a marker string by equality; anything else by identity (the marker tuple (int, float)
    # must not match an equal tuple of allowed values)
    for marker, check in checks.items():
        if marker is want or isinstance(want, str) and marker == want:
            return check
    return None


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch threads; restores the previous setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_dir(out: Path) -> Path:
    """``out/figures``, created if missing."""
    d = Path(out) / "figures"
    d.mkdir(parents=True, exist_ok=True)
    return d


def notes_section(notes: list[Any] | None) -> list[str]:
    """``## Notes`` and one bullet per note (whitespace collapsed); [] without notes."""
    if not notes:
        return []
    return ["## Notes", ""] + [f"- {' '.join(str(n).split())}" for n in notes]


def write_report(out: Path, lines: list[str]) -> Path:
    """``out/report.md``: the lines, newline-terminated, written atomically."""
    path = Path(out) / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
