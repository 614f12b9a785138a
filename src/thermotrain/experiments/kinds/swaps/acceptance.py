"""Study ``swap-acceptance``: Metropolis acceptance of every parameter-swap kind vs the
sampler's temperature on the spiral net (docs/science.md §9), with the unit swap's exact
symmetry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .... import BAOAB
from ....data import Minibatcher
from ....models import MLP
from ....swaps import KINDS, ParameterSwap
from ....training import train
from .. import RunContext
from . import common

SCHEMA = {
    "data": {"n_train": int, "n_test": int, "turns": common.Number, "seed": int},
    "model": {"hidden": int, "seeds": int},
    "sampler": {"lr": common.Number, "friction": common.Number, "batch_size": int},
    "protocol": {"temperatures": list, "warmup": int, "steps": int, "every": int,
                 "moves": list, "layer": int},
}


def check(spec: dict[str, Any]) -> None:
    common.validate(spec, SCHEMA)
    common.positive(spec, "data.n_train", "data.n_test", "model.hidden", "model.seeds",
                    "sampler.lr", "sampler.batch_size", "protocol.steps", "protocol.every")
    file = spec["_file"]
    temps = spec["protocol"]["temperatures"]
    if not temps or not all(isinstance(t, common.Number) and not isinstance(t, bool) and t >= 0
                            for t in temps):
        raise common.ConfigError(f"{file}: protocol.temperatures must be numbers >= 0, "
                                 f"got {temps!r}")
    bad = [m for m in spec["protocol"]["moves"] if m not in KINDS]
    if bad:
        raise common.ConfigError(f"{file}: protocol.moves: unknown move {bad[0]!r} (allowed: "
                                 f"{', '.join(KINDS)})")


def _cell(spec: dict[str, Any], temp: float, data: tuple) -> dict[str, Any]:
    xtr, ytr, xte, yte = data
    m, s, pr = spec["model"], spec["sampler"], spec["protocol"]
    k = m["seeds"]
    net = MLP([2, m["hidden"], 1], ensemble=k, seed=0)
    opt = BAOAB(net.parameters(), lr=s["lr"], friction=s.get("friction", 1.0),
                temperature=temp, ensemble_dim=0, seed=0, rng="philox")
    batcher = Minibatcher(xtr.shape[0], s["batch_size"], seed=0, ensemble=k)
    train(net, opt, batcher, steps=pr["warmup"], x_train=xtr, y_train=ytr,
          handle_signals=False)
    layer = pr.get("layer", 0)
    moves = [ParameterSwap(net, kind=kind, layer=(layer, layer + 1) if kind == "inter-layer"
                           else layer, every=pr["every"], acceptance="metropolis",
                           seed=i + 1, name=kind)
             for i, kind in enumerate(pr["moves"])]
    evaluate = common.evaluator({"train": (xtr, ytr), "test": (xte, yte)})
    state = train(net, opt, batcher, steps=pr["steps"], x_train=xtr, y_train=ytr, hooks=moves,
                  evaluate=evaluate, eval_steps=[0, pr["steps"]], study=spec["name"],
                  method=f"tau={temp:g}", handle_signals=False)
    result: dict[str, Any] = {"temperature": temp, "moves": {}}
    for move in moves:
        deltas = [r[6] for r in state.rows if r[5] == f"{move.name}/delta_energy"]
        result["moves"][move.name] = {
            "acceptance": move.acceptance_rate.tolist(), "proposed": move.proposed,
            "max_abs_delta": max((abs(d) for d in deltas), default=float("nan")),
            "median_abs_delta": sorted(abs(d) for d in deltas)[len(deltas) // 2]
            if deltas else float("nan")}
    final = {(r[4], r[5]): [] for r in state.rows if r[3] == pr["steps"]}
    for r in state.rows:
        if r[3] == pr["steps"] and (r[4], r[5]) in final:
            final[(r[4], r[5])].append(r[6])
    result["final"] = {f"{a}_{b}": v for (a, b), v in final.items() if b in ("loss", "accuracy")}
    result["rows"] = common.rows_of(state)
    return result


def _run(spec: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    data = common.spiral_data(spec)
    cells = common.Cells(ctx.out, ctx.resume)
    results, rows = [], []
    for temp in spec["protocol"]["temperatures"]:
        ctx.say(f"swap-acceptance: tau = {temp:g}")
        res = cells.run(f"tau={temp:g}", lambda t=temp: _cell(spec, float(t), data))
        rows += res.pop("rows")
        results.append(res)
    common.write_metrics(ctx.out, rows)
    table = {kind: {f"{r['temperature']:g}": common.mean_se(r["moves"][kind]["acceptance"])
                    for r in results} for kind in spec["protocol"]["moves"]}
    units = [r["moves"]["units"] for r in results if "units" in r["moves"]]
    real = [kind for kind in spec["protocol"]["moves"] if kind != "units"]
    lo, hi = results[0], results[-1]

    def mean_real(res: dict[str, Any]) -> float:
        return sum(common.mean_se(res["moves"][k]["acceptance"])[0] for k in real) / len(real)

    parts = []
    if real:
        parts.append(f"real moves: mean acceptance {mean_real(lo):.3f} at τ = "
                     f"{lo['temperature']:g}, {mean_real(hi):.3f} at τ = {hi['temperature']:g}")
    if units:
        worst = max(u["max_abs_delta"] for u in units)
        low = min(min(u["acceptance"]) for u in units)
        parts.append(f"unit swaps: acceptance >= {low:.4f} at every temperature, "
                     f"|ΔL| <= {worst:.1e} (float32 rounding)")
    verdict = "; ".join(parts)
    summary = {"experiment": "swap-acceptance", "name": spec["name"],
               "description": spec.get("description", ""), "paper": spec.get("paper", {}),
               "notes": spec.get("notes", []), "acceptance": table, "cells": results,
               "verdict": verdict, "seconds": sum(r.get("seconds", 0.0) for r in results)}
    return summary


run = common.study(check, _run)


def report(out: Path) -> Path:
    summary = common.read_summary(out)
    plt = common.plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    temps = [c["temperature"] for c in summary["cells"]]
    shown = [t if t > 0 else min([x for x in temps if x > 0] or [1e-8]) / 10 for t in temps]
    for kind, by_t in summary["acceptance"].items():
        means = [by_t[f"{t:g}"][0] for t in temps]
        errs = [by_t[f"{t:g}"][1] for t in temps]
        ax.errorbar(shown, means, yerr=errs, marker="o", capsize=3, label=kind)
    ax.set_xscale("log")
    label = "sampler temperature τ (Metropolis at τ)"
    if 0 in temps:
        label += f"; τ = 0 (greedy) drawn at {shown[temps.index(0)]:g}"
    ax.set_xlabel(label)
    ax.set_ylabel("acceptance rate")
    ax.set_title("Parameter swaps on the 4-turn spiral net (full-batch energy)")
    ax.legend(fontsize=8, ncol=2)
    path = common.figure_path(out, "acceptance.png")
    common.save_figure(fig, path)
    kinds = list(summary["acceptance"])
    body = ["## Acceptance (mean ± s.e. over members)", "",
            "| move | " + " | ".join(f"τ = {t:g}" for t in temps) + " |",
            "|---|" + "---|" * len(temps)]
    for kind in kinds:
        cells = [summary["acceptance"][kind][f"{t:g}"] for t in temps]
        body.append(f"| {kind} | " + " | ".join(f"{m:.3f} ± {s:.3f}" for m, s in cells) + " |")
    body += ["", "| move | median \\|ΔL\\| | max \\|ΔL\\| |", "|---|---|---|"]
    for kind in kinds:
        med = [c["moves"][kind]["median_abs_delta"] for c in summary["cells"]]
        mx = [c["moves"][kind]["max_abs_delta"] for c in summary["cells"]]
        body.append(f"| {kind} | {sorted(med)[len(med) // 2]:.2e} | {max(mx):.2e} |")
    body += ["", "![acceptance](figures/acceptance.png)"]
    return common.write_report(out, f"swap-acceptance: {summary['name']}", summary, body)


def table(summary: dict[str, Any]) -> str:
    temps = [c["temperature"] for c in summary["cells"]]
    lines = ["move".ljust(12) + "".join(f"{t:>10g}" for t in temps)]
    for kind, by_t in summary["acceptance"].items():
        lines.append(kind.ljust(12) + "".join(f"{by_t[f'{t:g}'][0]:>10.3f}" for t in temps))
    return "\n".join(lines)
