r"""Run a study: every method trains its K seeds as **one** vectorised ensemble.

For each method of a :class:`~.config.StudyConfig` the runner builds a K-member ensemble
network (member k initialised with its run seed), the method's optimizer over the stacked
parameters (samplers with ``ensemble_dim=0`` and per-member noise seeds; SGD/Adam act
elementwise), and a :class:`~thermotrain.data.Minibatcher` with per-member batch seeds. Member
k therefore reproduces the single run with seed :math:`s_k` (tested). The hot loop is one
gather, one forward/backward of the summed per-member losses and one ``step()``: no Python
work proportional to K, no host synchronisation between evaluations.

A run folder holds::

    config.json                  the resolved study (what was run)
    metrics.csv                  study, method, seed, step, split, loss, accuracy (fractions)
    summary.json                 final test accuracy mean/std per method, timings, paper numbers
    methods/<method>/checkpoint.pt   model + optimizer + minibatcher state + metrics so far
    methods/<method>/snapshots.pt    parameters at the snapshot steps (for the report)
    data.json                    the resolved data root (image data sets only; the report
                                 reloads the data from it for the Fig. 3 line)

Checkpoints are written every ``training.checkpoint_every`` steps, at the end, and when the
run is interrupted (Ctrl-C is deferred to the end of the current step), always atomically
(temporary file + :func:`os.replace`). ``resume=True`` continues each method from its
checkpoint and reproduces the uninterrupted run bit for bit.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import json
import math
import os
import signal
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..data import Minibatcher
from ..models import StackableModel, ensemble_accuracy, ensemble_loss
from ..models import fused as fused_mlp
from .builders import Dataset, build_model, build_optimizer, load_data
from .config import MethodConfig, StudyConfig, slug, stream_seeds
from .run_folder import atomic_save, atomic_write_text

__all__ = [
    "RunError",
    "METRIC_COLUMNS",
    "run_study",
    "train_method",
    "evaluate",
    "summarize",
    "write_metrics",
    "read_metrics",
    "atomic_save",
    "check_folder",
    "finish_run",
    "record_data_dir",
]

#: columns of ``metrics.csv``
METRIC_COLUMNS = ("study", "method", "seed", "step", "split", "loss", "accuracy")

Callback = Callable[[str, int], None]


class RunError(RuntimeError):
    """A run cannot start or continue (e.g. the folder holds another study); one line."""


# --------------------------------------------------------------------------- files
def write_metrics(rows: Sequence[Sequence[Any]], path: Path) -> None:
    """Write metric rows (:data:`METRIC_COLUMNS`) as CSV, atomically."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(METRIC_COLUMNS)
        writer.writerows(rows)
    os.replace(tmp, path)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Read ``metrics.csv`` into dicts with typed values."""
    out = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            out.append({"study": r["study"], "method": r["method"], "seed": int(r["seed"]),
                        "step": int(r["step"]), "split": r["split"], "loss": float(r["loss"]),
                        "accuracy": float(r["accuracy"])})
    return out


# --------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(model: StackableModel, x: Tensor, y: Tensor, chunk: int = 10_000
             ) -> tuple[Tensor, Tensor]:
    """Per-member mean loss and accuracy on a whole data set: two ``(K,)`` tensors.

    The set is processed in chunks of ``chunk`` points (memory stays bounded on MNIST)."""
    n = x.shape[0]
    loss_sum: Tensor | None = None
    correct: Tensor | None = None
    for start in range(0, n, chunk):
        xb, yb = x[start : start + chunk], y[start : start + chunk]
        logits = model(xb)
        ls = ensemble_loss(logits, yb, reduction="sum")
        acc = ensemble_accuracy(logits, yb) * xb.shape[0]
        loss_sum = ls if loss_sum is None else loss_sum + ls
        correct = acc if correct is None else correct + acc
    assert loss_sum is not None and correct is not None
    return loss_sum / n, correct / n


# --------------------------------------------------------------------------- progress
class _Progress:
    """A rich progress bar with ETA over all methods (a no-op when disabled)."""

    def __init__(self, enabled: bool, total: int):
        self._bar = None
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                TimeRemainingColumn(), console=Console(stderr=True),
            )
            self._task = self._bar.add_task("", total=total, rate="")

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def update(self, advance: int, description: str, rate: float | None = None) -> None:
        if self._bar is not None:
            text = "" if rate is None else f"{rate:,.0f} steps/s"
            self._bar.update(self._task, advance=advance, description=description, rate=text)


@contextlib.contextmanager
def _frozen_gc() -> Iterator[None]:
    """Exempt the objects alive now (all of torch, pandas, matplotlib …) from the cyclic
    garbage collector during the hot loop: otherwise every full collection walks them all,
    ~10 % of a small-ensemble step."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextlib.contextmanager
