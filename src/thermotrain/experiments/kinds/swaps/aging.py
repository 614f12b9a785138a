"""Study ``aging``: DEEP-GLASS's aging protocol (docs/science.md §10) sized for this machine —
MNIST,
Linear → ReLU → Linear → sigmoid, MSE to one-hot, hidden width small vs large, SGD with
momentum and BAOAB at a small temperature; Δ(t_w, t_w + t) vs t for several t_w."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .... import BAOAB
from ....data import Minibatcher
from ....models import MLP, ensemble_accuracy
from ....swaps import Aging, log_spaced_times
from ....training import train
from .. import RunContext
from . import common

N = common.Number
SCHEMA = {
    "data": {"kind": ("mnist", "fashion-mnist"), "n_train": int, "n_test": int},
    "model": {"widths": list, "seeds": int},
    "training": {"steps": int, "lr": N, "batch_size": int, "momentum": N,
                 "optimizers": list},
    "langevin": {"temperature": N},
    "aging": {"waiting_times": int, "lags": int},
}


def check(spec: dict[str, Any]) -> None:
    common.validate(spec, SCHEMA)
    common.positive(spec, "data.n_train", "data.n_test", "model.widths", "model.seeds",
                    "training.steps", "training.lr", "training.batch_size",
                    "aging.waiting_times", "aging.lags")
    bad = [o for o in spec["training"].get("optimizers", ["sgd", "baoab"])
           if o not in ("sgd", "baoab")]
    if bad:
        raise common.ConfigError(f"{spec['_file']}: training.optimizers: unknown optimizer "
                                 f"{bad[0]!r} (allowed: sgd, baoab)")
    mu = spec["training"]["momentum"]
    if not 0 < mu < 1:
        raise common.ConfigError(f"{spec['_file']}: training.momentum must be in (0, 1), "
                                 f"got {mu!r}")
    if spec["training"]["steps"] < 40:
        raise common.ConfigError(f"{spec['_file']}: training.steps must be >= 40 (waiting "
                                 f"times start at 10), got {spec['training']['steps']!r}")


def _cell(spec: dict[str, Any], data: tuple, width: int, method: str) -> dict[str, Any]:
    xtr, ytr, xte, yte = data
    tr, k = spec["training"], spec["model"]["seeds"]
    net = MLP([xtr.shape[1], width, 10], ensemble=k, seed=0)
    onehot = torch.eye(10)
    if method == "sgd":
        opt: Any = torch.optim.SGD(net.parameters(), lr=tr["lr"], momentum=tr["momentum"])
    else:  # docs/conventions.md: SGD(η, μ) ↔ BAOAB(h = √(2η/(1+μ)), γ = −ln μ / h)
        h = math.sqrt(2 * tr["lr"] / (1 + tr["momentum"]))
        opt = BAOAB(net.parameters(), lr=h, friction=-math.log(tr["momentum"]) / h,
                    temperature=spec["langevin"]["temperature"], ensemble_dim=0, seed=0,
                    rng="philox")

    def gradient(idx: torch.Tensor) -> torch.Tensor:
        net.zero_grad(set_to_none=True)
        out = torch.sigmoid(net(xtr[idx]))
        losses = (out - onehot[ytr[idx]]).square().mean(dim=(1, 2))
        losses.sum().backward()
        return losses.detach()

    def evaluate(model: torch.nn.Module) -> dict[str, dict[str, torch.Tensor]]:
        res = {}
        for split, (x, y) in (("train", (xtr[:10_000], ytr[:10_000])), ("test", (xte, yte))):
            logits = model(x)
            res[split] = {"loss": (torch.sigmoid(logits) - onehot[y]).square().mean(dim=(1, 2)),
                          "accuracy": ensemble_accuracy(logits, y)}
        return res

    steps = tr["steps"]
    ag = spec["aging"]
    half = steps // 2
    aging = Aging(log_spaced_times(10, half, ag["waiting_times"]),
                  log_spaced_times(1, half, ag["lags"]))
    batcher = Minibatcher(xtr.shape[0], tr["batch_size"], seed=0, ensemble=k)
    evals = sorted({0, *log_spaced_times(10, steps, 8)})
    state = train(net, opt, batcher, steps=steps, x_train=xtr, y_train=ytr, gradient=gradient,
                  hooks=[aging], evaluate=evaluate, eval_steps=evals, study=spec["name"],
                  method=f"{method}-m{width}", handle_signals=False)
    frame = aging.frame()
    frame.insert(0, "method", f"{method}-m{width}")
    rows = [r for r in common.rows_of(state) if not r[5].startswith("aging_")]
    final = {r[5]: [] for r in rows if r[3] == steps and r[4] == "test"}
    for r in rows:
        if r[3] == steps and r[4] == "test":
            final[r[5]].append(r[6])
    return {"method": method, "width": width, "rows": rows,
            "aging": frame.to_dict(orient="list"), "test": final,
            "spread": _spreads(frame)}


def _spreads(frame: Any) -> dict[str, list[float]]:
    """Collapse measure per member: mean over common lags t of |ln Δ(t_w, t) − ln Δ(t_w', t)|
    for the first two and the last two waiting times (0 = the curves coincide)."""
    d = frame[frame.layer == -1]
    tws = sorted(d.t_w.unique())
    out: dict[str, list[float]] = {}
    for label, (a, b) in (("early", tws[:2]), ("late", tws[-2:])):
        vals = []
        for _, g in d.groupby("member"):
            pa = g[g.t_w == a].set_index("t").msd
            pb = g[g.t_w == b].set_index("t").msd
            common_t = pa.index.intersection(pb.index)
            ratio = np.log(pa[common_t].to_numpy()) - np.log(pb[common_t].to_numpy())
            vals.append(float(np.abs(ratio).mean()))
        out[label] = vals
    return out


def _run(spec: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    import pandas as pd

    d = spec["data"]
    xtr, ytr, xte, yte = common.load_images(d["kind"], d["n_train"], d["n_test"], ctx.data_dir)
    data = (xtr.flatten(1), ytr, xte.flatten(1), yte)
    cells = common.Cells(ctx.out, ctx.resume)
    results, rows, frames = [], [], []
    for width in spec["model"]["widths"]:
        for method in spec["training"].get("optimizers", ["sgd", "baoab"]):
            ctx.say(f"aging: {method}, hidden width {width}")
            res = cells.run(f"{method}-m{width}", lambda w=width, m=method: _cell(spec, data,
                                                                                   w, m))
            rows += res.pop("rows")
            frames.append(pd.DataFrame(res.pop("aging")))
            results.append(res)
    common.write_metrics(ctx.out, rows)
    from ...run_folder import atomic_write_text

    atomic_write_text(ctx.out / "aging.csv", pd.concat(frames).to_csv(index=False))
    spread = {f"{r['method']}-m{r['width']}": {k: common.mean_se(v)
                                               for k, v in r["spread"].items()}
              for r in results}
    parts = [f"{name}: late-t_w spread {s['late'][0]:.3f} ± {s['late'][1]:.3f} (early "
             f"{s['early'][0]:.3f})" for name, s in spread.items()]
    summary = {"experiment": "aging", "name": spec["name"],
               "description": spec.get("description", ""), "paper": spec.get("paper", {}),
               "notes": spec.get("notes", []), "spread": spread,
               "test": {f"{r['method']}-m{r['width']}": r["test"] for r in results},
               "verdict": "mean |ln Δ ratio| between consecutive waiting-time curves; "
                          + "; ".join(parts),
               "seconds": sum(r.get("seconds", 0.0) for r in results)}
    return summary


run = common.study(check, _run)


def report(out: Path) -> Path:
    import pandas as pd

    summary = common.read_summary(out)
    path = Path(out) / "aging.csv"
    if not path.exists():
        raise common.ReportError(f"{path} is missing: run the study first")
    frame = pd.read_csv(path)
    frame = frame[frame.layer == -1]
    plt = common.plt()
    methods = list(summary["spread"])
    fig, axes = plt.subplots(1, len(methods), figsize=(4 * len(methods), 3.6), squeeze=False)
    for ax, name in zip(axes[0], methods, strict=True):
        d = frame[frame.method == name]
        cmap = plt.get_cmap("viridis")
        tws = sorted(d.t_w.unique())
        for i, tw in enumerate(tws):
            curve = d[d.t_w == tw].groupby("t").msd.mean()
            ax.loglog(curve.index, curve.to_numpy(), color=cmap(i / max(1, len(tws) - 1)),
                      label=f"t_w = {tw}")
        ax.set_title(name)
        ax.set_xlabel("t (steps)")
    axes[0][0].set_ylabel("Δ(t_w, t_w + t)")
    axes[0][-1].legend(fontsize=7)
    common.save_figure(fig, common.figure_path(out, "aging.png"))
    body = ["## Collapse of the Δ curves", "",
            "Spread = mean over common lags of |ln Δ(t_w, t) − ln Δ(t_w', t)| for the first two "
            "and the last two waiting times, mean ± s.e. over seeds (0: the curves collapse).",
            "", "| run | early spread | late spread | final test acc. |", "|---|---|---|---|"]
    for name, s in summary["spread"].items():
        acc = common.mean_se(summary["test"][name].get("accuracy", []))
        body.append(f"| {name} | {s['early'][0]:.3f} ± {s['early'][1]:.3f} | "
                    f"{s['late'][0]:.3f} ± {s['late'][1]:.3f} | {100 * acc[0]:.1f} % |")
    body += ["", "![aging](figures/aging.png)"]
    return common.write_report(out, f"aging: {summary['name']}", summary, body)


def table(summary: dict[str, Any]) -> str:
    return "\n".join(f"{name:14s} spread early {s['early'][0]:.3f} late {s['late'][0]:.3f}"
                     for name, s in summary["spread"].items())
