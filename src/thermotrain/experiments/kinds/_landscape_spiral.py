r"""The ``landscape-spiral`` experiment: where do AdLaLa, Adam and SGD land? (docs/science.md §8,
§7)

On the 4-turn spiral with the authors' notebook net (2-100-1 ReLU, batch 25), every method
trains the same K initializations (one ensemble per method, :func:`thermotrain.training.train`).
For each solution: the top Hessian eigenvalues (Lanczos) and the Hutchinson trace of the
train loss (flatness), the MLI curve from its initialization (:math:`\Delta_{\min}`,
distance), a filter-normalized random plane around it; between the methods' solutions of
the same seed: the loss along :math:`(1-\alpha)\theta_A + \alpha\theta_B`,
α ∈ [−0.5, 1.5] (paper 000 Fig. 3: no barrier between AdLaLa and Adam), with the barrier
:math:`\max_{\alpha\in[0,1]} L(\alpha) - \max(L(0), L(1))`, and the plane through the three
solutions.

Run folder: ``config.json``, ``stages/method-<name>.pt`` (one per finished method: the
solution and its measurements), ``stages/between.json``, ``lines.csv``, ``planes.csv``,
``summary.json``, ``report.md``, ``figures/``; ``--resume`` reuses the finished stages.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ... import landscape
from ...data import spirals
from ...models import MLP
from ..config import ConfigError
from . import RunContext, prepare_folder, write_json
from . import _landscape_common as common
from ._stages import Stages

METHOD = {"name": str, "optimizer": ("adlala", "adam", "sgd"), "lr": common.NUMBER,
          "momentum": common.NUMBER, "friction": common.NUMBER, "temperature": list,
          "noise": common.NUMBER, "coupling": common.NUMBER, "xi_init": common.NUMBER}
SCHEMA = {
    **common.COMMON,
    "data": {"n_train": int, "n_test": int, "turns": common.NUMBER, "a": common.NUMBER,
             "p": common.NUMBER, "noise": common.NUMBER, "seed": common.NUMBER},
    "model": {"hidden": list},
    "training": {"steps": int, "batch_size": int, "seeds": int, "seed": common.NUMBER},
    "methods": list,
    "analysis": {"eigenvalues": int, "lanczos_steps": int, "trace_samples": int,
                 "line_alphas": int,
                 "mli_alphas": int, "plane_grid": int, "plane_span": common.NUMBER},
}


def check(spec: dict[str, Any]) -> None:
    file = spec.get("_file", "<study>")
    common.validate(spec, SCHEMA, file)
    common.require(spec, file, "data.n_train", "data.n_test", "training.steps",
                   "training.batch_size", "training.seeds", "methods")
    methods = spec["methods"]
    if not methods or not all(isinstance(m, dict) for m in methods):
        raise ConfigError(f"{file}: methods must be a non-empty list of [[methods]] tables")
    for i, m in enumerate(methods):
        common.validate(m, METHOD, file, f"methods[{i}].")
        common.require(m, file, "name", "optimizer", "lr")
    names = [m["name"] for m in methods]
    if len(set(names)) != len(names):
        raise ConfigError(f"{file}: method names must be unique, got {names}")


def _data(spec: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    d = spec["data"]
    kw = {"turns": d.get("turns", 4), "a": d.get("a", 2.0), "p": d.get("p", 0.5),
          "noise": d.get("noise", 0.02)}
    seed = int(d.get("seed", 1000))
    xtr, ytr = spirals(d["n_train"], seed=seed, **kw)
    xte, yte = spirals(d["n_test"], seed=seed + 1, **kw)  # test points: a fresh draw
    return xtr, ytr, xte, yte


def barrier(losses: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """:math:`\\max_{\\alpha\\in[0,1]} L(\\alpha) - \\max(L(0), L(1))` per column."""
    inside = (alphas >= 0) & (alphas <= 1)
    i0, i1 = int((alphas - 0).abs().argmin()), int((alphas - 1).abs().argmin())
    return losses[inside].amax(0) - torch.maximum(losses[i0], losses[i1])


def _method(spec: dict[str, Any], m: dict[str, Any], model: MLP, start: dict[str, Any],
            data: dict[str, tuple], seeds: list[int], ctx: RunContext) -> dict[str, Any]:
    """One method's stage: train from ``start``, then flatness, MLI and the random plane.
    Returns the solution's state (``end``), its results and its curves (tables as lists)."""
    tr, an = spec["training"], spec.get("analysis", {})
    (xtr, ytr), (xte, yte) = data["train"], data["test"]
    model.load_state_dict(start)
    extra = {k: v for k, v in m.items() if k not in ("name", "optimizer", "lr")}
    opt = common.make_optimizer(m["optimizer"], model, float(m["lr"]), seeds, extra)
    common.train_ensemble(model, opt, xtr, ytr, steps=tr["steps"],
                          batch_size=tr["batch_size"], seeds=seeds,
                          study=spec["name"], method=m["name"])
    end = common.clone_state(model)
    train_loss, train_acc = common.evaluate(model, xtr, ytr)
    test_loss, test_acc = common.evaluate(model, xte, yte)
    eig = landscape.hessian_eigenvalues(model, None, (xtr, ytr), k=an.get("eigenvalues", 3),
                                        iterations=an.get("lanczos_steps", 100), seed=1)
    trace = landscape.hessian_trace(model, None, (xtr, ytr),
                                    samples=an.get("trace_samples", 100), seed=2)
    mli = landscape.interpolate(model, start, end, data, alphas=an.get("mli_alphas", 50))
    dmin = mli.delta_min("train")
    dist = landscape.distance(start, end, model=model)
    grid, span = an.get("plane_grid", 25), float(an.get("plane_span", 1.0))
    pl = landscape.plane(model, end, None, {"train": (xtr, ytr)}, grid=grid,
                         span=(-span, span), seed=3)
    result = {
        "optimizer": m["optimizer"], "lr": m["lr"],
        "train_loss": train_loss.tolist(), "train_accuracy": train_acc.tolist(),
        "test_loss": test_loss.tolist(), "test_accuracy": test_acc.tolist(),
        "top_eigenvalues": eig.tolist(), "trace": trace.tolist(),
        "delta_min": dmin.tolist(), "distance": dist.tolist(),
        "non_monotone": int((dmin > 1e-3).sum()),
        "mean_test_accuracy": float(test_acc.mean()),
        "mean_top_eigenvalue": float(eig[:, 0].mean()), "mean_trace": float(trace.mean()),
        "mean_delta_min": float(dmin.mean()), "mean_distance": float(dist.mean()),
    }
    ctx.say(f"{m['name']}: test acc {float(test_acc.mean()):.3f}, λ_max "
            f"{float(eig[:, 0].mean()):.3g}, trace {float(trace.mean()):.3g}")
    frame = mli.to_frame(seeds=seeds, study=spec["name"], method=m["name"], line="mli")
    plane = pl.to_frame(method=m["name"], plane="random")
    return {"end": end, "result": result, "mli": frame.to_dict("list"),
            "plane": plane.to_dict("list")}


