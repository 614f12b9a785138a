"""Shared pieces of the thermodynamics studies (``ft-regression``, ``bayes-linreg``,
``ft-mnist``, ``temperatures``): spec validation, one-thread execution, run-folder I/O."""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..run_folder import ReportError
from . import _common
from ._common import COMMON, figure_dir, pyplot

__all__ = ["COMMON", "COUNT", "POSITIVE", "POSITIVES", "SEED", "Timer", "figure_dir", "fmt",
           "notes_section", "one_thread", "pyplot", "read_json", "validate", "write_report"]

POSITIVE = "positive number"
POSITIVES = "list of positive numbers"
COUNT = "integer >= 1"
SEED = "integer >= 0"

_CHECKS = {
    POSITIVE: (lambda v: _number(v) and v > 0, f"a {POSITIVE}"),
    POSITIVES: (lambda v: isinstance(v, list) and v and all(_number(x) and x > 0 for x in v),
                f"a {POSITIVES}"),
    COUNT: (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, f"a {COUNT}"),
    SEED: (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, f"a {SEED}"),
}


def validate(spec: Mapping[str, Any], schema: Mapping[str, Any], file: str,
             prefix: str = "") -> None:
    """Reject unknown keys, missing keys and ill-typed values, naming the file and key.
    Every key of ``schema`` except the :data:`COMMON` ones is required."""
    _common.validate(spec, schema, file, prefix, checks=_CHECKS, required=True)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def one_thread() -> contextlib.AbstractContextManager[None]:
    """Run a loop over small tensors on one torch thread (faster on a shared 2-core machine:
    no thread hand-offs per tiny op); restores the previous setting."""
    return _common.torch_threads(1)


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


def timed_stage(stages: Any, timer: Timer, phase: str, compute: Callable[[], Any],
                phases: tuple[str, ...] = ()) -> Any:
    """``compute()`` as the stage ``phase`` of ``stages`` (:class:`._stages.Stages`), timed as
    ``phase`` (or by ``compute`` itself, as ``phases``): the times are stored with the result
    and put back into ``timer`` when ``--resume`` reuses it."""
    def work() -> dict[str, Any]:
        if phases:
            result = compute()
        else:
            with timer.phase(phase):
                result = compute()
        return {"result": result, "seconds": {k: timer.seconds[k] for k in phases or (phase,)}}

    done = stages.run(phase, work)
    timer.seconds.update(done["seconds"])
    return done["result"]


def read_json(path: Path) -> Any:
    """Load a run-folder JSON file; a missing or corrupt one is a one-line ReportError."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ReportError(f"{path} is missing; run the study first (thermotrain run ...)"
                          ) from None
    except (OSError, ValueError) as exc:
        raise ReportError(f"{path} is unreadable ({exc}); re-run the study") from None


def write_report(out: Path, lines: list[str]) -> Path:
    """report.md without trailing blank lines."""
    return _common.write_report(out, ["\n".join(lines).rstrip()])


def fmt(x: Any, digits: int = 4) -> str:
    """A number in short scientific or fixed notation ("–" for None/NaN)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    x = float(x)
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
        return f"{x:.{digits}e}"
    return f"{x:.{digits}g}"


def notes_section(config: Mapping[str, Any]) -> list[str]:
    section = _common.notes_section(config.get("notes"))
    return section + [""] if section else []
