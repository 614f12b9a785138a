"""Speed of the landscape tools against their baselines, timed in this process.

1. ``landscape.interpolate`` on a 20-member ensemble of the notebook-4turn net (2-100-1 ReLU
   SHLP, 4-turn spiral, 500 train / 1000 test points, 50 alphas): the ensemble in one call,
   against a loop over the members calling ``interpolate`` on each plain member
   (target >= 10x). Both take the fused C path (``landscape._fastline``: one
   ``tt_mlp_line`` call per split for all (alpha, member) pairs) by default; the rows
   "torch path" force the vmap-ed functional call that ran before it (``alpha_batch``
   applies there only): the ensemble with the default and with ``alpha_batch=10``, the loop
   with the default (the plain members batch 10 alphas) and with ``alpha_batch=1`` (one
   functional call per alpha: the loop as before alpha batching). Timings interleaved, best
   of ``--repeats``; nominal GFLOP/s counts 2 * sum(in * out) flops per row per (alpha,
   member) (a direct evaluation), "executes" what the fused path does (the first layer at
   the two ends only, then per alpha one multiply-add per first-layer unit and the later
   layers). The loop's fixed cost: the same 20 calls on one point and 2 alphas.
   Then the mli-mnist net (784-64-64-10, 5 members, 7000 points, 25 alphas): fused vs the
   torch path, without and with batch norm.
2. ``landscape.hessian_eigenvalues`` (top 3) against PyHessian's power iteration with
   deflation (``pyhessian.hessian(...).eigenvalues``, maxIter 100, tol 1e-3) on the same CPU
   model and data: one member alone, and 20 members (PyHessian: a loop; ours: the ensemble).
   PyHessian is never a project dependency: install it in a separate virtual environment
   (``python3 -m venv /tmp/pyh && /tmp/pyh/bin/pip install pyhessian --no-deps`` — its only
   file is pure Python, run here on this process's torch) and pass its site-packages with
   ``--pyhessian /tmp/pyh/lib/python3.11/site-packages``; without it that part is skipped.

Usage: ``python benchmarks/landscape_speed.py [--members 20] [--repeats 3] [--threads N]
[--no-hessian] [--pyhessian DIR]``
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
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    ap.add_argument("--no-hessian", action="store_true", help="interpolate only")
    args = ap.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
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

    def overhead():  # the loop's fixed cost per call: 2 alphas on 1 point
        one = {"train": (xtr[:1], ytr[:1])}
        return [landscape.interpolate(m, s, e, one, alphas=2)
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
    for name, t in times.items():  # nominal: the fused path skips most first-layer work
        print(f"  {name:38s} {t * 1e3:9.1f} ms  {flops / t / 1e9:6.1f} GFLOP/s (nominal)")
    # what the fused path executes: both ends' first layer once per row and member, then per
    # alpha one multiply-add per first-layer unit and the later layers
    w = ens.widths
    done = rows * k * (4 * w[0] * w[1] + args.alphas * (
        2 * w[1] + 2 * sum(a * b for a, b in zip(w[1:-1], w[2:], strict=True))))
    t_over = best_of(overhead, args.repeats)
    for name in ("ensemble (fused)", "loop over members (fused)"):
        print(f"  {name:38s} executes {done / 1e9:.2f} GFLOP: "
              f"{done / times[name] / 1e9:6.1f} GFLOP/s")
    print(f"  loop's fixed cost: {k} calls on 1 point {t_over * 1e3:.1f} ms "
          f"({t_over / k * 1e3:.2f} ms per call)")
    ens_t = times["ensemble (fused)"]
    print(f"  (a) loop (fused, its default) / ensemble       "
          f"{times['loop over members (fused)'] / ens_t:6.1f} x   (target >= 10x)")
    print(f"  (b) loop (torch path, alpha_batch=1) / ensemble "
          f"{times['loop, torch path, alpha_batch=1'] / ens_t:6.1f} x   (the loop as before)")
    print(f"      loop (torch path, default) / ensemble       "
          f"{times['loop, torch path, default'] / ens_t:6.1f} x")
    print(f"      ensemble torch path / ensemble fused        "
          f"{times['ensemble, torch path, default'] / ens_t:6.1f} x")
    mnist_net(args.repeats)
    if args.no_hessian:
        return

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


def mnist_net(repeats: int) -> None:
    """The mli-mnist study's line: 784-64-64-10 ReLU, 5 members, 5 000 train + 2 000 test rows
    (uniform [0, 1] inputs, random labels: the cost does not depend on the values), 25 α;
    fused against the torch path (default alpha_batch), interleaved; without batch norm,
    then with it in the study's mode ("recompute", cumulative statistics: a torch pass over
    the train rows at every α on both paths) and in "interpolate"."""
    g = torch.Generator().manual_seed(2)
    print("interpolate, mli-mnist net 784-64-64-10, 5 members x 25 alphas, 7000 points")
    for bn, mode in ((False, "recompute"), (True, "recompute"), (True, "interpolate")):
        ens = MLP([784, 64, 64, 10], ensemble=5, seed=0, batchnorm=bn)
        start = copy.deepcopy(ens.state_dict())
        end = {n: v + 0.05 * torch.randn(v.shape, generator=g) if v.dtype.is_floating_point
               else v for n, v in start.items()}
        data = {s: (torch.rand(n, 784, generator=g), torch.randint(0, 10, (n,), generator=g))
                for s, n in (("train", 5000), ("test", 2000))}

        def run(fast: bool, ens=ens, start=start, end=end, data=data, mode=mode):
            saved = _fastline.evaluate
            if not fast:
                _fastline.evaluate = lambda *a, **kw: None
            try:
                return landscape.interpolate(ens, start, end, data, alphas=25, batchnorm=mode,
                                             bn_momentum=None)
            finally:
                _fastline.evaluate = saved

        a, b = run(True), run(False)
        for split in data:
            assert torch.allclose(a.loss[split], b.loss[split], rtol=1e-5, atol=1e-6)
        times = {True: float("inf"), False: float("inf")}
        for _ in range(repeats):
            for fast in times:
                t0 = time.perf_counter()
                run(fast)
                times[fast] = min(times[fast], time.perf_counter() - t0)
        name = f"batch norm, {mode}" if bn else "no batch norm"
        print(f"  {name:26s} fused {times[True] * 1e3:8.1f} ms   torch path "
              f"{times[False] * 1e3:8.1f} ms   ratio {times[False] / times[True]:5.1f} x")


if __name__ == "__main__":
    main()
