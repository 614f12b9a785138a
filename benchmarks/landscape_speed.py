"""Speed of the landscape tools against their baselines, timed in this process.

1. ``landscape.interpolate`` on a 20-member ensemble of the notebook-4turn net (2-100-1 ReLU
   SHLP, 4-turn spiral, 500 train / 1000 test points, 50 alphas): the ensemble in one call,
   against a loop over the members calling ``interpolate`` on each plain member
   (target >= 10x). Both take the fused C path (``landscape._fastline``: one
   ``tt_mlp_eval`` call per split for all (alpha, member) pairs) by default; the rows
   "torch path" force the vmap-ed functional call that ran before it (``alpha_batch``
   applies there only): the ensemble with the default and with ``alpha_batch=10``, the loop
   with the default (the plain members batch 10 alphas) and with ``alpha_batch=1`` (one
   functional call per alpha: the loop as before alpha batching). Timings interleaved, best
   of ``--repeats``; GFLOP/s counts 2 * sum(in * out) flops per row per (alpha, member).
2. ``landscape.hessian_eigenvalues`` (top 3) against PyHessian's power iteration with
   deflation (``pyhessian.hessian(...).eigenvalues``, maxIter 100, tol 1e-3) on the same CPU
   model and data: one member alone, and 20 members (PyHessian: a loop; ours: the ensemble).
   PyHessian is never a project dependency: install it in a separate virtual environment
   (``python3 -m venv /tmp/pyh && /tmp/pyh/bin/pip install pyhessian --no-deps`` — its only
   file is pure Python, run here on this process's torch) and pass its site-packages with
   ``--pyhessian /tmp/pyh/lib/python3.11/site-packages``; without it that part is skipped.

Usage: ``python benchmarks/landscape_speed.py [--members 20] [--repeats 3] [--pyhessian DIR]``
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import sys
import time

import torch

from thermotrain import landscape
from thermotrain.data import spirals
from thermotrain.landscape import _fastline
from thermotrain.models import MLP


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--alphas", type=int, default=50)
    ap.add_argument("--pyhessian", default=None, help="site-packages holding pyhessian")
    args = ap.parse_args()
    k = args.members
    xtr, ytr = spirals(500, turns=4, seed=1000)
    xte, yte = spirals(1000, turns=4, seed=1001)
    data = {"train": (xtr, ytr), "test": (xte, yte)}
    ens = MLP([2, 100, 1], ensemble=k, seed=0)
    start = copy.deepcopy(ens.state_dict())
    g = torch.Generator().manual_seed(1)
    end = {n: v + 0.3 * torch.randn(v.shape, generator=g) for n, v in start.items()}
    members = [ens.member(i) for i in range(k)]
    m_start = [{n: v[i] for n, v in start.items()} for i in range(k)]
    m_end = [{n: v[i] for n, v in end.items()} for i in range(k)]

    @contextlib.contextmanager
    def torch_path():  # the vmap-ed functional call, as before the fused path
        saved = _fastline.evaluate
        _fastline.evaluate = lambda *a, **kw: None
        try:
            yield
        finally:
            _fastline.evaluate = saved

    def batched(ab=None, fast=True):
        with contextlib.nullcontext() if fast else torch_path():
            return landscape.interpolate(ens, start, end, data, alphas=args.alphas,
                                         alpha_batch=ab)

    def looped(ab=None, fast=True):
        with contextlib.nullcontext() if fast else torch_path():
            return [landscape.interpolate(m, s, e, data, alphas=args.alphas, alpha_batch=ab)
                    for m, s, e in zip(members, m_start, m_end, strict=True)]

    runs = {"ensemble (fused)": batched,
            "loop over members (fused)": looped,
            "ensemble, torch path, default": lambda: batched(fast=False),
            "ensemble, torch path, alpha_batch=10": lambda: batched(10, fast=False),
            "loop, torch path, default": lambda: looped(fast=False),
            "loop, torch path, alpha_batch=1": lambda: looped(1, fast=False)}
    ref = batched(1, fast=False)
    for name, fn in runs.items():  # warm-up, and every variant agrees with every member
        out = fn()
        for i in range(k):
            for split in data:
                got = (out[i].loss[split][:, 0] if isinstance(out, list)
                       else out.loss[split][:, i])
                assert torch.allclose(got, ref.loss[split][:, i], rtol=1e-5, atol=1e-6), name
                got = (out[i].accuracy[split][:, 0] if isinstance(out, list)
                       else out.accuracy[split][:, i])
                assert torch.allclose(got, ref.accuracy[split][:, i], atol=1e-6), name
    times = {name: float("inf") for name in runs}
    for _ in range(args.repeats):  # interleaved, so load changes hit every variant alike
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[name] = min(times[name], time.perf_counter() - t0)
    rows = sum(x.shape[0] for x, _ in data.values())
    flops = 2 * sum(a * b for a, b in zip(ens.widths[:-1], ens.widths[1:], strict=True)) * rows \
        * args.alphas * k
    print(f"interpolate, {k} members x {args.alphas} alphas, {rows} points "
          f"({flops / 1e9:.2f} GFLOP), torch threads {torch.get_num_threads()}, "
          f"{time.strftime('%Y-%m-%d %H:%M %Z')}")
    for name, t in times.items():
        print(f"  {name:38s} {t * 1e3:9.1f} ms  {flops / t / 1e9:6.1f} GFLOP/s")
    ens_t = times["ensemble (fused)"]
    print(f"  (a) loop (fused, its default) / ensemble       "
          f"{times['loop over members (fused)'] / ens_t:6.1f} x   (target >= 10x)")
    print(f"  (b) loop (torch path, alpha_batch=1) / ensemble "
          f"{times['loop, torch path, alpha_batch=1'] / ens_t:6.1f} x   (the loop as before)")
    print(f"      loop (torch path, default) / ensemble       "
          f"{times['loop, torch path, default'] / ens_t:6.1f} x")
    print(f"      ensemble torch path / ensemble fused        "
          f"{times['ensemble, torch path, default'] / ens_t:6.1f} x")

    # --- Hessian eigenvalues vs PyHessian -----------------------------------------------------
    x, y = xtr, ytr.float().unsqueeze(1)
    ours_one = best_of(lambda: landscape.hessian_eigenvalues(
        members[0], None, (xtr, ytr), k=3, method="power", iterations=100, tol=1e-3),
        args.repeats)
    ours_ens_power = best_of(lambda: landscape.hessian_eigenvalues(
        ens, None, (xtr, ytr), k=3, method="power", iterations=100, tol=1e-3), args.repeats)
    ours_ens_lanczos = best_of(lambda: landscape.hessian_eigenvalues(
        ens, None, (xtr, ytr), k=3, iterations=30), args.repeats)
    print("top-3 Hessian eigenvalues, 2-100-1 net, 500 points")
    print(f"  ours, power, 1 member            {ours_one * 1e3:9.1f} ms")
    print(f"  ours, power, {k} members (ens.)   {ours_ens_power * 1e3:9.1f} ms")
    print(f"  ours, Lanczos 30, {k} members    {ours_ens_lanczos * 1e3:9.1f} ms")
    if args.pyhessian is None:
        print("  PyHessian: skipped (pass --pyhessian SITE_PACKAGES of its separate venv)")
        return
    sys.path.append(args.pyhessian)
    from pyhessian import hessian as PyHessian  # noqa: N812

    crit = torch.nn.BCEWithLogitsLoss()

    def pyh(model):
        torch.manual_seed(0)
        return PyHessian(model, crit, data=(x, y), cuda=False).eigenvalues(
            maxIter=100, tol=1e-3, top_n=3)[0]

    ref = pyh(members[0])
    ours = landscape.hessian_eigenvalues(members[0], None, (xtr, ytr), k=3)
    print(f"  check: PyHessian {[round(v, 4) for v in ref]} vs ours (Lanczos) "
          f"{[round(v, 4) for v in ours.tolist()]}")
    t_py_one = best_of(lambda: pyh(members[0]), args.repeats)
    t_py_all = best_of(lambda: [pyh(m) for m in members], max(1, args.repeats - 2))
    print(f"  PyHessian, 1 member              {t_py_one * 1e3:9.1f} ms"
          f"   ratio PyHessian / ours(power) {t_py_one / ours_one:6.2f} x")
    print(f"  PyHessian, loop over {k}         {t_py_all * 1e3:9.1f} ms"
          f"   ratio / ours(power, ensemble) {t_py_all / ours_ens_power:6.2f} x, "
          f"/ ours(Lanczos) {t_py_all / ours_ens_lanczos:6.2f} x")


if __name__ == "__main__":
    main()
