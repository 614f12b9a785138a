"""Seed-ensemble throughput: the ``notebook-4turn`` AdLaLa protocol (4-turn spiral, 500 train
points, batch 25, 2-100-1 ReLU net, AdLaLa with the authors' defaults) for K seeds,

(a) as one vectorized ensemble (``models.MLP(ensemble=K)``, ``AdLaLa(ensemble_dim=0)``,
    ``data.Minibatcher``: what ``thermotrain run`` does), versus
(a') the same through ``thermotrain.training.train`` with the runner's
    ``DivergenceGuard`` (the loop's overhead over the bare loop of (a)), versus
(b) the same algorithm one seed at a time in a standard PyTorch loop like the authors'
    script: ``nn.Sequential`` + ``DataLoader(TensorDataset, batch_size=25, shuffle=True)`` +
    ``BCELoss``, one optimizer per seed.

Both run the same number of steps per seed (shortened). (b) is timed on ``--baseline-seeds``
seeds and scaled linearly to K (it is a loop over seeds: its cost is exactly linear).
Usage::

    python benchmarks/ensemble_throughput.py [--members 100] [--steps 1000]

Target (issue 4): ≥ 100× at K = 100.
"""

from __future__ import annotations

import argparse
import gc
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import thermotrain as tt
from thermotrain.data import Minibatcher, spirals
from thermotrain.models import MLP, fused
from thermotrain.perf import tune_malloc
from thermotrain.training import DivergenceGuard, train

BATCH = 25


def vectorized(x: torch.Tensor, y: torch.Tensor, members: int, steps: int, rng: str) -> float:
    seeds = list(range(members))
    model = MLP([2, 100, 1], ensemble=members, seed=seeds)
    opt = tt.AdLaLa(model, ensemble_dim=0, seed=[s + 2_000_006 for s in seeds], rng=rng)
    batcher = Minibatcher(len(x), BATCH, seeds=[s + 1_000_003 for s in seeds])
    gradient = fused.gradient_fn(model, x, y)  # as the runner: fused where it applies
    start = time.perf_counter()
    for _ in range(steps):
        gradient(batcher.next())
        opt.step()
    return time.perf_counter() - start


def through_loop(x: torch.Tensor, y: torch.Tensor, members: int, steps: int, rng: str) -> float:
    """(a) through ``thermotrain.training.train`` with the runner's divergence guard (what
    ``thermotrain run`` executes; no evaluations, no checkpoints)."""
    seeds = list(range(members))
    model = MLP([2, 100, 1], ensemble=members, seed=seeds)
    opt = tt.AdLaLa(model, ensemble_dim=0, seed=[s + 2_000_006 for s in seeds], rng=rng,
                    nan_policy="ignore")
    batcher = Minibatcher(len(x), BATCH, seeds=[s + 1_000_003 for s in seeds])
    state = train(model, opt, batcher, steps=steps, x_train=x, y_train=y,
                  hooks=[DivergenceGuard()], handle_signals=False)
    return state.seconds


def one_seed(x: torch.Tensor, y: torch.Tensor, seed: int, steps: int, rng: str) -> float:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(2, 100), nn.ReLU(), nn.Linear(100, 1), nn.Sigmoid())
    opt = tt.AdLaLa(model, seed=seed, rng=rng)
    loader = DataLoader(TensorDataset(x, y[:, None]), batch_size=BATCH, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    loss_fn = nn.BCELoss()
    start = time.perf_counter()
    done = 0
    while done < steps:
        for xb, yb in loader:
            opt.zero_grad()
            loss_fn(model(xb), yb).backward()
            opt.step()
            done += 1
            if done == steps:
                break
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=100)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--baseline-seeds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads for both (default: torch's, all cores, as the "
                         "runner and the authors' script)")
    ap.add_argument("--rng", choices=["torch", "philox"], default="philox",
                    help="the samplers' noise source, for both (a) and (b)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tune_malloc()  # as `thermotrain run` does; process-wide, so (a) and (b) alike
    gc.freeze()  # likewise: the collector skips the objects of the imported libraries
    x, y = spirals(500, turns=4, seed=0)
    vectorized(x, y, args.members, 20, args.rng)  # warm-up
    t_vec = vectorized(x, y, args.members, args.steps, args.rng)
    through_loop(x, y, args.members, 20, args.rng)
    t_train = through_loop(x, y, args.members, args.steps, args.rng)
    one_seed(x, y, 0, 20, args.rng)
    t_loop = sum(one_seed(x, y, s, args.steps, args.rng) for s in range(args.baseline_seeds))
    t_loop_all = t_loop / args.baseline_seeds * args.members
    print(f"notebook-4turn AdLaLa protocol, K = {args.members} seeds × {args.steps} steps, "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), rng={args.rng}")
    print(f"(a) vectorized ensemble:         {t_vec:8.2f} s  "
          f"({args.steps / t_vec:7.0f} ensemble steps/s)")
    print(f"(a') the same through training.train + DivergenceGuard: {t_train:8.2f} s  "
          f"(loop overhead {t_train / t_vec:.2f}× the bare loop)")
    print(f"(b) one seed at a time, DataLoader: {t_loop_all:8.2f} s  "
          f"(measured on {args.baseline_seeds} seeds, {t_loop / args.baseline_seeds:.2f} s each)")
    print(f"speed-up (b)/(a): {t_loop_all / t_vec:.1f}×")


if __name__ == "__main__":
    main()