def _deferred_interrupt() -> Iterator[list[bool]]:
    """Turn SIGINT into a flag checked between steps (so the state saved is consistent)."""
    flag = [False]
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: object) -> None:
        if flag[0]:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        flag[0] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


# --------------------------------------------------------------------------- training
@dataclass
class MethodOutcome:
    """What :func:`train_method` returns: metric rows and timings."""

    rows: list[tuple]
    seconds: float
    steps: int
    resumed_from: int


def _fingerprint(study: StudyConfig, method: MethodConfig, seeds: Sequence[int]) -> str:
    d = study.to_dict()
    keep = {k: d[k] for k in ("data", "model", "training")}
    keep["training"] = {k: v for k, v in keep["training"].items()
                        if k not in ("checkpoint_every", "seeds")}
    for key, default in (("snapshot_average", 1), ("rng", "torch")):
        if keep["training"].get(key) == default:  # defaults: as before the options existed
            del keep["training"][key]
    keep["method"] = {"optimizer": method.optimizer, "hyperparameters": method.hyperparameters,
                      "init": method.init, "init_std": method.init_std}
    keep["seeds"] = list(seeds)
    return json.dumps(keep, sort_keys=True)


def _members(model: StackableModel, saved: int) -> dict[str, Tensor]:
    return {name: p.detach()[:saved].clone() for name, p in model.named_parameters()}


def _snapshot(model: StackableModel, step: int, saved: int) -> dict[str, Any]:
    first = model.layer_modules()[0]
    return {
        "step": step,
        "first_weight": first.weight.detach().clone(),
        "first_bias": first.bias.detach().clone(),
        "members": _members(model, saved),
    }


def _window_steps(snap_steps: Sequence[int], width: int) -> set[int]:
    """The steps whose parameters the averaged classifiers need (``snapshot_average``)."""
    if width <= 1:
        return set()
    return {t for s in snap_steps for t in range(max(0, s - width + 1), s + 1)}


def _attach_window(snap: dict[str, Any], window: list, width: int,
                   later: Sequence[int]) -> list:
    """Add the last ``width`` parameter states (ending at the snapshot's step) to ``snap``
    as ``snap["window"] = {"steps": [...], "members": {name: (W, saved, ...)}}``; return
    the states still needed by the ``later`` snapshot steps."""
    s = snap["step"]
    states = [(t, m) for t, m in window if s - width < t <= s]
    snap["window"] = {"steps": [t for t, _ in states],
                      "members": {k: torch.stack([m[k] for _, m in states])
                                  for k in states[0][1]}}
    return [(t, m) for t, m in window if any(t > s2 - width for s2 in later)]


