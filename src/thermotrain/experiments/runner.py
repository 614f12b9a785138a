r"""Run a study: every method trains its K seeds as **one** vectorised ensemble, through the
library's training loop (:func:`thermotrain.training.train`).

For each method of a :class:`~.config.StudyConfig` the runner builds a K-member ensemble
network (member k initialised with its run seed), the method's optimizer over the stacked
parameters (samplers with ``ensemble_dim=0`` and per-member noise seeds; SGD/Adam act
elementwise), and a :class:`~thermotrain.data.Minibatcher` with per-member batch seeds. Member
k therefore reproduces the single run with seed :math:`s_k` (tested). The hot loop is one
gather, one forward/backward (or one fused C call) and one ``step()``: no Python work
proportional to K, no host synchronisation between evaluations but the divergence check of
the per-member losses.

The loop's hooks here: :class:`~thermotrain.training.DivergenceGuard` (a member whose loss or
parameters go non-finite is marked, frozen and left out of the means: ``summary.json``
``n_diverged`` and ``diverged: [{seed, step}]``; the other members and methods carry on),
:class:`~thermotrain.training.snapshots.Snapshots` (parameters for the report) and, with
``loggers=("tensorboard",)``, a :class:`~thermotrain.training.TensorBoardLogger` writing
``RUN/tensorboard/<method>/seed-<s>``. The run folder (:mod:`.run_folder`, docs/runs.md)
holds ``config.json``, the long-format ``metrics.csv`` (``study, method, seed, step, split,
metric, value``), ``summary.json`` and per method ``checkpoint.pt`` and ``snapshots.pt``.

Checkpoints are written every ``training.checkpoint_every`` steps, at the end, and on
SIGINT/SIGTERM (deferred to the end of the current step), always atomically; a second signal
stops at once and keeps the last complete checkpoint. ``resume=True`` continues each method
from its checkpoint and reproduces the uninterrupted run bit for bit.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data import Minibatcher
from ..training import DivergenceGuard, TensorBoardLogger, train
from ..training.progress import ProgressBar
from ..training.snapshots import Snapshots, evaluate
from .builders import Dataset, build_model, build_optimizer, evaluator, load_data, sweep_packs
from .config import MethodConfig, StudyConfig, slug, stream_seeds
from .packed import train_pack
from .run_folder import (
    METRIC_COLUMNS,
    MethodFolder,
    RunError,
    RunFolder,
    atomic_save,
    atomic_write_text,
    metrics_frame,
    read_metrics_file,
)
from .summary import method_line, summarize

__all__ = [
    "RunError",
    "METRIC_COLUMNS",
    "LOGGERS",
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

#: loggers of ``run_study(loggers=...)``: the CSV table is always written
LOGGERS = ("csv", "tensorboard")

Callback = Callable[[str, int], None]


# --------------------------------------------------------------------------- files
def write_metrics(rows: Sequence[Sequence[Any]], path: Path) -> None:
    """Write metric rows (long :data:`METRIC_COLUMNS`) as CSV, atomically."""
    text = metrics_frame(rows).to_csv(index=False, lineterminator="\n", na_rep="nan")
    atomic_write_text(Path(path), text)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """``metrics.csv`` as one dict per (study, method, seed, step, split) with the values of
    its metrics as keys (``loss``, ``accuracy``, …): the wide view of the long table."""
    frame = read_metrics_file(Path(path))
    out: dict[tuple, dict[str, Any]] = {}
    for r in frame.itertuples(index=False):
        key = (r.study, r.method, int(r.seed), int(r.step), r.split)
        entry = out.setdefault(key, dict(zip(METRIC_COLUMNS[:5], key, strict=True)))
        entry[r.metric] = float(r.value)
    return list(out.values())


# --------------------------------------------------------------------------- training
@dataclass
class MethodOutcome:
    """What :func:`train_method` returns: metric rows (long format), timings, and the
    members that diverged (``[{seed, step}]``)."""

    rows: list[tuple]
    seconds: float
    steps: int
    resumed_from: int
    diverged: list[dict[str, int]] = field(default_factory=list)


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


def _resume_state(ckpt: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint of the loop; ones written before it (top-level ``snapshots`` and
    ``window``, no hook states) get their snapshot state moved under ``hooks``."""
    if "hooks" not in ckpt:
        ckpt = dict(ckpt)
        ckpt["hooks"] = {"snapshots": {"snapshots": ckpt.get("snapshots", []),
                                       "window": ckpt.get("window", [])}}
    return ckpt


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
    tensorboard: Path | None = None,
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
        tensorboard: write TensorBoard events of the metrics under this folder.

    Returns:
        The metric rows ``(study, method, seed, step, split, metric, value)``, timings and
        the diverged members.

    Raises:
        RunError: the checkpoint was written for another configuration.
    """
    t = study.training
    seeds = list(t.run_seeds if seeds is None else seeds)
    files = MethodFolder(folder)
    fingerprint = _fingerprint(study, method, seeds)
    ckpt = files.load_checkpoint() if resume else None
    if ckpt is not None:
        if ckpt.get("fingerprint") != fingerprint:
            raise RunError(f"{files.checkpoint_path} was written for a different "
                           f"configuration of {method.name!r}; start a new run folder")
        if ckpt["done"]:
            if progress is not None:
                progress(t.steps, 0.0)
            return MethodOutcome([tuple(r) for r in ckpt["rows"]], float(ckpt["seconds"]),
                                 t.steps, int(ckpt["step"]), list(ckpt.get("diverged", [])))
        ckpt = _resume_state(ckpt)
        if progress is not None:
            progress(int(ckpt["step"]), 0.0)
    resumed_from = int(ckpt["step"]) if ckpt is not None else 0

    model = build_model(study, method, data, seeds)
    opt = build_optimizer(method, model, seeds, t.rng, nan_policy="ignore")  # the guard's job
    batcher = Minibatcher(data.x_train.shape[0], t.batch_size, replacement=t.replacement,
                          seeds=stream_seeds(seeds, "batches"))
    saved = min(t.saved_members, len(seeds))
    guard = DivergenceGuard()
    snaps = Snapshots(t.snapshot_steps(), keep=range(saved), window=t.snapshot_average)
    hooks: list[Any] = [guard, snaps]
    if tensorboard is not None:
        hooks.append(TensorBoardLogger(tensorboard))

    def extra() -> dict[str, Any]:  # kept at the top level: read by the report and ray
        return {"fingerprint": fingerprint, "snapshots": snaps.snapshots,
                "diverged": guard.report(seeds),
                **({"window": snaps.window} if t.snapshot_average > 1 and saved else {})}

    state = train(
        model, opt, batcher, steps=t.steps, x_train=data.x_train, y_train=data.y_train,
        hooks=hooks, seeds=seeds, evaluate=evaluator(data, t.eval_batch),
        eval_steps=t.eval_steps(), checkpoint=files.save_checkpoint,
        checkpoint_every=t.checkpoint_every, resume_from=ckpt, extra_state=extra,
        study=study.name, method=method.name, progress=progress,
        callback=None if callback is None else (lambda step: callback(method.name, step)),
    )
    files.save_snapshots(snaps.snapshots, seeds=seeds, model=model, method=method.name)
    return MethodOutcome(state.rows, state.seconds, t.steps, resumed_from,
                         guard.report(seeds))


# --------------------------------------------------------------------------- the study
def check_folder(out: Path, study: StudyConfig, resume: bool) -> None:
    """Create the run folder and write ``config.json``; refuse a folder holding another run
    (or any run, unless ``resume``)."""
    folder = RunFolder(out).create()
    config_path = folder.config_path
    resolved = study.to_dict()
    resolved.pop("path", None)
    if config_path.exists():
        if not resume:
            raise RunError(f"{out} already holds a run; pass --resume to continue it or choose "
                           "another --out")
        previous = folder.read_config()
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
    folder.write_config(resolved)


def _check_loggers(loggers: Sequence[str]) -> tuple[str, ...]:
    if isinstance(loggers, str):
        loggers = (loggers,)
    bad = [x for x in loggers if x not in LOGGERS]
    if bad:
        raise ValueError(f"loggers must be among {', '.join(LOGGERS)}; got {bad[0]!r}")
    if "tensorboard" in loggers:
        try:
            import torch.utils.tensorboard  # noqa: F401
        except ImportError:
            raise RunError("tensorboard logging needs tensorboard: pip install "
                           "thermotrain[tensorboard]") from None
    return tuple(loggers)


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
    loggers: Sequence[str] = ("csv",),
    pack: bool = True,
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
        loggers: ``"csv"`` (``metrics.csv``, always written) and/or ``"tensorboard"``
            (events in ``out/tensorboard/<method>/seed-<s>``).
        pack: train the cells of a hyperparameter sweep as one ensemble where the
            optimizer takes per-member hyperparameters (:mod:`.packed`; same results to
            rounding); ``False``: one cell after the other.

    Raises:
        RunError: the folder holds a different run or is in use, or a checkpoint does not
            match.
        ValueError: an unknown logger.
    """
    out = Path(out)
    loggers = _check_loggers(loggers)
    with RunFolder(out).lock():
        return _run_locked(study, out, resume=resume, data_dir=data_dir, progress=progress,
                           callback=callback, threads=threads, log=log, loggers=loggers,
                           pack=pack)


