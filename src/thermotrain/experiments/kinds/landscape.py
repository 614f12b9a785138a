r"""The ``mli`` experiment: monotonic linear interpolation across a training grid (docs/science.md
§8).

A study ``experiment = "mli"`` trains, for every cell (optimizer × learning rate × batch norm
× distance reward) of its ``[grid]``, the ``training.seeds`` seeds of an MLP as one ensemble
(:func:`thermotrain.training.train`, batch 512, inputs in [0, 1]), then measures each run
with :mod:`thermotrain.landscape`: the loss along :math:`(1-\alpha)\theta_0+\alpha\theta_T`
on the train and test sets, :math:`\Delta_{\min}`, the distance
:math:`\lVert\theta_T-\theta_0\rVert/\lVert\theta_0\rVert` and the Gauss length. Per cell:
the fraction of non-monotone runs (:math:`\Delta_{\min}` > ``mli.tolerance``, among the runs
whose final train loss is ≤ ``mli.trained_loss``), the mean :math:`\Delta_{\min}` of the
non-monotone ones, mean distance and Gauss length. Studies: ``mli-mnist``,
``mli-fashion`` (the paper's protocol) and ``mli-far`` (weights pushed far from the
initialization by large learning rates and a distance reward). The ``landscape-spiral``
experiment lives in :mod:`._landscape_spiral` and is registered here.

Run folder: ``config.json``, ``stages/<cell>.json`` (one per finished cell: train + measure,
reused by ``--resume``, :mod:`._stages`), ``runs.csv`` (one row per run and metric, long
format), ``lines.csv`` (the interpolation curves, long format), ``summary.json``,
``report.md``, ``figures/``.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ... import landscape
from ...models import MLP
from ..config import ConfigError
from . import Experiment, RunContext, prepare_folder, register, write_json
from . import _landscape_common as common
from . import _landscape_spiral as spiral
from ._stages import Stages

SCHEMA = {
    **common.COMMON,
    "data": {"dataset": ("mnist", "fashion-mnist"), "n_train": int, "n_test": int},
    "model": {"hidden": list, "activation": ("relu", "tanh")},
    "training": {"epochs": int, "batch_size": int, "seeds": int, "seed": common.NUMBER},
    "grid": {"batchnorm": common.BOOLS, "reward": common.NUMBERS,
             "lr": {"sgd": common.NUMBERS, "adam": common.NUMBERS}},
    "mli": {"alphas": int, "tolerance": common.NUMBER, "trained_loss": common.NUMBER,
            "batchnorm_mode": tuple(landscape.BATCHNORM_MODES),
            "bn_momentum": ("ema", "cumulative"), "gauss_inputs": int,
            "gauss_alphas": int},
}
REQUIRED = ("data.dataset", "data.n_train", "data.n_test", "model.hidden", "training.epochs",
            "training.batch_size", "training.seeds", "grid.lr")


def check(spec: dict[str, Any]) -> None:
    file = spec.get("_file", "<study>")
    common.validate(spec, SCHEMA, file)
    common.require(spec, file, *REQUIRED)
    hidden = spec["model"]["hidden"]
    if not hidden or not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1
                             for h in hidden):
        raise ConfigError(f"{file}: model.hidden must be a list of ints >= 1, got {hidden!r}")
    if not spec["grid"]["lr"]:
        raise ConfigError(f"{file}: grid.lr must name at least one optimizer (sgd, adam)")


def cells(spec: dict[str, Any]) -> list[dict[str, Any]]:
    grid = spec["grid"]
    out = []
    for opt, lrs in grid["lr"].items():
        for lr, bn, reward in itertools.product(lrs, grid.get("batchnorm", [False]),
                                                grid.get("reward", [0.0])):
            label = f"{opt}-lr{lr:g}" + ("-bn" if bn else "") + (f"-r{reward:g}" if reward
                                                                  else "")
            out.append({"label": label, "optimizer": opt, "lr": float(lr), "batchnorm": bn,
                        "reward": float(reward)})
    return out


def _run_cell(spec: dict[str, Any], cell: dict[str, Any], data: tuple, seeds: list[int]
              ) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    xtr, ytr, xte, yte = data
    tr, mli = spec["training"], spec.get("mli", {})
    widths = [xtr.shape[1], *spec["model"]["hidden"], 10]
    model = MLP(widths, activation=spec["model"].get("activation", "relu"),
                batchnorm=cell["batchnorm"], ensemble=len(seeds), seed=seeds)
    start = common.clone_state(model)
    steps = tr["epochs"] * (xtr.shape[0] // tr["batch_size"])
    t0 = time.perf_counter()
    opt = common.make_optimizer(cell["optimizer"], model, cell["lr"], seeds)
    common.train_ensemble(model, opt, xtr, ytr, steps=steps, batch_size=tr["batch_size"],
                          seeds=seeds, reward=cell["reward"], study=spec["name"],
                          method=cell["label"])
    train_seconds = time.perf_counter() - t0
    end = common.clone_state(model)
    final_loss, final_acc = common.evaluate(model, xtr, ytr)
    test_loss, test_acc = common.evaluate(model, xte, yte)
    mode = mli.get("batchnorm_mode", "recompute")
    bn_m = 0.1 if mli.get("bn_momentum", "ema") == "ema" else None
    line = landscape.interpolate(model, start, end, {"train": (xtr, ytr), "test": (xte, yte)},
                                 alphas=mli.get("alphas", 50), batchnorm=mode,
                                 bn_momentum=bn_m)
    dmin = line.delta_min("train")
    dist = landscape.distance(start, end, "start", model=model)
    n_g = min(mli.get("gauss_inputs", 1000), xte.shape[0])
    gauss = landscape.gauss_length(model, start, end, xte[:n_g], mli.get("gauss_alphas", 50),
                                   batchnorm=mode, bn_x=xtr, bn_momentum=bn_m)
    seconds = time.perf_counter() - t0
    tol, ok_loss = mli.get("tolerance", 1e-3), mli.get("trained_loss", 0.1)
    per_run = {"final_train_loss": final_loss, "final_train_accuracy": final_acc,
               "test_loss": test_loss, "test_accuracy": test_acc, "delta_min": dmin,
               "distance": dist, "gauss_length": gauss}
    rows = pd.DataFrame([{"study": spec["name"], "method": cell["label"], "seed": s,
                          "step": steps, "split": "train", "metric": m,
                          "value": float(v[i])}
                         for m, v in per_run.items() for i, s in enumerate(seeds)])
    trained = [bool(torch.isfinite(final_loss[i]) and final_loss[i] <= ok_loss)
               for i in range(len(seeds))]
    nonmono = [t and bool(dmin[i] > tol) for i, t in enumerate(trained)]
    n_trained = sum(trained)
    summary = {
        **cell, "runs": len(seeds), "trained": n_trained, "steps": steps,
        "non_monotone": sum(nonmono),
        "fraction_non_monotone": sum(nonmono) / n_trained if n_trained else None,
        "mean_delta_min_non_monotone": common.finite_mean(
            [float(dmin[i]) for i, f in enumerate(nonmono) if f]),
        "mean_distance": common.finite_mean([float(d) for d, t in zip(dist, trained,
                                                                       strict=True) if t]),
        "mean_gauss_length": common.finite_mean([float(g) for g, t in zip(gauss, trained,
                                                                          strict=True) if t]),
        "mean_final_train_loss": common.finite_mean([float(v) for v in final_loss]),
        "mean_test_accuracy": common.finite_mean([float(v) for v in test_acc]),
        "runs_detail": [{"seed": s, "trained": trained[i], "non_monotone": nonmono[i],
                         **{m: float(v[i]) for m, v in per_run.items()}}
                        for i, s in enumerate(seeds)],
        "train_seconds": round(train_seconds, 2), "seconds": round(seconds, 2),
    }
    lines = line.to_frame(seeds=seeds, study=spec["name"], method=cell["label"])
    return summary, rows, lines


def findings(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The paper's qualitative findings, checked on our cells (None: not testable here)."""

    def frac(pred: Any) -> float | None:
        n = sum(c["trained"] for c in results if pred(c))
        k = sum(c["non_monotone"] for c in results if pred(c))
        return k / n if n else None

    sgd = frac(lambda c: c["optimizer"] == "sgd" and not c["batchnorm"] and not c["reward"])
    adam = frac(lambda c: c["optimizer"] == "adam" and not c["reward"])
    sgd_all = frac(lambda c: c["optimizer"] == "sgd" and not c["reward"])
    bn = frac(lambda c: c["batchnorm"] and not c["reward"])
    nobn = frac(lambda c: not c["batchnorm"] and not c["reward"])
    runs = [r for c in results for r in c["runs_detail"] if r["trained"]]
    d_non = common.finite_mean([r["distance"] for r in runs if r["non_monotone"]])
    d_mono = common.finite_mean([r["distance"] for r in runs if not r["non_monotone"]])

    def cmp(a: float | None, b: float | None) -> bool | None:
        return None if a is None or b is None else a > b

    return [
        {"claim": "SGD without batch norm gives mostly monotone paths",
         "ours": sgd, "holds": None if sgd is None else sgd < 0.5,
         "paper": "mostly monotone (MNIST/Fashion-MNIST MLPs)"},
        {"claim": "Adam raises the non-monotone fraction over SGD", "ours": [adam, sgd_all],
         "holds": cmp(adam, sgd_all), "paper": "Adam: more non-monotone runs"},
        {"claim": "batch norm raises the non-monotone fraction", "ours": [bn, nobn],
         "holds": cmp(bn, nobn), "paper": "BN: more non-monotone runs"},
        {"claim": "non-monotone runs travel farther from the initialization",
         "ours": [d_non, d_mono], "holds": cmp(d_non, d_mono),
         "paper": "larger ‖θ_T − θ_0‖ / ‖θ_0‖ for non-monotone runs"},
    ]


