"""Shared pieces of the thermodynamics studies (``ft-regression``, ``bayes-linreg``,
``ft-mnist``, ``temperatures``): spec validation, one-thread execution, run-folder I/O."""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from ..config import ConfigError
from ..run_folder import ReportError, atomic_write_text

COMMON = {"experiment": str, "name": str, "description": str, "source": str, "notes": list,
          "paper": dict, "_file": str}
POSITIVE = "positive number"
POSITIVES = "list of positive numbers"
COUNT = "integer >= 1"
SEED = "integer >= 0"


def validate(spec: Mapping[str, Any], schema: Mapping[str, Any], file: str,
             prefix: str = "") -> None:
    """Reject unknown keys, missing keys and ill-typed values, naming the file and key.
    Every key of ``schema`` except the :data:`COMMON` ones is required."""
    for key, value in spec.items():
        name = f"{prefix}{key}"
        if key not in schema:
            allowed = ", ".join(sorted(k for k in schema if not k.startswith("_")))
            raise ConfigError(f"{file}: unknown key {name!r} (allowed: {allowed})")
        want = schema[key]
        if isinstance(want, dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{file}: {name} must be a table, got {value!r}")
            validate(value, want, file, f"{name}.")
            continue
        ok = {
            POSITIVE: lambda v: _number(v) and v > 0,
            POSITIVES: lambda v: isinstance(v, list) and v and all(_number(x) and x > 0
                                                                    for x in v),
            COUNT: lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
            SEED: lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        }.get(want) if isinstance(want, str) else None
        if ok is not None:
            if not ok(value):
                raise ConfigError(f"{file}: {name} must be a {want}, got {value!r}")
        elif isinstance(want, tuple):
            if value not in want:
                raise ConfigError(f"{file}: {name} must be one of "
                                  f"{', '.join(map(str, want))}, got {value!r}")
        elif not isinstance(value, want) or isinstance(value, bool) and want is not bool:
            raise ConfigError(f"{file}: {name} must be {want.__name__}, got {value!r}")
    for key in schema:
        if key not in spec and key not in COMMON:
            raise ConfigError(f"{file}: missing key {prefix}{key!r}")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run a loop over small tensors on one torch thread (faster on a shared 2-core machine:
    no thread hand-offs per tiny op); restores the previous setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Timer:
    """Wall-clock seconds per named phase, for summary.json."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - t, 3)


def read_json(path: Path) -> Any:
    """Load a run-folder JSON file; a missing or corrupt one is a one-line ReportError."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ReportError(f"{path} is missing; run the study first (thermotrain run ...)"
                          ) from None
    except (OSError, ValueError) as exc:
        raise ReportError(f"{path} is unreadable ({exc}); re-run the study") from None


def figure_dir(out: Path) -> Path:
    d = Path(out) / "figures"
    d.mkdir(parents=True, exist_ok=True)
    return d


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def write_report(out: Path, lines: list[str]) -> Path:
    path = Path(out) / "report.md"
    atomic_write_text(path, "\n".join(lines).rstrip() + "\n")
    return path


def fmt(x: Any, digits: int = 4) -> str:
    """A number in short scientific or fixed notation ("–" for None/NaN)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    x = float(x)
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
        return f"{x:.{digits}e}"
    return f"{x:.{digits}g}"


def notes_section(config: Mapping[str, Any]) -> list[str]:
    notes = config.get("notes") or []
    if not notes:
        return []
    return ["## Notes", ""] + [f"- {' '.join(str(n).split())}" for n in notes] + [""]
