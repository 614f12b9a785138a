"""Shared pieces of the swap studies: spec validation, data, evaluation, run-folder I/O."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ....data import load_colorized_mnist, load_fashion_mnist, load_mnist, spirals
from ....models import ensemble_accuracy, ensemble_loss
from ....training import write_rows
from ...config import ConfigError
from ...run_folder import ReportError
from .. import RunContext, _common, prepare_folder, write_json
from .._stages import Stages

COMMON = {**_common.COMMON, "threads": int}
Number = (int, float)

_CHECKS = {
    Number: (lambda v: not isinstance(v, bool) and isinstance(v, Number), "a number"),
    int: (lambda v: not isinstance(v, bool) and isinstance(v, int), "an integer"),
}


def validate(spec: Mapping[str, Any], schema: Mapping[str, Any], where: str = "") -> None:
    """Reject unknown keys and values of the wrong type, naming the file and the key."""
    file = spec.get("_file", "<study>") if not where else where.split("|")[0]
    prefix = where.split("|")[1] if "|" in where else ""
    full = {**COMMON, **schema} if not where else schema
    _common.validate(spec, full, file, prefix, checks=_CHECKS)


def positive(spec: Mapping[str, Any], *keys: str) -> None:
    file = spec.get("_file", "<study>")
    for key in keys:
        node: Any = spec
        for part in key.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        values = node if isinstance(node, list) else [node]
        if node is not None and not all(isinstance(v, Number) and not isinstance(v, bool)
                                        and v > 0 for v in values):
            raise ConfigError(f"{file}: {key} must be > 0, got {node!r}")


@contextmanager
def threads(spec: Mapping[str, Any]) -> Iterator[None]:
    """Run with ``threads`` torch threads (default 1: on a shared machine one thread per
    process avoids OpenMP oversubscription: measured 7-17x faster per step than 2 threads
    on this 2-core machine at a load average of ~10)."""
    n = spec.get("threads", 1)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"{spec.get('_file', '<study>')}: threads must be an int >= 1, "
                          f"got {n!r}")
    with _common.torch_threads(n):
        yield


def study(check: Callable[[dict[str, Any]], None],
          body: Callable[[dict[str, Any], RunContext], dict[str, Any]]
          ) -> Callable[[dict[str, Any], RunContext], dict[str, Any]]:
    """A kind's ``run(spec, ctx)``: within :func:`threads`, ``check(spec)``, prepare the run
    folder, run ``body(spec, ctx)`` and write the summary it returns to summary.json."""

    def run(spec: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
        with threads(spec):
            check(spec)
            prepare_folder(spec, ctx)
            summary = body(spec, ctx)
            write_json(ctx.out / "summary.json", summary)
            return summary

    return run


# ---------------------------------------------------------------------- data
def load_images(kind: str, n_train: int, n_test: int, data_dir: str | None, seed: int = 0
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first ``n_train`` / ``n_test`` images of a data set (documented subsets)."""
    if kind == "colorized-mnist":
        xtr, ytr = load_colorized_mnist("train", data_dir, seed=seed, count=n_train)
        xte, yte = load_colorized_mnist("test", data_dir, seed=seed, count=n_test)
        return xtr, ytr, xte, yte
    loader: Callable = {"mnist": load_mnist, "fashion-mnist": load_fashion_mnist}[kind]
    xtr, ytr = loader("train", data_dir)
    xte, yte = loader("test", data_dir)
    return xtr[:n_train], ytr[:n_train], xte[:n_test], yte[:n_test]


def spiral_data(spec: Mapping[str, Any]) -> tuple[torch.Tensor, ...]:
    d = spec["data"]
    seed = int(d.get("seed", 1000))
    xtr, ytr = spirals(int(d["n_train"]), turns=d.get("turns", 4), seed=seed)
    xte, yte = spirals(int(d["n_test"]), turns=d.get("turns", 4), seed=seed + 10_000)
    return xtr, ytr, xte, yte


def evaluator(splits: Mapping[str, tuple[torch.Tensor, torch.Tensor]]
              ) -> Callable[[torch.nn.Module], dict[str, dict[str, torch.Tensor]]]:
    """``evaluate(model)`` for :func:`thermotrain.training.train`: per-member loss and
    accuracy on fixed sets."""

    def evaluate(model: torch.nn.Module) -> dict[str, dict[str, torch.Tensor]]:
        out = {}
        for split, (x, y) in splits.items():
            logits = model(x)
            out[split] = {"loss": ensemble_loss(logits, y),
                          "accuracy": ensemble_accuracy(logits, y)}
        return out

    return evaluate


# ---------------------------------------------------------------------- run folder
class Cells:
    """Per-cell results in ``out/cells/NAME.json``: the shared stage store
    (:class:`.._stages.Stages`, atomic writes, corrupt or foreign files recomputed with a
    warning) under the swap studies' folder name; a resumed study skips the cells already
    done."""

    def __init__(self, out: Path, resume: bool):
        self.stages = Stages(out, resume, folder="cells", legacy=True)
        self.dir = self.stages.dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.resume = resume

    def get(self, name: str) -> dict[str, Any] | None:
        done, result = self.stages.get(name)
        return result if done else None

    def put(self, name: str, result: dict[str, Any]) -> dict[str, Any]:
        self.stages.put(name, result)
        return result

    def run(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        def timed() -> dict[str, Any]:
            start = time.perf_counter()
            result = fn()
            result["seconds"] = time.perf_counter() - start
            return result

        return self.stages.run(name, timed, as_stored=False)


def rows_of(state: Any) -> list[list[Any]]:
    return [list(r) for r in state.rows]


def write_metrics(out: Path, rows: list[list[Any]]) -> None:
    write_rows([tuple(r) for r in rows], out / "metrics.csv")


def read_summary(out: Path) -> dict[str, Any]:
    path = Path(out) / "summary.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ReportError(f"{path} is missing: run the study first") from None
    except ValueError as exc:
        raise ReportError(f"{path} is corrupt ({exc})") from None


def read_metrics(out: Path):
    import pandas as pd

    path = Path(out) / "metrics.csv"
    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        raise ReportError(f"{path} is missing: run the study first") from None
    except (ValueError, pd.errors.ParserError) as exc:
        raise ReportError(f"{path} is corrupt ({exc})") from None


def figure_path(out: Path, name: str) -> Path:
    return _common.figure_dir(out) / name


def save_figure(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)


def write_report(out: Path, title: str, summary: Mapping[str, Any], body: list[str]) -> Path:
    lines = [f"# {title}", "", summary.get("description", ""), ""]
    paper = summary.get("paper") or {}
    if paper:
        lines += ["## The claim and ours", "", "| | |", "|---|---|"]
        lines += [f"| paper: {k} | {v} |" for k, v in paper.items()]
        lines += [f"| ours | {summary.get('verdict', '')} |", ""]
    lines += body
    if summary.get("notes"):
        lines += [""] + _common.notes_section(summary["notes"])
    lines += ["", f"Run time: {summary.get('seconds', float('nan')):.0f} s."]
    return _common.write_report(out, lines)


def mean_se(values: Any) -> tuple[float, float]:
    """Mean and standard error over independent seeds (NaN-free entries)."""
    v = [float(x) for x in values if x is not None and not math.isnan(float(x))]
    if not v:
        return float("nan"), float("nan")
    m = sum(v) / len(v)
    if len(v) < 2:
        return m, float("nan")
    var = sum((x - m) ** 2 for x in v) / (len(v) - 1)
    return m, math.sqrt(var / len(v))


plt = _common.pyplot