def _between(spec: dict[str, Any], model: MLP, ends: dict[str, Any], data: dict[str, tuple],
             seeds: list[int]) -> dict[str, Any]:
    """The last stage: lines between the solutions of the same seed (barriers) and the plane
    through the first three solutions."""
    an = spec.get("analysis", {})
    alphas = torch.linspace(-0.5, 1.5, an.get("line_alphas", 41), dtype=torch.float64)
    alphas[(alphas - 0).abs().argmin()] = 0.0
    alphas[(alphas - 1).abs().argmin()] = 1.0
    pairs, frames, planes = {}, [], []
    for a, b in itertools.combinations(ends, 2):
        res = landscape.interpolate(model, ends[a], ends[b], data, alphas=alphas)
        frames.append(res.to_frame(seeds=seeds, study=spec["name"], method=f"{a}->{b}",
                                   line="between"))
        bar = barrier(res.loss["train"], res.alphas)
        pairs[f"{a}->{b}"] = {"barrier_train": bar.tolist(), "max_barrier": float(bar.max()),
                              "mean_barrier": float(bar.mean())}
    if len(ends) >= 3:
        names = list(ends)[:3]
        center, dirs = landscape.plane_through(model, *(ends[n] for n in names))
        grid = an.get("plane_grid", 25)
        axis = torch.linspace(-0.25, 1.25, grid, dtype=torch.float64)
        pl = landscape.plane(model, center, dirs, {"train": data["train"]}, grid=(axis, axis),
                             normalization="none")
        planes.append(pl.to_frame(method="+".join(names), plane="three"))
    return {"pairs": pairs, "lines": [f.to_dict("list") for f in frames],
            "planes": [p.to_dict("list") for p in planes]}