def _run_locked(study: StudyConfig, out: Path, *, resume: bool, data_dir: Any,
                progress: bool | None, callback: Callback | None, threads: int | None,
                log: Callable[[str], None] | None, loggers: tuple[str, ...], pack: bool
                ) -> dict[str, Any]:
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
    errors: dict[str, str] = {}
    total = study.training.steps * len(study.methods)
    units = sweep_packs(study.methods, study.training.rng) if pack else \
        [[m] for m in study.methods]
    try:
        with ProgressBar(bool(progress), total) as bar:
            for unit in units:
                label = f"{study.name}: {unit[0].base or unit[0].name}" if len(unit) > 1 \
                    else f"{study.name}: {unit[0].name}"

                def report(n: int, rate: float, label: str = label) -> None:
                    bar.update(n, label, rate or None)

                name = unit[0].base if len(unit) > 1 else unit[0].name
                tb = out / "tensorboard" / slug(name) if "tensorboard" in loggers else None
                try:
                    if len(unit) > 1:
                        done = train_pack(study, unit, data, out, _fingerprint, resume=resume,
                                          callback=callback, progress=report, tensorboard=tb)
                    else:
                        o = train_method(study, unit[0], data, out / "methods" / slug(name),
                                         resume=resume, callback=callback, progress=report,
                                         tensorboard=tb)
                        done = {name: {"rows": o.rows, "seconds": o.seconds,
                                       "diverged": o.diverged}}
                except FloatingPointError as exc:  # the other methods carry on
                    for m in unit:
                        errors[m.name] = str(exc).splitlines()[0]
                    if log is not None:
                        log(f"{name}: failed ({str(exc).splitlines()[0]})")
                    continue
                steps = study.training.steps
                for m in unit:
                    r = done[m.name]
                    rows.extend(r["rows"])
                    pack_seconds = r["seconds"] * len(unit)
                    rate = steps / pack_seconds if pack_seconds > 0 else float("nan")
                    timings[m.name] = {"seconds": r["seconds"], "steps_per_second": rate,
                                       **({"packed_cells": len(unit)} if len(unit) > 1 else {})}
                    if log is not None:
                        log(method_line(study, m, r["rows"], r["diverged"], steps, rate))
    finally:
        if threads is not None:
            torch.set_num_threads(previous_threads)
    return finish_run(study, out, rows, timings, errors)


def record_data_dir(out: Path, data_dir: str | os.PathLike[str] | None) -> None:
    """Write ``data.json`` (the resolved data root) so that the report can reload image
    data sets (the Fig. 3 line) without ``--data-dir``."""
    from ..data import resolve_data_dir

    RunFolder(out).write_data_root(resolve_data_dir(data_dir))


def finish_run(study: StudyConfig, out: Path, rows: Sequence[Sequence[Any]],
               timings: dict[str, dict[str, float]], errors: dict[str, str] | None = None
               ) -> dict[str, Any]:
    """Write ``metrics.csv`` and ``summary.json`` of a finished run; return the summary."""
    folder = RunFolder(out)
    folder.write_metrics(rows)
    summary = summarize(study, rows, timings, errors)
    folder.write_summary(summary)
    return summary