def train_method(
    study: StudyConfig,
    method: MethodConfig,
    data: Dataset,
    folder: Path,
    *,
    seeds: Sequence[int] | None = None,
    resume: bool = False,
    callback: Callback | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> MethodOutcome:
    """Train the K = ``len(seeds)`` runs of one method as one ensemble; write its checkpoint
    and snapshots into ``folder``.

    Args:
        study, method: what to train (``seeds`` default: the study's run seeds).
        data: the data set (from :func:`~.builders.load_data`).
        folder: the method's folder (``checkpoint.pt``, ``snapshots.pt``).
        resume: continue from ``folder/checkpoint.pt`` if it exists (a finished method is
            returned as is).
        callback: ``callback(method_name, step)`` after every step (tests use it to
            interrupt a run; raising :class:`KeyboardInterrupt` saves a checkpoint first).
        progress: ``progress(steps_done_since_last_call, steps_per_second)``.

    Returns:
        The metric rows ``(study, method, seed, step, split, loss, accuracy)`` and timings.
    """
    t = study.training
    seeds = list(t.run_seeds if seeds is None else seeds)
    folder.mkdir(parents=True, exist_ok=True)
    ckpt_path = folder / "checkpoint.pt"
    fingerprint = _fingerprint(study, method, seeds)

    model = build_model(study, method, data, seeds)
    opt = build_optimizer(method, model, seeds, t.rng)
    batcher = Minibatcher(data.x_train.shape[0], t.batch_size, replacement=t.replacement,
                          seeds=stream_seeds(seeds, "batches"))
    rows: list[tuple] = []
    snapshots: list[dict] = []
    window: list = []  # (step, members) states for the averaged classifiers
    start, elapsed = 0, 0.0

    if resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=True)
        if ckpt["fingerprint"] != fingerprint:
            raise RunError(f"{ckpt_path} was written for a different configuration of "
                           f"{method.name!r}; start a new run folder")
        rows = [tuple(r) for r in ckpt["rows"]]
        snapshots = ckpt["snapshots"]
        window = [(int(t), m) for t, m in ckpt.get("window", [])]
        start, elapsed = int(ckpt["step"]), float(ckpt["seconds"])
        if ckpt["done"]:
            if progress is not None:
                progress(t.steps, 0.0)
            return MethodOutcome(rows, elapsed, t.steps, start)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        batcher.load_state_dict(ckpt["batcher"])
        if progress is not None:
            progress(start, 0.0)
    resumed_from = start

    eval_steps = set(t.eval_steps())
    snap_steps = set(t.snapshot_steps())
    saved = min(t.saved_members, len(seeds))
    width = t.snapshot_average if saved else 1
    window_steps = _window_steps(sorted(snap_steps), width)
    x, y = data.x_train, data.y_train

    def record(step: int) -> None:
        nonlocal window
        if step in window_steps:
            window.append((step, _members(model, saved)))
        if step in eval_steps:
            was = model.training
            model.eval()
            for split, xs, ys in (("train", x, y), ("test", data.x_test, data.y_test)):
                loss, acc = evaluate(model, xs, ys, t.eval_batch)
                for s, lv, av in zip(seeds, loss.tolist(), acc.tolist(), strict=True):
                    rows.append((study.name, method.name, s, step, split, lv, av))
            model.train(was)
        if step in snap_steps:
            snapshots.append(_snapshot(model, step, saved))
            if window_steps:
                window = _attach_window(snapshots[-1], window, width,
                                        [s for s in snap_steps if s > step])

    def save(step: int, done: bool) -> None:
        atomic_save({
            "fingerprint": fingerprint, "step": step, "done": done, "seconds": elapsed,
            "model": model.state_dict(), "optimizer": opt.state_dict(),
            "batcher": batcher.state_dict(), "rows": rows, "snapshots": snapshots,
            **({"window": [[t, m] for t, m in window]} if window_steps else {}),
        }, ckpt_path)

    if start == 0:
        record(0)
    gradient = fused_mlp.gradient_fn(model, x, y)  # one C call where it applies
    ckpt_every = t.checkpoint_every
    report_every = max(1, min(500, t.steps // 100 or 1))
    step = start
    tick = time.perf_counter()
    last_report = step
    with _deferred_interrupt() as interrupted, _frozen_gc():
        try:
            while step < t.steps:
                gradient(batcher.next())
                opt.step()
                step += 1
                if step in eval_steps or step in snap_steps or step in window_steps:
                    now = time.perf_counter()
                    elapsed += now - tick
                    record(step)
                    tick = time.perf_counter()
                if ckpt_every and step % ckpt_every == 0 and step < t.steps:
                    now = time.perf_counter()
                    elapsed += now - tick
                    save(step, False)
                    tick = time.perf_counter()
                if progress is not None and step % report_every == 0:
                    now = time.perf_counter()
                    progress(step - last_report, (step - resumed_from) /
                             max(elapsed + now - tick, 1e-9))
                    last_report = step
                if callback is not None:
                    callback(method.name, step)
                if interrupted[0]:
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            elapsed += time.perf_counter() - tick
            save(step, False)
            raise
    elapsed += time.perf_counter() - tick
    save(step, True)
    atomic_save({"method": method.name, "seeds": seeds, "snapshots": snapshots},
                folder / "snapshots.pt")
    if progress is not None and step != last_report:
        progress(step - last_report, (step - resumed_from) / max(elapsed, 1e-9))
    return MethodOutcome(rows, elapsed, t.steps, resumed_from)


# --------------------------------------------------------------------------- summary
def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def summarize(study: StudyConfig, rows: Sequence[Sequence[Any]],
              timings: dict[str, dict[str, float]] | None = None) -> dict[str, Any]:
    """The ``summary.json`` content: for every method the final-evaluation mean and sample
    standard deviation (ddof = 1) over seeds of test/train accuracy and loss, plus timings
    (``seconds``: training time without evaluations and checkpoints, summed over resumes;
    ``steps_per_second``: ensemble steps per second, all K members at once) and the paper's
    numbers."""
    steps = study.training.steps
    methods: dict[str, Any] = {}
    for m in study.methods:
        final = {split: [r for r in rows if r[1] == m.name and r[3] == steps and r[4] == split]
                 for split in ("train", "test")}
        if not final["test"]:
            continue
        entry: dict[str, Any] = {
            "optimizer": m.optimizer,
            "hyperparameters": m.hyperparameters,
            "sweep": m.sweep,
            "base": m.base,
            "n_seeds": len(final["test"]),
            "steps": steps,
        }
        for split in ("test", "train"):
            acc_m, acc_s = _mean_std([r[6] for r in final[split]])
            loss_m, loss_s = _mean_std([r[5] for r in final[split]])
            entry[f"{split}_accuracy_mean"] = acc_m
            entry[f"{split}_accuracy_std"] = acc_s
            entry[f"{split}_loss_mean"] = loss_m if math.isfinite(loss_m) else None
            entry[f"{split}_loss_std"] = loss_s if math.isfinite(loss_s) else None
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


# --------------------------------------------------------------------------- the study
def check_folder(out: Path, study: StudyConfig, resume: bool) -> None:
    """Create the run folder and write ``config.json``; refuse a folder holding another run
    (or any run, unless ``resume``)."""
    config_path = out / "config.json"
    resolved = study.to_dict()
    resolved.pop("path", None)
    if config_path.exists():
        if not resume:
            raise RunError(f"{out} already holds a run; pass --resume to continue it or choose "
                           "another --out")
        try:
            previous = json.loads(config_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise RunError(f"{config_path} is unreadable ({exc}); start a new run folder") \
                from None
        previous.pop("path", None)
        # notes are commentary, not part of what was run: editing them keeps --resume working
        previous.pop("notes", None)
        if isinstance(previous.get("training"), dict):  # written before snapshot_average
            previous["training"].setdefault("snapshot_average", 1)
        compared = {k: v for k, v in resolved.items() if k != "notes"}
        if previous != compared:
            changed = sorted(k for k in compared if previous.get(k) != compared[k])
            raise RunError(f"{out} was run with a different configuration (differs in: "
                           f"{', '.join(changed)}); use the same options or another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(config_path, json.dumps(resolved, indent=2) + "\n")


def run_study(
    study: StudyConfig,
    out: str | os.PathLike[str],
    *,
    resume: bool = False,
    data_dir: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    callback: Callback | None = None,
    threads: int | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train every method of ``study`` into the run folder ``out``; return the summary.

    Args:
        study: the validated study.
        out: run folder (created; must not hold another run unless ``resume``).
        resume: continue an interrupted run (bit-identical to an uninterrupted one).
        data_dir: data root for MNIST-like sets.
        progress: show a progress bar (default: when stderr is a terminal).
        callback: ``callback(method_name, step)`` after every step.
        threads: ``torch.set_num_threads`` during the run (``None``, the default, keeps
            torch's setting: all cores; the fused kernels use them even for small networks).
        log: where to print one line per finished method (default: nowhere).

    Raises:
        RunError: the folder holds a different run, or a checkpoint does not match.
    """
    out = Path(out)
    check_folder(out, study, resume)
    data = load_data(study.data, data_dir)
    if not study.data.binary:
        record_data_dir(out, data_dir)
    if progress is None:
        progress = os.isatty(2) and "PYTEST_CURRENT_TEST" not in os.environ
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    rows: list[tuple] = []
    timings: dict[str, dict[str, float]] = {}
    total = study.training.steps * len(study.methods)
    try:
        with _Progress(bool(progress), total) as bar:
            for method in study.methods:
                label = f"{study.name}: {method.name}"

                def report(n: int, rate: float, label: str = label) -> None:
                    bar.update(n, label, rate or None)

                outcome = train_method(study, method, data, out / "methods" / slug(method.name),
                                       resume=resume, callback=callback, progress=report)
                rows.extend(outcome.rows)
                rate = outcome.steps / outcome.seconds if outcome.seconds > 0 else float("nan")
                timings[method.name] = {"seconds": outcome.seconds, "steps_per_second": rate}
                if log is not None:
                    final = [r[6] for r in outcome.rows
                             if r[3] == study.training.steps and r[4] == "test"]
                    mean, std = _mean_std(final)
                    log(f"{method.name}: test accuracy {100 * mean:.1f} ± {100 * std:.1f} % "
                        f"({len(final)} seeds, {outcome.steps} steps, {rate:,.0f} steps/s)")
    finally:
        if threads is not None:
            torch.set_num_threads(previous_threads)
    return finish_run(study, out, rows, timings)


def record_data_dir(out: Path, data_dir: str | os.PathLike[str] | None) -> None:
    """Write ``data.json`` (the resolved data root) so that the report can reload image
    data sets (the Fig. 3 line) without ``--data-dir``."""
    from ..data import resolve_data_dir

    atomic_write_text(out / "data.json",
                      json.dumps({"data_dir": str(resolve_data_dir(data_dir).resolve())}) + "\n")


def finish_run(study: StudyConfig, out: Path, rows: Sequence[Sequence[Any]],
               timings: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Write ``metrics.csv`` and ``summary.json`` of a finished run; return the summary."""
    write_metrics(rows, out / "metrics.csv")
    summary = summarize(study, rows, timings)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
