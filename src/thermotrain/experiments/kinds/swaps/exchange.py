"""Study ``replica-exchange``: a ladder of BAOAB temperatures on the 4-turn spiral with and
without exchanges, against AdLaLa; plus the exact 1-D double-well check (docs/science.md §9)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import integrate

from .... import BAOAB, AdLaLa
from ....data import Minibatcher
from ....models import MLP
from ....swaps import ReplicaExchange
from ....training import train
from .. import RunContext
from . import common

N = common.Number
SCHEMA = {
    "data": {"n_train": int, "n_test": int, "turns": N, "seed": int},
    "model": {"hidden": int},
    "sampler": {"lr": N, "friction": N, "batch_size": int},
    "ladder": {"temperatures": list, "ladders": int, "every": int},
    "training": {"steps": int, "eval_every": int},
    "adlala": {"lr": N, "friction": N, "temperature": N, "noise": N, "coupling": N},
    "double_well": {"barrier": N, "temperatures": list, "ladders": int, "sweeps": int,
                    "burn_in": int, "lr": N, "friction": N},
}


def check(spec: dict[str, Any]) -> None:
    common.validate(spec, SCHEMA)
    common.positive(spec, "data.n_train", "data.n_test", "model.hidden", "sampler.lr",
                    "sampler.batch_size", "ladder.temperatures", "ladder.ladders",
                    "ladder.every", "training.steps", "training.eval_every",
                    "double_well.temperatures", "double_well.ladders", "double_well.sweeps")
    for key in ("ladder", "double_well"):
        t = spec[key]["temperatures"]
        if len(t) < 2 or any(b <= a for a, b in zip(t, t[1:], strict=False)):
            raise common.ConfigError(f"{spec['_file']}: {key}.temperatures must be >= 2 "
                                     f"strictly increasing values, got {t!r}")


# ---------------------------------------------------------------------- the spiral ladder
def _spiral_arm(spec: dict[str, Any], data: tuple, arm: str) -> dict[str, Any]:
    xtr, ytr, xte, yte = data
    lad, tr = spec["ladder"], spec["training"]
    temps = torch.tensor([lad["temperatures"]] * lad["ladders"], dtype=torch.float64)
    k = temps.numel() if arm != "adlala" else lad["ladders"]
    net = MLP([2, spec["model"]["hidden"], 1], ensemble=k, seed=0)
    hooks: list[Any] = []
    if arm == "adlala":
        a = spec["adlala"]
        opt = AdLaLa(net, lr=a["lr"], friction=a["friction"],
                     temperature=(a["temperature"], a["temperature"]), noise=a["noise"],
                     coupling=a["coupling"], ensemble_dim=0, seed=0, rng="philox")
    else:
        s = spec["sampler"]
        opt = BAOAB(net.parameters(), lr=s["lr"], friction=s["friction"],
                    temperature=temps.reshape(-1).float(), ensemble_dim=0, seed=0,
                    rng="philox")
        if arm == "exchange":
            hooks.append(ReplicaExchange(opt, temps, every=lad["every"], seed=0))
    batcher = Minibatcher(xtr.shape[0], spec["sampler"]["batch_size"], seed=0, ensemble=k)
    steps = tr["steps"]
    evals = sorted({*range(0, steps + 1, tr["eval_every"]), steps})
    state = train(net, opt, batcher, steps=steps, x_train=xtr, y_train=ytr, hooks=hooks,
                  evaluate=common.evaluator({"train": (xtr, ytr), "test": (xte, yte)}),
                  eval_steps=evals, study=spec["name"], method=arm, handle_signals=False)
    final = {r[2]: r[6] for r in state.rows
             if r[3] == steps and r[4] == "test" and r[5] == "accuracy"}
    acc = torch.tensor([final[i] for i in range(k)])
    out: dict[str, Any] = {"arm": arm, "rows": common.rows_of(state),
                           "final_test_accuracy": acc.tolist()}
    if arm == "adlala":
        out["coldest"] = acc.tolist()
    else:
        grid = acc.reshape(temps.shape)
        out["coldest"] = grid[:, 0].tolist()
        out["best_rung"] = grid.max(1).values.tolist()
        out["by_rung"] = grid.mean(0).tolist()
    if hooks:
        rex = hooks[0]
        out["acceptance"] = rex.acceptance.mean(0).tolist()
        out["round_trips"] = rex.round_trips.tolist()
    return out


# ---------------------------------------------------------------------- the double well
def _exact(barrier: float, temp: float) -> dict[str, float]:
    def dens(x: float) -> float:
        return float(np.exp(-barrier * (x * x - 1) ** 2 / temp))

    z = integrate.quad(dens, -4, 4, points=[-1, 1])[0]
    return {"x2": integrate.quad(lambda x: x * x * dens(x), -4, 4, points=[-1, 1])[0] / z}


def _double_well(spec: dict[str, Any], sampler: str) -> dict[str, Any]:
    """All members start in the right well; ``metropolis``: random-walk Metropolis (exact for
    each rung), exchanges every sweep; ``baoab``: the library's BAOAB with per-member
    temperatures (O(h²) bias), exchanges every 10 steps."""
    dw = spec["double_well"]
    barrier, ladders = float(dw["barrier"]), dw["ladders"]
    temps = torch.tensor([dw["temperatures"]] * ladders, dtype=torch.float64)
    k, t_member = temps.numel(), temps.reshape(-1)
    theta = torch.ones(k, 1, dtype=torch.float64, requires_grad=True)

    def u() -> torch.Tensor:
        return barrier * (theta[:, 0] ** 2 - 1) ** 2

    gen = torch.Generator().manual_seed(0)
    opt = None
    if sampler == "baoab":
        opt = BAOAB([theta], lr=dw["lr"], friction=dw["friction"], temperature=t_member,
                    ensemble_dim=0, seed=0)
    rex = ReplicaExchange(opt if opt is not None else [theta], temps,
                          energy=lambda: u().detach(), seed=1)
    samples = []
    for sweep in range(dw["sweeps"]):
        if opt is None:
            with torch.no_grad():
                x = theta[:, 0]
                prop = x + 0.6 * t_member.sqrt() * torch.randn(k, generator=gen,
                                                               dtype=torch.float64)
                log_a = (barrier * (x**2 - 1) ** 2 - barrier * (prop**2 - 1) ** 2) / t_member
                take = torch.rand(k, generator=gen, dtype=torch.float64).log() < log_a
                x.copy_(torch.where(take, prop, x))
        else:
            opt.zero_grad()
            u().sum().backward()
            opt.step()
        if opt is None or sweep % 10 == 0:   # BAOAB: see docs/swaps.md (momentum rescaling)
            rex.step()
        if sweep >= dw["burn_in"]:
            samples.append(theta.detach()[:, 0].reshape(ladders, -1).clone())
    s = torch.stack(samples)                                    # (T, L, R)
    x2 = s.square().mean(0)                                     # (L, R) per-ladder means
    right = (s > 0).double().mean(0)
    hist = [np.histogram(s[:, :, r].reshape(-1).numpy(), bins=60, range=(-2, 2),
                         density=True)[0].tolist() for r in range(temps.shape[1])]
    return {"sampler": sampler,
            "x2": x2.mean(0).tolist(), "x2_se": (x2.std(0) / ladders**0.5).tolist(),
            "right": right.mean(0).tolist(), "right_se": (right.std(0) / ladders**0.5).tolist(),
            "exact_x2": [_exact(barrier, t)["x2"] for t in dw["temperatures"]],
            "acceptance": rex.acceptance.mean(0).tolist(),
            "round_trips": float(rex.round_trips.double().mean()), "hist": hist}


def _run(spec: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    cells = common.Cells(ctx.out, ctx.resume)
    wells = [cells.run(f"double-well-{s}", lambda s=s: _double_well(spec, s))
             for s in ("metropolis", "baoab")]
    data = common.spiral_data(spec)
    arms, rows = [], []
    for arm in ("exchange", "no-exchange", "adlala"):
        ctx.say(f"replica-exchange: {arm}")
        res = cells.run(arm, lambda a=arm: _spiral_arm(spec, data, a))
        rows += res.pop("rows")
        arms.append(res)
    common.write_metrics(ctx.out, rows)
    coldest = {a["arm"]: common.mean_se(a["coldest"]) for a in arms}
    ex, no, ad = coldest["exchange"], coldest["no-exchange"], coldest["adlala"]
    verdict = (f"coldest-rung test accuracy {100 * ex[0]:.1f} ± {100 * ex[1]:.1f} % with "
               f"exchange vs {100 * no[0]:.1f} ± {100 * no[1]:.1f} % without; AdLaLa "
               f"{100 * ad[0]:.1f} ± {100 * ad[1]:.1f} % (mean ± s.e. over ladders/seeds)")
    summary = {"experiment": "replica-exchange", "name": spec["name"],
               "description": spec.get("description", ""), "paper": spec.get("paper", {}),
               "notes": spec.get("notes", []), "temperatures": spec["ladder"]["temperatures"],
               "double_well_temperatures": spec["double_well"]["temperatures"],
               "coldest": coldest, "arms": arms, "double_well": wells, "verdict": verdict,
               "seconds": sum(c.get("seconds", 0.0) for c in arms + wells)}
    return summary


run = common.study(check, _run)


def report(out: Path) -> Path:
    summary = common.read_summary(out)
    metrics = common.read_metrics(out)
    plt = common.plt()
    # double well
    temps = summary["double_well_temperatures"]
    fig, axes = plt.subplots(1, len(temps), figsize=(3.2 * len(temps), 3), sharey=False)
    grid = np.linspace(-2, 2, 61)
    centres = 0.5 * (grid[1:] + grid[:-1])
    try:
        barrier = float(json.loads((Path(out) / "config.json").read_text())
                        ["double_well"]["barrier"])
    except (OSError, ValueError, KeyError, TypeError):
        raise common.ReportError(f"{out}/config.json is missing or corrupt") from None
    fine = np.linspace(-2, 2, 400)
    for r, (ax, t) in enumerate(zip(axes, temps, strict=True)):
        for well in summary["double_well"]:
            ax.step(centres, well["hist"][r], where="mid", label=well["sampler"])
        dens = np.exp(-barrier * (fine**2 - 1) ** 2 / t)
        ax.plot(fine, dens / np.trapezoid(dens, fine), "k--", lw=0.8, label="exact")
        ax.set_title(f"τ = {t:g}")
        ax.set_xlabel("θ")
    axes[0].legend(fontsize=8)
    common.save_figure(fig, common.figure_path(out, "double-well.png"))
    # spiral: coldest-member test accuracy over training
    fig, ax = plt.subplots(figsize=(6.5, 4))
    test = metrics[(metrics.split == "test") & (metrics.metric == "accuracy")]
    rungs = len(summary["temperatures"])
    for arm in ("exchange", "no-exchange", "adlala"):
        d = test[test.method == arm]
        if arm != "adlala":
            d = d[d.seed % rungs == 0]                      # rung 0 of each ladder
        curve = d.groupby("step").value.agg(["mean", "sem"])
        ax.errorbar(curve.index, curve["mean"], yerr=curve["sem"], label=arm, capsize=2)
    ax.set_xlabel("step")
    ax.set_ylabel("test accuracy (coldest rung)")
    ax.legend()
    common.save_figure(fig, common.figure_path(out, "spiral-coldest.png"))
    arms = {a["arm"]: a for a in summary["arms"]}
    body = ["## Spiral: coldest rung (mean ± s.e. over ladders)", "",
            "| arm | coldest test acc. | best rung | round trips per ladder |", "|---|---|---|---|"]
    for name, (m, s) in summary["coldest"].items():
        a = arms[name]
        best = common.mean_se(a["best_rung"]) if "best_rung" in a else (float("nan"),) * 2
        trips = np.mean(a["round_trips"]) if "round_trips" in a else float("nan")
        body.append(f"| {name} | {100 * m:.1f} ± {100 * s:.1f} % | {100 * best[0]:.1f} ± "
                    f"{100 * best[1]:.1f} % | {trips:.1f} |")
    if "acceptance" in arms.get("exchange", {}):
        body += ["", "Exchange acceptance per neighbour pair (τ_i, τ_i+1): " + ", ".join(
            f"{t:g}↔{t2:g}: {a:.2f}" for t, t2, a in zip(
                summary["temperatures"], summary["temperatures"][1:],
                arms["exchange"]["acceptance"], strict=False))]
    for name in ("exchange", "no-exchange"):
        body += ["", f"{name}, mean final test accuracy by rung: " + ", ".join(
            f"τ={t:g}: {100 * a:.1f} %" for t, a in zip(summary["temperatures"],
                                                         arms[name]["by_rung"], strict=True))]
    body += ["", "![coldest](figures/spiral-coldest.png)", "",
             "## Exact check: 1-D double well U = b(θ² − 1)²", "",
             "| sampler | τ | ⟨θ²⟩ measured | exact | P(θ > 0) (exact 0.5) |",
             "|---|---|---|---|---|"]
    for well in summary["double_well"]:
        for r, t in enumerate(temps):
            body.append(f"| {well['sampler']} | {t:g} | {well['x2'][r]:.4f} ± "
                        f"{well['x2_se'][r]:.4f} | {well['exact_x2'][r]:.4f} | "
                        f"{well['right'][r]:.3f} ± {well['right_se'][r]:.3f} |")
    body += ["", "![double well](figures/double-well.png)"]
    return common.write_report(out, f"replica-exchange: {summary['name']}", summary, body)


def table(summary: dict[str, Any]) -> str:
    return "\n".join(f"{arm:12s} coldest test acc {100 * m:5.1f} ± {100 * s:.1f} %"
                     for arm, (m, s) in summary["coldest"].items())
