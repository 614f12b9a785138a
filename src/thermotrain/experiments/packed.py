r"""A hyperparameter sweep trained as **one** ensemble: C cells × S seeds = C·S members.

The cells of a swept method (``[methods.sweep]`` expands into methods with the same
``base``) share the model and the scheme; only hyperparameters differ. When the optimizer
takes per-member hyperparameters (``(K,)`` tensors; :func:`~.builders.sweep_packs` probes it),
the runner trains them together: member :math:`c S + j` is initialised, batched and noised
with run seed :math:`s_j` (the streams of :func:`~.config.stream_seeds`) and follows cell c's
hyperparameters — exactly what cell c's own run does for its member j, so the results match
the per-cell runs to rounding (tested), at the cost of one step for all cells.

Afterwards each cell gets its usual files, as if trained alone: ``methods/<cell>/
snapshots.pt`` and a finished ``checkpoint.pt`` (its members' final parameters, its metric
rows, ``"packed"``: the pack's folder). The resumable state of the pack itself lives in
``methods/<base>.pack/checkpoint.pt``; ``--resume`` continues it bit for bit. Timings: every
cell gets the pack's training time divided by C (``packed_cells``: C).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..data import Minibatcher
from ..training import DivergenceGuard, TensorBoardLogger, train
from ..training.snapshots import Snapshots
from .builders import Dataset, build_model, build_packed_optimizer, evaluator
from .config import MethodConfig, StudyConfig, slug, stream_seeds
from .run_folder import MethodFolder, RunError, model_spec

__all__ = ["train_pack", "pack_folder"]


def pack_folder(out: Path, cells: Sequence[MethodConfig]) -> MethodFolder:
    """The folder of the pack's own checkpoint: ``methods/<base>.pack``."""
    return MethodFolder(out / "methods" / f"{slug(cells[0].base or cells[0].name)}.pack")


def _split_snapshot(snap: dict[str, Any], cell: int, size: int, saved: int) -> dict[str, Any]:
    """Cell ``cell``'s part of a pack snapshot (``size`` members per cell, ``saved`` kept)."""
    rows, kept = slice(cell * size, (cell + 1) * size), slice(cell * saved, (cell + 1) * saved)
    out = {"step": snap["step"], "first_weight": snap["first_weight"][rows].clone(),
           "first_bias": snap["first_bias"][rows].clone(),
           "members": {k: v[kept].clone() for k, v in snap["members"].items()}}
    if "window" in snap:
        out["window"] = {"steps": list(snap["window"]["steps"]),
                         "members": {k: v[:, kept].clone()
                                     for k, v in snap["window"]["members"].items()}}
    return out


def train_pack(
    study: StudyConfig,
    cells: Sequence[MethodConfig],
    data: Dataset,
    out: Path,
    fingerprint: Callable[[StudyConfig, MethodConfig, Sequence[int]], str],
    *,
    resume: bool = False,
    callback: Callable[[str, int], None] | None = None,
    progress: Callable[[int, float], None] | None = None,
    tensorboard: Path | None = None,
) -> dict[str, dict[str, Any]]:
    """Train the cells of one sweep as one ensemble into the run folder ``out``.

    Returns:
        Per cell name: ``rows`` (long format), ``seconds`` (its share), ``diverged``
        (``[{seed, step}]``).

    Raises:
        RunError: the pack's checkpoint was written for another configuration.
    """
    t = study.training
    seeds = list(t.run_seeds)
    size, n = len(seeds), len(cells)
    prints = [fingerprint(study, c, seeds) for c in cells]
    folders = [MethodFolder(out / "methods" / slug(c.name)) for c in cells]
    if resume:
        done = [f.load_checkpoint() for f in folders]
        if all(d is not None and d.get("done") and d.get("fingerprint") == p
               for d, p in zip(done, prints, strict=True)):
            if progress is not None:
                progress(t.steps, 0.0)
            return {c.name: {"rows": [tuple(r) for r in d["rows"]],
                             "seconds": float(d["seconds"]),
                             "diverged": list(d.get("diverged", []))}
                    for c, d in zip(cells, done, strict=True)}
    files = pack_folder(out, cells)
    pack_print = json.dumps(prints)
    ckpt = files.load_checkpoint() if resume else None
    if ckpt is not None:
        if ckpt.get("fingerprint") != pack_print:
            raise RunError(f"{files.checkpoint_path} was written for a different "
                           f"configuration of {cells[0].base!r}; start a new run folder")
        if progress is not None:
            progress(int(ckpt["step"]), 0.0)

    member_seeds = seeds * n  # cell-major
    model = build_model(study, cells[0], data, member_seeds)
    opt = build_packed_optimizer(cells, model, seeds, t.rng, nan_policy="ignore")
    batcher = Minibatcher(data.x_train.shape[0], t.batch_size, replacement=t.replacement,
                          seeds=stream_seeds(member_seeds, "batches"))
    saved = min(t.saved_members, size)
    guard = DivergenceGuard()
    snaps = Snapshots(t.snapshot_steps(), keep=[c * size + j for c in range(n)
                                                for j in range(saved)],
                      window=t.snapshot_average)
    hooks: list[Any] = [guard, snaps]
    if tensorboard is not None:
        hooks.append(TensorBoardLogger(tensorboard))

    def each_cell(step: int) -> None:
        for c in cells:
            callback(c.name, step)  # type: ignore[misc]

    state = train(
        model, opt, batcher, steps=t.steps, x_train=data.x_train, y_train=data.y_train,
        hooks=hooks, seeds=member_seeds, evaluate=evaluator(data, t.eval_batch),
        eval_steps=t.eval_steps(), checkpoint=files.save_checkpoint,
        checkpoint_every=t.checkpoint_every, resume_from=ckpt,
        extra_state=lambda: {"fingerprint": pack_print, "cells": [c.name for c in cells]},
        study=study.name, method=[c.name for c in cells for _ in seeds],
        progress=None if progress is None else (lambda k, r: progress(k * n, r * n)),
        callback=None if callback is None else each_cell,
    )
    spec = model_spec(model)
    final = model.state_dict()
    results: dict[str, dict[str, Any]] = {}
    for ci, (c, folder) in enumerate(zip(cells, folders, strict=True)):
        members = range(ci * size, (ci + 1) * size)
        rows = [r for r in state.rows if r[1] == c.name]
        cell_snaps = [_split_snapshot(s, ci, size, saved) for s in snaps.snapshots]
        diverged = guard.report(seeds, members)
        folder.save_snapshots(cell_snaps, seeds=seeds, model=spec, method=c.name)
        folder.save_checkpoint({
            "fingerprint": prints[ci], "step": state.step, "done": True,
            "seconds": state.seconds / n, "rows": rows, "snapshots": cell_snaps,
            "diverged": diverged, "packed": files.path.name,
            "model": {k: v[members.start:members.stop].clone() for k, v in final.items()},
            "optimizer": None, "batcher": None})
        results[c.name] = {"rows": rows, "seconds": state.seconds / n, "diverged": diverged}
    return results