def run(spec: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    check(spec)
    prepare_folder(spec, ctx)
    d, tr = spec["data"], spec["training"]
    data: list[tuple] = []  # loaded by the first cell that is not done yet

    def measure(cell: dict[str, Any]) -> dict[str, Any]:
        if not data:
            data.append(common.image_data(d["dataset"], d["n_train"], d["n_test"],
                                          ctx.data_dir))
        summary, r, ln = _run_cell(spec, cell, data[0], seeds)
        ctx.say(f"{cell['label']}: {summary['trained']}/{summary['runs']} trained, "
                f"{summary['non_monotone']} non-monotone ({summary['seconds']:.0f} s)")
        return {"summary": summary, "rows": r.to_dict("list"), "lines": ln.to_dict("list")}

    seeds = [int(tr.get("seed", 0)) + k for k in range(tr["seeds"])]
    stages = Stages(ctx.out, ctx.resume, say=ctx.say)
    results, rows, lines = [], [], []
    t0 = time.perf_counter()
    for cell in cells(spec):
        saved = stages.run(cell["label"], lambda c=cell: measure(c))
        results.append(saved["summary"])
        rows.append(pd.DataFrame(saved["rows"]))
        lines.append(pd.DataFrame(saved["lines"]))
    common.write_frame(ctx.out / "runs.csv", pd.concat(rows, ignore_index=True))
    common.write_frame(ctx.out / "lines.csv", pd.concat(lines, ignore_index=True))
    out = {"name": spec["name"], "experiment": "mli", "dataset": d["dataset"],
           "cells": results, "findings": findings(results),
           "paper": spec.get("paper", {}), "seconds": round(time.perf_counter() - t0, 1)}
    write_json(ctx.out / "summary.json", out)
    return out


def table(summary: dict[str, Any]) -> str:
    head = (f"{'cell':<24} {'trained':>7} {'non-mono':>8} {'frac':>5} {'Δmin':>8} "
            f"{'dist':>6} {'gauss':>6} {'test acc':>8}")
    lines = [head]
    for c in summary["cells"]:
        lines.append(f"{c['label']:<24} {c['trained']:>3}/{c['runs']:<3} "
                     f"{c['non_monotone']:>8} {common.fmt(c['fraction_non_monotone'], '.2f'):>5} "
                     f"{common.fmt(c['mean_delta_min_non_monotone']):>8} "
                     f"{common.fmt(c['mean_distance'], '.3f'):>6} "
                     f"{common.fmt(c['mean_gauss_length'], '.3f'):>6} "
                     f"{common.fmt(c['mean_test_accuracy'], '.3f'):>8}")
    return "\n".join(lines)


def report(out: Path) -> Path:
    out = Path(out)
    summary = common.read_json(out / "summary.json")
    config = common.read_json(out / "config.json")
    try:
        lines = pd.read_csv(out / "lines.csv")
    except (OSError, ValueError) as exc:
        raise common.ReportError(f"{out / 'lines.csv'} is missing or unreadable ({exc})"
                                 ) from None
    fig_dir = common.figure_dir(out)
    plt = common.pyplot()
    cs = summary["cells"]
    # 1. every run's train loss along α, one panel per cell
    ncol = min(4, len(cs))
    nrow = -(-len(cs) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.6 * nrow), squeeze=False)
    for ax, c in zip(axes.flat, cs, strict=False):
        sub = lines[(lines.method == c["label"]) & (lines.metric == "loss")
                    & (lines.split == "train")]
        for seed, g in sub.groupby("seed"):
            run = next(r for r in c["runs_detail"] if r["seed"] == seed)
            ax.plot(g.alpha, g.value, color="C3" if run["non_monotone"] else "C0", lw=1,
                    ls="-" if run["trained"] else ":")
        ax.set_yscale("log")
        ax.set_title(c["label"], fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(cs):]:
        ax.axis("off")
    fig.suptitle("train loss along (1−α)θ₀ + αθ_T (red: non-monotone, dotted: not trained)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(fig_dir / "lines.png", dpi=90)
    plt.close(fig)
    # 2. Δ_min vs distance
    fig, ax = plt.subplots(figsize=(5, 4))
    for c in cs:
        for trained in (True, False):
            runs = [r for r in c["runs_detail"] if r["trained"] == trained
                    and r["distance"] == r["distance"]]
            if not runs:
                continue
            color = "C0" if c["optimizer"] == "sgd" else "C1"
            ax.scatter([r["distance"] for r in runs],
                       [max(r["delta_min"], 1e-6) for r in runs],
                       marker="s" if c["batchnorm"] else "o", s=18, alpha=0.7,
                       color=color if trained else "none", edgecolors=color)
    ax.axhline(config.get("mli", {}).get("tolerance", 1e-3), color="k", lw=0.5, ls="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("‖θ_T − θ₀‖ / ‖θ₀‖")
    ax.set_ylabel("Δ_min (floored at 1e-6)")
    ax.set_title("SGD (blue) / Adam (orange); squares: BN; hollow: not trained", fontsize=9)
    fig.tight_layout()
    fig.savefig(fig_dir / "delta_min_vs_distance.png", dpi=90)
    plt.close(fig)
    # 3. non-monotone fraction against the learning rate (and reward)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    keys = sorted({(c["optimizer"], c["batchnorm"], c["reward"]) for c in cs})
    for opt, bn, reward in keys:
        pts = sorted((c["lr"], c["fraction_non_monotone"]) for c in cs
                     if (c["optimizer"], c["batchnorm"], c["reward"]) == (opt, bn, reward)
                     and c["fraction_non_monotone"] is not None)
        if pts:
            ax.plot(*zip(*pts, strict=True), "o-",
                    label=f"{opt}{' BN' if bn else ''}{f' λ={reward:g}' if reward else ''}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("fraction non-monotone")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(fig_dir / "fraction_vs_lr.png", dpi=90)
    plt.close(fig)

    d = config["data"]
    text = [f"# {summary['name']}: monotonic linear interpolation", "",
            config.get("description", ""), "",
            f"Data: {d['dataset']}, first {d['n_train']} train / {d['n_test']} test images, "
            f"inputs in [0, 1]. MLP {config['model']['hidden']} "
            f"({config['model'].get('activation', 'relu')}), batch "
            f"{config['training']['batch_size']}, {config['training']['epochs']} epochs, "
            f"{config['training']['seeds']} seeds per cell trained as one ensemble. "
            f"Run time {summary['seconds']:.0f} s.", "",
            "## Findings beside the paper's", "",
            "| finding | paper | ours | holds |", "|---|---|---|---|"]
    for f in summary["findings"]:
        ours = f["ours"] if not isinstance(f["ours"], list) else " vs ".join(
            common.fmt(v, ".3g") for v in f["ours"])
        ours = common.fmt(ours, ".3g") if not isinstance(ours, str) else ours
        holds = {True: "yes", False: "**no**", None: "not testable"}[f["holds"]]
        text.append(f"| {f['claim']} | {f['paper']} | {ours} | {holds} |")
    text += ["", "## Cells", "",
             "| cell | trained | non-monotone | fraction | mean Δ_min (non-mono.) | "
             "distance | Gauss length | final train loss | test acc. |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in cs:
        text.append(f"| {c['label']} | {c['trained']}/{c['runs']} | {c['non_monotone']} | "
                    f"{common.fmt(c['fraction_non_monotone'], '.2f')} | "
                    f"{common.fmt(c['mean_delta_min_non_monotone'])} | "
                    f"{common.fmt(c['mean_distance'], '.3f')} | "
                    f"{common.fmt(c['mean_gauss_length'], '.3f')} | "
                    f"{common.fmt(c['mean_final_train_loss'], '.3g')} | "
                    f"{common.fmt(c['mean_test_accuracy'], '.3f')} |")
    tol = config.get("mli", {}).get("tolerance", 1e-3)
    text += ["", "## Every run, trained or not", "",
             "Runs pushed far from their initialization may not reach the train-loss bar, "
             "so the paper's statistic (trained runs only) can be empty; here every run with a "
             f"finite loss counts (non-monotone: Δ_min > {tol:g}).", "",
             "| cell | runs | non-monotone | fraction | mean distance | mean Δ_min | "
             "final train loss |", "|---|---|---|---|---|---|---|"]
    for c in cs:
        runs = [r for r in c["runs_detail"] if r["final_train_loss"] == r["final_train_loss"]]
        bad = [r for r in runs if r["delta_min"] > tol]
        text.append(
            f"| {c['label']} | {len(runs)} | {len(bad)} | "
            f"{common.fmt(len(bad) / len(runs) if runs else None, '.2f')} | "
            f"{common.fmt(common.finite_mean([r['distance'] for r in runs]), '.3g')} | "
            f"{common.fmt(common.finite_mean([r['delta_min'] for r in runs]), '.3g')} | "
            f"{common.fmt(common.finite_mean([r['final_train_loss'] for r in runs]), '.3g')} |")
    if config.get("notes"):
        text += [""] + common.notes_section(config["notes"])
    text += ["", "## Figures", "", "![lines](figures/lines.png)", "",
             "![delta_min vs distance](figures/delta_min_vs_distance.png)", "",
             "![fraction vs lr](figures/fraction_vs_lr.png)", ""]
    return common.write_report(out, text)


register(Experiment("mli", run, report, table,
                    "Monotonic linear interpolation over optimizer x lr x batch norm"))
register(Experiment("landscape-spiral", spiral.run, spiral.report, spiral.table,
                    "Where AdLaLa, Adam and SGD land on the 4-turn spiral (docs/science.md §8)"))
