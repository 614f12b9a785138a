"""``summary.json``: per method, the final-evaluation means over the seeds that did not
diverge, the diverged members, timings and the paper's numbers; and the one-line result of a
method the CLI prints."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from .config import MethodConfig, StudyConfig

__all__ = ["summarize", "method_line", "mean_std"]


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample std (ddof = 1) of the finite values; ``None`` if there are none."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return None, None
    std = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return statistics.fmean(finite), std


def summarize(study: StudyConfig, rows: Sequence[Sequence[Any]],
              timings: dict[str, dict[str, float]] | None = None,
              errors: dict[str, str] | None = None) -> dict[str, Any]:
    """The ``summary.json`` content: for every method the final-evaluation mean and sample
    standard deviation (ddof = 1) over the seeds that did not diverge of test/train accuracy
    and loss, ``n_diverged`` and ``diverged: [{seed, step}]`` (from the ``diverged`` metric
    rows), timings (``seconds``: training time without evaluations and checkpoints, summed
    over resumes; ``steps_per_second``: ensemble steps per second, all K members at once),
    the paper's numbers, and ``error`` for a method that could not be trained."""
    steps = study.training.steps
    errors = errors or {}
    by_method: dict[str, list[Sequence[Any]]] = {}
    for r in rows:
        by_method.setdefault(r[1], []).append(r)
    methods: dict[str, Any] = {}
    for m in study.methods:
        mine = by_method.get(m.name, [])
        diverged = sorted(({"seed": int(r[2]), "step": int(r[6])} for r in mine
                           if r[5] == "diverged"), key=lambda d: d["seed"])
        out = {d["seed"] for d in diverged}
        final = [r for r in mine if r[3] == steps and r[4] in ("train", "test")]
        seeds = sorted({int(r[2]) for r in final})
        if not final and m.name not in errors:
            continue
        entry: dict[str, Any] = {
            "optimizer": m.optimizer, "hyperparameters": m.hyperparameters, "sweep": m.sweep,
            "base": m.base, "n_seeds": len(seeds), "steps": steps,
            "n_diverged": len(diverged), "diverged": diverged,
        }
        for split in ("test", "train"):
            for metric in ("accuracy", "loss"):
                values = [float(r[6]) for r in final if r[4] == split and r[5] == metric
                          and int(r[2]) not in out]
                mean, std = mean_std(values)
                entry[f"{split}_{metric}_mean"] = mean
                entry[f"{split}_{metric}_std"] = std
        if m.name in errors:
            entry["error"] = errors[m.name]
        if timings and m.name in timings:
            entry.update(timings[m.name])
        paper = study.paper.get(m.name)
        if paper is not None:
            entry["paper"] = {"test_accuracy": paper.test_accuracy,
                              "test_accuracy_std": paper.test_accuracy_std,
                              "step": paper.step, "note": paper.note}
        methods[m.name] = entry
    return {"study": study.name, "description": study.description, "steps": steps,
            "seeds": study.training.seeds, "methods": methods}


def method_line(study: StudyConfig, method: MethodConfig, rows: Sequence[Sequence[Any]],
                diverged: Sequence[dict[str, int]], steps: int, rate: float) -> str:
    """``name: test accuracy mean ± std % (n seeds, d diverged, steps, steps/s)``."""
    out = {d["seed"] for d in diverged}
    final = [r[6] for r in rows if r[3] == study.training.steps and r[4] == "test"
             and r[5] == "accuracy" and r[2] not in out]
    mean, std = mean_std(final)
    text = "no finite result" if mean is None or std is None else \
        f"test accuracy {100 * mean:.1f} ± {100 * std:.1f} %"
    n = len(final) + len(out)
    extra = f", {len(out)} diverged" if out else ""
    return (f"{method.name}: {text} ({n} seeds{extra}, {steps} steps, "
            f"{rate:,.0f} steps/s)")
