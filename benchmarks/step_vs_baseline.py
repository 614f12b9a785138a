"""Time ``opt.step()`` of this tree's samplers against an earlier revision's, in one process.

Issue 8 asks that the fused path stays within 10 % of the speed it had before the open-engine
refactor (one op-list interpreter for every splitting, per-member hyperparameters, the
gradient screen of ``nan_policy="raise"``). The baseline is any git revision: its
``src/thermotrain`` is extracted with ``git archive`` into a temporary directory and imported
as ``thermotrain_baseline`` (its kernel compiles on first use, like ours). The default,
``4d50359``, is the last commit before that work. Both sides run with their defaults and the
Philox stream (the baseline's default was still ``rng="torch"``, so it is asked for).

Three settings, arms interleaved round by round (median over rounds, so load changes hit
both alike):

* ``large``: an 11M-parameter MLP, gradients set once (the kernel's memory traffic and noise);
* ``small``: the 2-100-1 spiral net, gradients set once (the Python overhead of a step);
* ``fresh``: the 2-100-1 net with new gradient tensors every step, as in the usual
  ``zero_grad()`` / ``backward()`` loop (the kernel arguments must follow the new tensors).

Usage::

    python benchmarks/step_vs_baseline.py [--baseline REV] [--rounds 15] [--only large|small|fresh]
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import thermotrain as tt

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.10


def baseline_package(rev: str, into: Path):
    """Import ``src/thermotrain`` of ``rev`` as the package ``thermotrain_baseline``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src/thermotrain"],
                             capture_output=True, check=False)
    if archive.returncode != 0:
        sys.exit(f"step_vs_baseline: git archive {rev} failed: "
                 f"{archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    shutil.move(str(into / "src" / "thermotrain"), str(into / "thermotrain_baseline"))
    sys.path.insert(0, str(into))
    return importlib.import_module("thermotrain_baseline")


def makers(mod, **kw):
    return {
        "BAOAB": lambda m: mod.BAOAB(m.parameters(), lr=1e-3, friction=1.0, temperature=1e-6,
                                     seed=0, **kw),
        "AdLaLa": lambda m: mod.AdLaLa(m, lr=1e-3, seed=0, **kw),
        "SGLD": lambda m: mod.SGLD(m.parameters(), lr=1e-3, temperature=1e-6, seed=0, **kw),
    }


def bench(model: nn.Module, base, rounds: int, steps: int, fresh: bool) -> dict[str, float]:
    params = list(model.parameters())
    grads = [[torch.randn_like(p) * 1e-3 for p in params] for _ in range(4)]
    for p, g in zip(params, grads[0], strict=True):
        p.grad = g.clone()
    opts = {}
    for name, make in makers(base, rng="philox").items():
        opts[f"baseline {name}"] = make(model)
    for name, make in makers(tt).items():  # this tree's defaults: philox, nan_policy="raise"
        opts[f"this tree {name}"] = make(model)

    def run(opt, n: int) -> None:
        for s in range(n):
            if fresh:
                for p, g in zip(params, grads[s % 4], strict=True):
                    p.grad = g.clone()
            opt.step()

    for opt in opts.values():  # warm-up: lazy state, kernels, thread pool
        run(opt, 3)
    times: dict[str, list[float]] = {k: [] for k in opts}
    for _ in range(rounds):
        for name, opt in opts.items():
            start = time.perf_counter()
            run(opt, steps)
            times[name].append((time.perf_counter() - start) / steps)
    return {k: statistics.median(v) for k, v in times.items()}


def report(title: str, med: dict[str, float], unit: float, label: str) -> list[float]:
    print(f"\n{title}")
    print(f"{'sampler':<8}{'baseline':>12}{'this tree':>12}{'ratio':>8}")
    ratios = []
    for name in ("BAOAB", "AdLaLa", "SGLD"):
        b, t = med[f"baseline {name}"], med[f"this tree {name}"]
        ratios.append(t / b)
        print(f"{name:<8}{b * unit:>10.1f}{label}{t * unit:>10.1f}{label}{t / b:>8.3f}")
    return ratios


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default="4d50359", help="git revision (default: 4d50359)")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--only", choices=["large", "small", "fresh"])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = baseline_package(args.baseline, Path(tmp))
        print(f"baseline {args.baseline} vs this tree, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads; target: ratio <= {TARGET:.2f}")
        torch.manual_seed(0)
        worst = []
        if args.only in (None, "large"):
            model = nn.Sequential(nn.Linear(2500, 2000), nn.ReLU(), nn.Linear(2000, 2500),
                                  nn.ReLU(), nn.Linear(2500, 400))
            worst += report("11M-parameter MLP, gradients set once",
                            bench(model, base, args.rounds, 4, False), 1e3, "ms")
        for setting, fresh in (("small", False), ("fresh", True)):
            if args.only in (None, setting):
                model = nn.Sequential(nn.Linear(2, 100), nn.ReLU(), nn.Linear(100, 1))
                title = ("2-100-1 net, " + ("new gradient tensors every step" if fresh
                                            else "gradients set once"))
                worst += report(title, bench(model, base, args.rounds * 2, 200, fresh), 1e6,
                                "us")
        print(f"\nworst ratio {max(worst):.3f} (target <= {TARGET:.2f})")


if __name__ == "__main__":
    main()
