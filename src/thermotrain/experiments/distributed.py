"""The ``ray`` backend: a study's cells (method × chunk of seeds) as ray tasks.

Each cell trains its chunk of seeds as one ensemble with :func:`~.runner.train_method`
(exactly what the local backend does for all seeds at once: member k depends only on its
seed, so the split does not change the results) into ``methods/<method>/part-<i>/``; the
driver gathers the metric rows and snapshots into the same run folder layout as a local run
(``metrics.csv``, ``summary.json``, ``methods/<method>/snapshots.pt``), so ``report`` works
unchanged. Workers write their checkpoints into the run folder, so ``--resume`` needs a
folder that all nodes share (always true on a single machine).

Install with ``pip install thermotrain[ray]``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .builders import load_data
from .config import StudyConfig, slug
from .runner import atomic_save, check_folder, finish_run, train_method

__all__ = ["run_study_ray", "split_seeds"]


def split_seeds(seeds: list[int], chunk: int) -> list[list[int]]:
    """Consecutive chunks of at most ``chunk`` seeds."""
    return [seeds[i : i + chunk] for i in range(0, len(seeds), chunk)]


def _cell(study: StudyConfig, index: int, seeds: list[int], folder: str, resume: bool,
          data_dir: str | None, threads: int | None) -> dict[str, Any]:
    if threads is not None:
        torch.set_num_threads(threads)
    method = study.methods[index]
    data = load_data(study.data, data_dir)
    outcome = train_method(study, method, data, Path(folder), seeds=seeds, resume=resume)
    snaps = torch.load(Path(folder) / "snapshots.pt", weights_only=True)["snapshots"]
    return {"rows": outcome.rows, "seconds": outcome.seconds, "snapshots": snaps}


def _merge_snapshots(parts: list[list[dict]], saved: int) -> list[dict]:
    merged = []
    for snaps in zip(*parts, strict=True):
        members = {k: torch.cat([s["members"][k] for s in snaps])[:saved]
                   for k in snaps[0]["members"]}
        merged.append({
            "step": snaps[0]["step"],
            "first_weight": torch.cat([s["first_weight"] for s in snaps]),
            "first_bias": torch.cat([s["first_bias"] for s in snaps]),
            "members": members,
        })
    return merged


def run_study_ray(
    study: StudyConfig,
    out: str | os.PathLike[str],
    *,
    resume: bool = False,
    data_dir: str | os.PathLike[str] | None = None,
    address: str | None = None,
    seeds_per_task: int | None = None,
    threads: int | None = 1,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Like :func:`~.runner.run_study`, with the cells run as ray tasks.

    Args:
        address: ray cluster address (``None``: start or join a local ray).
        seeds_per_task: seeds per cell (default: the K seeds in chunks of at most 10).
        Other arguments as :func:`~.runner.run_study`.
    """
    import ray

    out = Path(out)
    check_folder(out, study, resume)
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    seeds = study.training.run_seeds
    chunk = seeds_per_task or max(1, math.ceil(len(seeds) / math.ceil(len(seeds) / 10)))
    chunks = split_seeds(seeds, chunk)
    remote = ray.remote(num_cpus=threads or 1)(_cell)
    futures = {}
    for i, method in enumerate(study.methods):
        base = out / "methods" / slug(method.name)
        for j, part in enumerate(chunks):
            folder = str(base / f"part-{j}")
            futures[(i, j)] = remote.remote(study, i, part, folder, resume,
                                            None if data_dir is None else str(data_dir),
                                            threads)
    results = dict(zip(futures, ray.get(list(futures.values())), strict=True))
    rows: list[tuple] = []
    timings: dict[str, dict[str, float]] = {}
    order = {"train": 0, "test": 1}
    for i, method in enumerate(study.methods):
        parts = [results[(i, j)] for j in range(len(chunks))]
        method_rows = [tuple(r) for p in parts for r in p["rows"]]
        method_rows.sort(key=lambda r: (r[3], order[r[4]], seeds.index(r[2])))
        rows.extend(method_rows)
        seconds = sum(p["seconds"] for p in parts)
        steps = study.training.steps
        timings[method.name] = {"seconds": seconds,
                                "steps_per_second": steps * len(chunks) / seconds
                                if seconds > 0 else float("nan")}
        snaps = _merge_snapshots([p["snapshots"] for p in parts],
                                 min(study.training.saved_members, len(seeds)))
        atomic_save({"method": method.name, "seeds": seeds, "snapshots": snaps},
                    out / "methods" / slug(method.name) / "snapshots.pt")
        if log is not None:
            log(f"{method.name}: done ({len(chunks)} ray tasks)")
    return finish_run(study, out, rows, timings)
