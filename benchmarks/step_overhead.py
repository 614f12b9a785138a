"""Time ``opt.step()`` alone (gradients precomputed) for thermotrain's samplers against
``torch.optim.SGD`` (momentum 0.9, foreach) and ``torch.optim.Adam`` (foreach), in one process.

Rounds interleave the optimizers (each round times a few steps of every optimizer in turn), so
drifts in machine load hit all of them alike; the statistic is the median over rounds. Ratios
are printed against Adam and SGD. Usage::

    python benchmarks/step_overhead.py [--rounds 15] [--steps 5] [--only large|small]

Targets (issue 8): at ~10M parameters with the default noise source (``rng="philox"``),
BAOAB ≤ 0.6× and AdLaLa ≤ 0.85× Adam's step. The ``/ignore`` rows run without the gradient
screen that lets ``nan_policy="raise"`` (the default) refuse a non-finite gradient before
anything is written: their difference is that screen's cost (one read of the gradients).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import thermotrain as tt


def large_model() -> nn.Module:
    # 2000·2500 + 2500 + 2500·2000 + 2000 + 2000·500 + 500 ≈ 11.0M parameters, three layers
    return nn.Sequential(nn.Linear(2500, 2000), nn.ReLU(), nn.Linear(2000, 2500), nn.ReLU(),
                         nn.Linear(2500, 400))


def spiral_model() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 100), nn.ReLU(), nn.Linear(100, 1))


OPTIMIZERS = {
    "SGD(m=0.9)": lambda m: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9, foreach=True),
    "Adam": lambda m: torch.optim.Adam(m.parameters(), lr=1e-3, foreach=True),
    # the default noise source (rng="philox": the fused kernel)
    "BAOAB": lambda m: tt.BAOAB(m.parameters(), lr=1e-3, friction=1.0, temperature=1e-6, seed=0),
    "AdLaLa": lambda m: tt.AdLaLa(m, lr=1e-3, seed=0),
    "SGLD": lambda m: tt.SGLD(m.parameters(), lr=1e-3, temperature=1e-6, seed=0),
    "OBABO": lambda m: tt.Langevin(m.parameters(), lr=1e-3, friction=1.0, temperature=1e-6,
                                   splitting="OBABO", seed=0),
    # without the gradient screen
    "BAOAB/ignore": lambda m: tt.BAOAB(m.parameters(), lr=1e-3, friction=1.0, temperature=1e-6,
                                       seed=0, nan_policy="ignore"),
    "AdLaLa/ignore": lambda m: tt.AdLaLa(m, lr=1e-3, seed=0, nan_policy="ignore"),
    # torch generators
    "BAOAB/torch": lambda m: tt.BAOAB(m.parameters(), lr=1e-3, friction=1.0, temperature=1e-6,
                                      seed=0, rng="torch"),
    "AdLaLa/torch": lambda m: tt.AdLaLa(m, lr=1e-3, seed=0, rng="torch"),
}


def bench(model: nn.Module, rounds: int, steps: int) -> dict[str, float]:
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    opts = {name: make(model) for name, make in OPTIMIZERS.items()}
    # the optimizers share the parameters; every step moves them by ~1e-6, harmless here
    for opt in opts.values():  # warm-up: lazy state, thread pool, allocator
        for _ in range(2):
            opt.step()
    times: dict[str, list[float]] = {name: [] for name in opts}
    for _ in range(rounds):
        for name, opt in opts.items():
            start = time.perf_counter()
            for _ in range(steps):
                opt.step()
            times[name].append((time.perf_counter() - start) / steps)
    return {name: statistics.median(ts) for name, ts in times.items()}


def report(title: str, n_params: int, med: dict[str, float]) -> None:
    print(f"\n{title}: {n_params / 1e6:.2f}M parameters, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'optimizer':<15}{'step (ms)':>11}{'× Adam':>9}{'× SGD':>8}")
    for name, t in med.items():
        print(f"{name:<15}{t * 1e3:>11.3f}{t / med['Adam']:>9.2f}{t / med['SGD(m=0.9)']:>8.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--only", choices=["large", "small"])
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.only != "small":
        model = large_model()
        n = sum(p.numel() for p in model.parameters())
        report("large MLP", n, bench(model, args.rounds, args.steps))
    if args.only != "large":
        model = spiral_model()
        n = sum(p.numel() for p in model.parameters())
        report("2-100-1 spiral net", n, bench(model, args.rounds * 4, args.steps * 40))


if __name__ == "__main__":
    main()