def run(spec: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    """Stages (:mod:`._stages`): one per method (``.pt``: the solution and its results),
    then ``between`` (the lines and the plane between the solutions); ``--resume`` reuses
    the finished ones."""
    check(spec)
    prepare_folder(spec, ctx)
    t0 = time.perf_counter()
    tr = spec["training"]
    xtr, ytr, xte, yte = _data(spec)
    data = {"train": (xtr, ytr), "test": (xte, yte)}
    seeds = [int(tr.get("seed", 0)) + k for k in range(tr["seeds"])]
    widths = [2, *spec.get("model", {}).get("hidden", [100]), 1]
    model = MLP(widths, ensemble=len(seeds), seed=seeds)
    start = common.clone_state(model)
    stages = Stages(ctx.out, ctx.resume, say=ctx.say)
    ends, methods, frames, plane_frames = {}, {}, [], []
    for m in spec["methods"]:
        done = stages.run(f"method-{m['name']}",
                          lambda m=m: _method(spec, m, model, start, data, seeds, ctx),
                          tensors=True)
        ends[m["name"]], methods[m["name"]] = done["end"], done["result"]
        frames.append(pd.DataFrame(done["mli"]))
        plane_frames.append(pd.DataFrame(done["plane"]))
    between = stages.run("between", lambda: _between(spec, model, ends, data, seeds))
    frames += [pd.DataFrame(f) for f in between["lines"]]
    plane_frames += [pd.DataFrame(p) for p in between["planes"]]
    common.write_frame(ctx.out / "lines.csv", pd.concat(frames, ignore_index=True))
    common.write_frame(ctx.out / "planes.csv", pd.concat(plane_frames, ignore_index=True))
    out = {"name": spec["name"], "experiment": "landscape-spiral", "seeds": seeds,
           "methods": methods, "pairs": between["pairs"], "paper": spec.get("paper", {}),
           "seconds": round(time.perf_counter() - t0, 1)}
    write_json(ctx.out / "summary.json", out)
    return out


def table(summary: dict[str, Any]) -> str:
    lines = [f"{'method':<10} {'test acc':>8} {'λ_max':>9} {'trace':>9} {'Δmin':>9} "
             f"{'dist':>7} {'non-mono':>8}"]
    for name, m in summary["methods"].items():
        lines.append(f"{name:<10} {m['mean_test_accuracy']:>8.3f} "
                     f"{m['mean_top_eigenvalue']:>9.3g} {m['mean_trace']:>9.3g} "
                     f"{m['mean_delta_min']:>9.3g} {m['mean_distance']:>7.3f} "
                     f"{m['non_monotone']:>8}")
    for pair, p in summary["pairs"].items():
        lines.append(f"barrier {pair}: mean {p['mean_barrier']:.3g}, max {p['max_barrier']:.3g}")
    return "\n".join(lines)


def _contour(plt: Any, sub: pd.DataFrame, title: str, path: Path,
             points: list[tuple[float, float, str]] = ()) -> None:
    sub = sub[(sub.member == 0) & (sub.metric == "loss")]
    piv = sub.pivot_table(index="x", columns="y", values="value")
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    import numpy as np

    cs = ax.contourf(piv.index, piv.columns, np.log10(piv.to_numpy().T.clip(1e-12)), 30,
                     cmap="viridis")
    fig.colorbar(cs, ax=ax, label="log10 train loss")
    for x, y, label in points:
        ax.plot(x, y, "r*", ms=9)
        ax.annotate(label, (x, y), color="w", fontsize=8, xytext=(4, 4),
                    textcoords="offset points")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def report(out: Path) -> Path:
    out = Path(out)
    summary = common.read_json(out / "summary.json")
    config = common.read_json(out / "config.json")
    try:
        lines = pd.read_csv(out / "lines.csv")
        planes = pd.read_csv(out / "planes.csv")
    except (OSError, ValueError) as exc:
        raise common.ReportError(f"{out}: lines.csv / planes.csv missing or unreadable "
                                 f"({exc})") from None
    fig_dir = common.figure_dir(out)
    plt = common.pyplot()
    figures = []
    for kind, title in (("between", "loss along the line between solutions (same seed)"),
                        ("mli", "MLI: loss from the initialization to each solution")):
        sub = lines[(lines.line == kind) & (lines.metric == "loss")]
        fig, ax = plt.subplots(figsize=(6, 4))
        for i, (method, g) in enumerate(sub.groupby("method", sort=False)):
            for (seed, split), h in g.groupby(["seed", "split"]):
                ax.plot(h.alpha, h.value, color=f"C{i}", lw=0.8,
                        ls="-" if split == "train" else "--",
                        label=method if (seed == summary["seeds"][0] and split == "train")
                        else None)
        ax.set_yscale("log")
        ax.set_xlabel("α")
        ax.set_ylabel("loss (solid train, dashed test)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        name = f"{kind}.png"
        fig.savefig(fig_dir / name, dpi=90)
        plt.close(fig)
        figures.append((name, title))
    for method in summary["methods"]:
        sub = planes[(planes.plane == "random") & (planes.method == method)]
        name = f"plane_{common.slug(method)}.png"
        _contour(plt, sub, f"{method}: filter-normalized plane (seed {summary['seeds'][0]})",
                 fig_dir / name, [(0.0, 0.0, method)])
        figures.append((name, f"{method}: random filter-normalized plane around the solution"))
    three = planes[planes.plane == "three"]
    if len(three):
        names = three.method.iloc[0].split("+")
        _contour(plt, three, "plane through the three solutions", fig_dir / "plane_three.png",
                 list(zip([0.0, 1.0, 0.0], [0.0, 0.0, 1.0], names, strict=True)))
        figures.append(("plane_three.png", "plane through the three solutions"))
    ms = summary["methods"]
    text = [f"# {summary['name']}: where do the methods land?", "",
            config.get("description", ""), "",
            f"4-turn spiral ({config['data']['n_train']} train / {config['data']['n_test']} "
            f"test), 2-{config.get('model', {}).get('hidden', [100])}-1 ReLU net, batch "
            f"{config['training']['batch_size']}, {config['training']['steps']} steps, seeds "
            f"{summary['seeds']} (the same initializations for every method). Run time "
            f"{summary['seconds']:.0f} s.", "",
            "| method | test acc. | top Hessian eigenvalue | Hutchinson trace | MLI Δ_min | "
            "non-monotone | distance ‖θ_T−θ₀‖/‖θ₀‖ |", "|---|---|---|---|---|---|---|"]
    for name, m in ms.items():
        text.append(f"| {name} | {m['mean_test_accuracy']:.3f} | "
                    f"{m['mean_top_eigenvalue']:.3g} | {m['mean_trace']:.3g} | "
                    f"{m['mean_delta_min']:.3g} | {m['non_monotone']}/{len(summary['seeds'])} "
                    f"| {m['mean_distance']:.3f} |")
    text += ["", "Means over seeds. Barriers along the lines between solutions "
             "(max over α ∈ [0, 1] of the train loss minus the larger endpoint; ≤ 0: none):",
             ""]
    for pair, p in summary["pairs"].items():
        text.append(f"- {pair}: mean {p['mean_barrier']:.3g}, max {p['max_barrier']:.3g} "
                    f"(per seed {', '.join(f'{b:.3g}' for b in p['barrier_train'])})")
    paper = summary.get("paper") or {}
    if paper:
        text += ["", "Paper: " + "; ".join(f"{k}: {v}" for k, v in paper.items())]
    if config.get("notes"):
        text += [""] + common.notes_section(config["notes"])
    text += ["", "## Figures", ""]
    for name, caption in figures:
        text += [f"![{caption}](figures/{name})", "", f"*{caption}.*", ""]
    return common.write_report(out, text)
