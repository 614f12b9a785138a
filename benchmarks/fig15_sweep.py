"""The fig15 sweep packed into one ensemble versus cell by cell, in one process.

The study ``studies/fig15.toml`` (AdLaLa, 5 × 5 cells over (τ₁, σ_A), 10 seeds per cell,
2-100-1 net, 4-turn spiral) is run twice on a reduced number of steps:

(a) ``run_study(pack=False)``: the 25 cells one after the other, each a 10-member ensemble
    (what the runner did before packing);
(b) ``run_study()``: the 25 × 10 = 250 members as one ensemble with per-member
    hyperparameters (``experiments/packed.py``).

It prints both training times (without evaluations and checkpoints; ``summary.json``
``seconds``, summed over cells), the ratio (a)/(b) and the largest difference of a cell's
final mean test accuracy between the two (the same seed streams: equal to rounding).
Usage::

    python benchmarks/fig15_sweep.py [--steps 2000] [--repeat 1]

Target (issue 8 §3): (b) at least 3× faster than (a).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from thermotrain.experiments import find_study, load_study, run_study


def _time(study, out: Path, pack: bool) -> tuple[float, float, dict]:
    start = time.perf_counter()
    summary = run_study(study, out, pack=pack, progress=False)
    wall = time.perf_counter() - start
    train = sum(m["seconds"] for m in summary["methods"].values())
    return train, wall, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=1, help="alternate the arms this often")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    study = load_study(find_study("fig15"), steps=args.steps,
                       overrides=[f"training.eval_every={args.steps}",
                                  "training.checkpoint_every=0"])
    cells = len(study.methods)
    print(f"fig15: {cells} cells x {study.training.seeds} seeds, {args.steps} steps, "
          f"{torch.get_num_threads()} threads")
    times: dict[bool, list[float]] = {False: [], True: []}
    walls: dict[bool, list[float]] = {False: [], True: []}
    summaries = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):
            for pack in (False, True):
                train, wall, summary = _time(study, Path(tmp) / f"{pack}-{r}", pack)
                times[pack].append(train)
                walls[pack].append(wall)
                summaries[pack] = summary
    per_cell, packed = min(times[False]), min(times[True])
    print(f"(a) cell by cell : {per_cell:7.2f} s training ({min(walls[False]):.2f} s wall)")
    print(f"(b) packed       : {packed:7.2f} s training ({min(walls[True]):.2f} s wall)")
    print(f"ratio (a)/(b)    : {per_cell / packed:.2f}x training, "
          f"{min(walls[False]) / min(walls[True]):.2f}x wall (target >= 3x)")
    diff = max(abs(summaries[True]["methods"][m]["test_accuracy_mean"]
                   - summaries[False]["methods"][m]["test_accuracy_mean"])
               for m in summaries[True]["methods"])
    print(f"largest |difference| of a cell's mean test accuracy: {diff:.2e}")
    print(f"full-length estimate (20 000 steps): (a) {per_cell * 20_000 / args.steps:.0f} s, "
          f"(b) {packed * 20_000 / args.steps:.0f} s")


if __name__ == "__main__":
    main()
