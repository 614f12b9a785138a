"""Study ``swap-speedup``: the poster's claim ("up to 2× faster training") measured — loss and
accuracy vs iteration with each swap protocol vs none, seeds as ensembles, an MLP and a small
CNN, on Fashion-MNIST (pixel and weight swaps) and colourised MNIST (channel swaps)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ....data import Minibatcher
from ....models import CNN, MLP
from ....swaps import DATA_KINDS, KINDS, DataSwap, ParameterSwap
from ....training import train
from .. import RunContext
from . import common

N = common.Number
PROTOCOL = {"swap": ("none", "data", "parameter"), "kind": str, "rate": N, "images": int,
            "pairs": int, "every": int, "acceptance": ("always", "greedy"), "layer": int,
            "subset": int}
SCHEMA = {
    "training": {"steps": int, "lr": N, "momentum": N, "batch_size": int, "seeds": int,
                 "eval_every": int, "n_eval_train": int},
    "models": {"mlp": {"hidden": int}, "cnn": {"channels": list, "kernel_size": int}},
    "datasets": dict,
    "protocols": dict,
}
DATASET = {"data": ("fashion-mnist", "colorized-mnist", "mnist"), "n_train": int,
           "n_test": int, "target": N, "protocols": list, "models": list}


def check(spec: dict[str, Any]) -> None:
    common.validate(spec, SCHEMA)
    file = spec["_file"]
    common.positive(spec, "training.steps", "training.lr", "training.batch_size",
                    "training.seeds", "training.eval_every", "training.n_eval_train")
    protocols = spec["protocols"]
    for name, p in protocols.items():
        common.validate(p, PROTOCOL, f"{file}|protocols.{name}.")
        kinds = DATA_KINDS if p.get("swap") == "data" else KINDS
        if p.get("swap", "none") != "none" and p.get("kind") not in kinds:
            raise common.ConfigError(f"{file}: protocols.{name}.kind must be one of "
                                     f"{', '.join(kinds)}, got {p.get('kind')!r}")
    for name, d in spec["datasets"].items():
        common.validate(d, DATASET, f"{file}|datasets.{name}.")
        if d.get("data", name) not in ("fashion-mnist", "colorized-mnist", "mnist"):
            raise common.ConfigError(f"{file}: datasets.{name}: unknown data set; name it "
                                     "fashion-mnist, colorized-mnist or mnist, or set data =")
        for p in d["protocols"]:
            if p not in protocols:
                raise common.ConfigError(f"{file}: datasets.{name}.protocols: {p!r} is not "
                                         f"defined in [protocols] ({', '.join(protocols)})")
        for m in d.get("models", ["mlp", "cnn"]):
            if m not in spec["models"]:
                raise common.ConfigError(f"{file}: datasets.{name}.models: unknown model {m!r}")


def _hook(p: dict[str, Any], net: torch.nn.Module, image_shape: tuple, seed: int) -> Any:
    if p.get("swap", "none") == "none":
        return None
    if p["swap"] == "data":
        return DataSwap(p["kind"], rate=p.get("rate", 1.0), images=p.get("images", 1),
                        pairs=p.get("pairs", 1), image_shape=image_shape, seed=seed)
    layer = p.get("layer", 0)
    return ParameterSwap(net, kind=p["kind"], layer=(layer, layer + 1)
                         if p["kind"] == "inter-layer" else layer, every=p.get("every", 10),
                         acceptance=p.get("acceptance", "always"), subset=p.get("subset"),
                         pairs=p.get("pairs", 1), seed=seed)


def _cell(spec: dict[str, Any], data: tuple, model: str, protocol: str) -> dict[str, Any]:
    xtr, ytr, xte, yte = data
    tr, k = spec["training"], spec["training"]["seeds"]
    shape = tuple(xtr.shape[1:])
    if model == "mlp":
        net: torch.nn.Module = MLP([int(np.prod(shape)), spec["models"]["mlp"]["hidden"], 10],
                                   ensemble=k, seed=0)
        xtr, xte = xtr.flatten(1), xte.flatten(1)
    else:
        c = spec["models"]["cnn"]
        net = CNN(shape, 10, channels=c["channels"], kernel_size=c["kernel_size"], ensemble=k,
                  seed=0)
    opt = torch.optim.SGD(net.parameters(), lr=tr["lr"], momentum=tr["momentum"])
    hook = _hook(spec["protocols"][protocol], net, shape, seed=1)
    n_eval = tr["n_eval_train"]
    evaluate = common.evaluator({"train": (xtr[:n_eval], ytr[:n_eval]), "test": (xte, yte)})
    steps = tr["steps"]
    evals = sorted({*range(0, steps + 1, tr["eval_every"]), steps})
    state = train(net, opt, Minibatcher(xtr.shape[0], tr["batch_size"], seed=0, ensemble=k),
                  steps=steps, x_train=xtr, y_train=ytr, hooks=[hook] if hook else [],
                  evaluate=evaluate, eval_steps=evals, study=spec["name"],
                  method=f"{model}/{protocol}", handle_signals=False)
    curve = {}
    for r in state.rows:
        if r[4] == "test" and r[5] == "accuracy":
            curve.setdefault(r[3], [0.0] * k)[r[2]] = r[6]
    out = {"model": model, "protocol": protocol, "rows": common.rows_of(state),
           "test_accuracy": {str(s): v for s, v in sorted(curve.items())}}
    if isinstance(hook, ParameterSwap):
        out["acceptance"] = hook.acceptance_rate.tolist()
    return out


def time_to(curve: dict[str, list[float]], target: float, members: int) -> list[float]:
    """Per member, the first evaluation step with test accuracy ≥ target (inf: never)."""
    out = [math.inf] * members
    for step, values in sorted(curve.items(), key=lambda kv: int(kv[0])):
        for m, v in enumerate(values):
            if v >= target and out[m] == math.inf:
                out[m] = float(step)
    return out


def _ratios(base: list[float], other: list[float]) -> dict[str, Any]:
    """Speed-up T_none / T_protocol per seed (paired: same init and batches); geometric mean
    ± s.e. of the log ratio over the seeds where both reached the target."""
    pairs = [(b, o) for b, o in zip(base, other, strict=True) if math.isfinite(b)
             and math.isfinite(o) and o > 0]
    logs = [math.log(b / o) for b, o in pairs]
    m, se = common.mean_se(logs)
    return {"speedup": math.exp(m) if logs else float("nan"),
            "low": math.exp(m - se) if len(logs) > 1 else float("nan"),
            "high": math.exp(m + se) if len(logs) > 1 else float("nan"),
            "reached": sum(math.isfinite(o) for o in other), "both": len(pairs)}


def _mean_loss(rows: list[list[Any]], members: int) -> list[float]:
    """Per member, the train loss averaged over the evaluation steps (the area under the
    loss curve / its length): lower = trained faster on average."""
    sums, counts = [0.0] * members, [0] * members
    for r in rows:
        if r[4] == "train" and r[5] == "loss":
            sums[r[2]] += r[6]
            counts[r[2]] += 1
    return [a / max(c, 1) for a, c in zip(sums, counts, strict=True)]


def _run(spec: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    cells = common.Cells(ctx.out, ctx.resume)
    k = spec["training"]["seeds"]
    rows, results = [], []
    for name, d in spec["datasets"].items():
        data = common.load_images(d.get("data", name), d["n_train"], d["n_test"], ctx.data_dir)
        for model in d.get("models", ["mlp", "cnn"]):
            base = None
            for protocol in d["protocols"]:
                ctx.say(f"swap-speedup: {name} {model} {protocol}")
                res = cells.run(f"{name}-{model}-{protocol}",
                                lambda m=model, p=protocol, d=data: _cell(spec, d, m, p))
                cell_rows = res.pop("rows")
                rows += [[r[0], f"{name}/{r[1]}", *r[2:]] for r in cell_rows]
                res["dataset"] = name
                res["time_to_target"] = time_to(res["test_accuracy"], d["target"], k)
                final = list(res["test_accuracy"].values())[-1]
                res["final_test_accuracy"] = common.mean_se(final)
                res["mean_train_loss"] = _mean_loss(cell_rows, k)
                if protocol == d["protocols"][0]:
                    base = (res["time_to_target"], res["mean_train_loss"], final)
                res["vs_first"] = _ratios(base[0], res["time_to_target"])
                res["loss_ratio"] = _ratios(base[1], res["mean_train_loss"])
                res["final_gain"] = common.mean_se([a - b for a, b in zip(final, base[2],
                                                                          strict=True)])
                results.append(res)
    common.write_metrics(ctx.out, rows)
    real = [r for r in results if r["protocol"] != spec["datasets"][r["dataset"]]["protocols"][0]
            and math.isfinite(r["vs_first"]["speedup"])]
    best = max(real, key=lambda r: r["vs_first"]["speedup"], default=None)
    verdict = "no protocol reached the target" if best is None else (
        f"best: {best['dataset']} {best['model']} {best['protocol']} "
        f"{best['vs_first']['speedup']:.2f}× (±1 s.e. {best['vs_first']['low']:.2f}–"
        f"{best['vs_first']['high']:.2f}); every ratio is in the table")
    others = [r for r in results
              if r["protocol"] != spec["datasets"][r["dataset"]]["protocols"][0]]
    ratios = [r["loss_ratio"]["speedup"] for r in others
              if math.isfinite(r["loss_ratio"]["speedup"])]
    if ratios:
        verdict += (f"; mean-train-loss ratios (none / protocol) {min(ratios):.3f}–"
                    f"{max(ratios):.3f}")
    summary = {"experiment": "swap-speedup", "name": spec["name"],
               "description": spec.get("description", ""), "paper": spec.get("paper", {}),
               "notes": spec.get("notes", []), "targets": {n: d["target"] for n, d in
                                                           spec["datasets"].items()},
               "cells": results, "verdict": verdict,
               "seconds": sum(r.get("seconds", 0.0) for r in results)}
    return summary


run = common.study(check, _run)


def report(out: Path) -> Path:
    summary = common.read_summary(out)
    metrics = common.read_metrics(out)
    plt = common.plt()
    groups = sorted({(c["dataset"], c["model"]) for c in summary["cells"]})
    fig, axes = plt.subplots(2, len(groups), figsize=(4.2 * len(groups), 7), squeeze=False)
    for j, (name, model) in enumerate(groups):
        for c in [c for c in summary["cells"] if (c["dataset"], c["model"]) == (name, model)]:
            d = metrics[metrics.method == f"{name}/{model}/{c['protocol']}"]
            for i, (split, metric) in enumerate((("train", "loss"), ("test", "accuracy"))):
                cur = d[(d.split == split) & (d.metric == metric)].groupby("step").value
                m, s = cur.mean(), cur.sem()
                axes[i][j].plot(m.index, m.to_numpy(), label=c["protocol"])
                axes[i][j].fill_between(m.index, (m - s).to_numpy(), (m + s).to_numpy(),
                                        alpha=0.2)
        axes[0][j].set_title(f"{name}, {model}")
        axes[0][j].set_yscale("log")
        axes[0][j].set_ylabel("train loss")
        axes[1][j].set_ylabel("test accuracy")
        axes[1][j].axhline(summary["targets"][name], color="k", lw=0.6, ls=":")
        axes[1][j].set_xlabel("step")
        axes[1][j].legend(fontsize=7)
    common.save_figure(fig, common.figure_path(out, "curves.png"))
    body = ["## Time to the target test accuracy", "",
            "Speed-up = T(no swaps) / T(protocol) per seed (same init and batches), geometric "
            "mean over the seeds where both reached the target, with ±1 s.e. of the log ratio;"
            " T = first evaluation step at or above the target.", "",
            "Loss ratio = mean train loss over the run without swaps / with (per seed, geometric "
            "mean ± 1 s.e.: > 1 = lower loss on average). Gain = final test accuracy minus "
            "the no-swap arm's, paired by seed (mean ± s.e.).", "",
            "| data | model | protocol | target | reached | speed-up | loss ratio | "
            "final test acc. | gain |", "|---|---|---|---|---|---|---|---|---|"]
    for c in summary["cells"]:
        v, (fm, fs) = c["vs_first"], c["final_test_accuracy"]
        lr = c.get("loss_ratio", {"speedup": float("nan"), "low": float("nan"),
                                  "high": float("nan")})
        gm, gs = c.get("final_gain", (float("nan"), float("nan")))
        body.append(f"| {c['dataset']} | {c['model']} | {c['protocol']} | "
                    f"{summary['targets'][c['dataset']]:.2f} | {v['reached']} | "
                    f"{v['speedup']:.2f} ({v['low']:.2f}–{v['high']:.2f}) | "
                    f"{lr['speedup']:.3f} ({lr['low']:.3f}–{lr['high']:.3f}) | "
                    f"{100 * fm:.1f} ± {100 * fs:.1f} % | {100 * gm:+.1f} ± {100 * gs:.1f} |")
    body += ["", "![curves](figures/curves.png)"]
    return common.write_report(out, f"swap-speedup: {summary['name']}", summary, body)


def table(summary: dict[str, Any]) -> str:
    return "\n".join(f"{c['dataset']:16s} {c['model']:4s} {c['protocol']:15s} speed-up "
                     f"{c['vs_first']['speedup']:.2f}  final test "
                     f"{100 * c['final_test_accuracy'][0]:.1f} %" for c in summary["cells"])
