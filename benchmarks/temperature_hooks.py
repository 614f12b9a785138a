"""Cost of the temperature monitors (thermotrain.thermo) in a training run, in one process.

Times :func:`thermotrain.training.train` of a 2-H-1 spiral-net ensemble with AdLaLa (the
paper's setting: 500 points, batch 25) without hooks (baseline) and with each monitor
recording every ``--every`` steps:

* ``kinetic``: :class:`~thermotrain.thermo.KineticTemperature` (‖p − k∇L‖² per group and
  member from the stored momenta and the step's gradient, no ``finalize()``);
* ``kinetic/finalize``: the previous implementation, for comparison (``finalize()`` then
  ``kinetic_temperature()``, a hook defined here);
* ``conf/batch/{forward,fd,hvp}``: :class:`~thermotrain.thermo.ConfigurationalTemperature`
  on the step's own minibatch (the default) with the one-sided (the default: one fused
  minibatch gradient), central (two) or double-backward Laplacian;
* ``conf/full/{fd,hvp}``: the same on the full training set (the exact-energy choice);
* ``conf/fd/subN``: central difference on a fixed subset of ``--subset`` points;
* ``kin+conf/batch/fd``: kinetic + configurational (minibatch, central difference).

Rounds interleave the arms (each round runs every arm for ``--steps`` steps) so load drifts
hit all alike; the statistics are the median and the minimum over rounds (the minimum is the
least disturbed by other processes on a shared machine), plus the median and quartiles of
the per-round ratios (arm over the baseline of the same round, the least sensitive to slow
load drifts). Times are the process's CPU time by default (``--clock wall`` for wall time):
on a shared machine it leaves out the time spent waiting for a core. Usage::

    python benchmarks/temperature_hooks.py [--rounds 15] [--steps 200] [--every 10]
        [--members 10] [--hidden 100] [--subset 25] [--threads 1] [--arms kinetic,...]

Target (issue 9): recording every 10 steps adds ≤ 10 % to a run. Measured 2 Dec 2026
00:11–00:15 UTC (``--rounds 30 --steps 500``, two runs; plain step 0.19 ms; docs/thermo.md):
kinetic 1.075–1.084; configurational on the minibatch, the default ``"forward"``
1.073–1.077, central ``"fd"`` 1.074–1.087 (the code of 1 Dec: 1.175 and 1.191); with
``--members 100``: 1.063 and 1.088 (before: 1.149, 1.180); ``"hvp"`` 1.81–1.83, full set
central 1.66–1.69.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from thermotrain import samplers, thermo
from thermotrain.data import Minibatcher, spirals
from thermotrain.models import MLP
from thermotrain.training import Hook, train


class FinalizeKinetic(Hook):
    """The former KineticTemperature: ``finalize()`` (the pending half kick applied to the
    optimizer state) then ``kinetic_temperature()``."""

    def __init__(self, every: int):
        self.every = every

    def after_gradient(self, state, losses) -> None:
        if state.step and state.step % self.every == 0:
            state.optimizer.finalize()
            for g, t in enumerate(state.optimizer.kinetic_temperature()):
                state.log(f"kinetic_temperature/group{g}", t)


def arms(every: int, subset: int) -> dict[str, list]:
    conf = thermo.ConfigurationalTemperature
    return {
        "baseline": lambda: [],
        "kinetic": lambda: [thermo.KineticTemperature(every=every)],
        "kinetic/finalize": lambda: [FinalizeKinetic(every)],
        "conf/batch/forward": lambda: [conf(every=every, laplacian="forward")],
        "conf/batch/fd": lambda: [conf(every=every, laplacian="fd")],
        "conf/batch/hvp": lambda: [conf(every=every, laplacian="hvp")],
        "conf/full/fd": lambda: [conf(every=every, laplacian="fd", data="full")],
        "conf/full/hvp": lambda: [conf(every=every, laplacian="hvp", data="full")],
        f"conf/fd/sub{subset}": lambda: [conf(every=every, laplacian="fd", subset=subset)],
        "kin+conf/batch/fd": lambda: [thermo.KineticTemperature(every=every),
                                      conf(every=every, laplacian="fd")],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--hidden", type=int, default=100)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--batch", type=int, default=25)
    ap.add_argument("--subset", type=int, default=25)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--arms", default="", help="comma-separated arm names (default: all)")
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                    help="cpu: this process's CPU time (not the time it waits for a core "
                         "on a shared machine; = wall time for one thread on an idle one)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x, y = spirals(args.n, turns=4, seed=0)
    setups = {}
    chosen = arms(args.every, args.subset)
    if args.arms:
        wanted = ["baseline", *(a for a in args.arms.split(",") if a != "baseline")]
        unknown = [a for a in wanted if a not in chosen]
        if unknown:
            raise SystemExit(f"unknown arm(s) {', '.join(unknown)}; choose from "
                             f"{', '.join(chosen)}")
        chosen = {a: chosen[a] for a in wanted}
    for name, make in chosen.items():
        model = MLP([2, args.hidden, 1], ensemble=args.members, seed=0)
        opt = samplers.AdLaLa(model, ensemble_dim=0, seed=0, rng="philox")
        batcher = Minibatcher(args.n, args.batch, seed=0, ensemble=args.members)
        setups[name] = (model, opt, batcher, make)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    times: dict[str, list[float]] = {name: [] for name in setups}
    for r in range(args.rounds + 1):  # round 0 is a warm-up
        for name, (model, opt, batcher, make) in setups.items():
            hooks = make()
            t = clock()
            state = train(model, opt, batcher, steps=args.steps, x_train=x, y_train=y,
                          hooks=hooks, handle_signals=False)
            len(state.rows)  # rows are built when read (as a logger or checkpoint would)
            if r:
                times[name].append((clock() - t) / args.steps)
    base = statistics.median(times["baseline"])
    base_min = min(times["baseline"])
    print(f"AdLaLa, {args.members} members of 2-{args.hidden}-1, {args.n} points, batch "
          f"{args.batch}, record every {args.every} steps, {args.threads} thread(s); "
          f"{args.rounds} rounds × {args.steps} steps, {args.clock} time")
    print(f"{'arm':<20} {'median ms/step':>15} {'ratio':>7} {'min ms/step':>12} {'ratio':>7} "
          f"{'per-round ratio: median [quartiles]':>36}")
    for name, ts in times.items():
        med, low = statistics.median(ts), min(ts)
        per = sorted(t / b for t, b in zip(ts, times["baseline"], strict=True))
        q = statistics.quantiles(per, n=4) if len(per) > 1 else [per[0]] * 3
        print(f"{name:<20} {med * 1e3:15.3f} {med / base:7.3f} {low * 1e3:12.3f} "
              f"{low / base_min:7.3f} {q[1]:20.3f} [{q[0]:.3f}, {q[2]:.3f}]")


if __name__ == "__main__":
    main()
