"""The figures of a run's report (docs/runs.md): curves, classifiers on the plane,
first-layer histograms, sweeps and heat maps, drawn from a loaded :class:`~.run_view.Run`.
Analysis of saved parameters only, never training; :mod:`.report` writes the report text.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from ..models import averaged_probability, probability
from .config import DataConfig, slug
from .run_view import Run

_MAX_PANELS = 12


# --------------------------------------------------------------------------- data
def _data_config(config: dict) -> DataConfig:
    return DataConfig(**{k: (tuple(v) if isinstance(v, list) else v)
                         for k, v in config["data"].items()})


def _load_run_data(run: Run, data_dir: str | Path | None):
    """The run's data set: generated again, or image files from ``data_dir``, else the
    data root recorded in ``data.json``, else ``$THERMOTRAIN_DATA`` / the user cache."""
    from .builders import load_data

    data_cfg = _data_config(run.config)
    if not data_cfg.binary and data_dir is None and run.data_root \
            and Path(run.data_root).is_dir():
        data_dir = run.data_root
    return load_data(data_cfg, data_dir)


# --------------------------------------------------------------------------- figures
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _curves(run: Run, path: Path) -> None:
    """Mean ± std over seeds (finite values only) of accuracy and loss per method."""
    frame = run.metrics
    frame = frame[frame["metric"].isin(["accuracy", "loss"])].copy()
    frame.loc[~frame["value"].map(math.isfinite), "value"] = float("nan")
    stats = (frame.groupby(["method", "split", "metric", "step"])["value"]
             .agg(["mean", "std"]).fillna({"std": 0.0}))
    plt = _plt()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharex=True)
    for col, split in enumerate(("test", "train")):
        for row, metric in enumerate(("accuracy", "loss")):
            ax = axes[row, col]
            for name in run.methods:
                key = (name, split, metric)
                if key not in stats.index.droplevel("step"):
                    continue
                series = stats.loc[key]
                steps = series.index.to_numpy()
                mean, std = series["mean"].to_numpy(), series["std"].to_numpy()
                (line,) = ax.plot(steps, mean, label=name)
                ax.fill_between(steps, mean - std, mean + std, color=line.get_color(),
                                alpha=0.2)
            ax.set_title(f"{split} {metric} (mean ± std over seeds)")
            if metric == "loss":
                ax.set_yscale("log")
                ax.set_xlabel("step")
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _boundaries(run: Run, path: Path) -> int:
    """Draw the classifiers; return 0 (not drawn) or the largest number of parameter
    states averaged in a panel (1: no averaging)."""
    if not _data_config(run.config).binary:
        return 0
    data = _load_run_data(run, None)
    if data.x_test.shape[1] != 2:
        return 0
    panels = []
    for name in run.methods[:_MAX_PANELS]:
        snaps = run.snapshots.get(name)
        if snaps is None or not snaps.saved or snaps.spec is None:
            continue
        chosen = [s for s in snaps.items if s["step"] > 0]
        if chosen:
            panels.append((name, snaps, chosen[-4:]))
    if not panels:
        return 0
    averaged = 1
    plt = _plt()
    ncol = max(len(c) for _, _, c in panels)
    fig, axes = plt.subplots(len(panels), ncol, figsize=(3.2 * ncol, 3.0 * len(panels)),
                             squeeze=False)
    lim = float(data.x_test.abs().max()) * 1.05
    g = torch.linspace(-lim, lim, 150)
    gx, gy = torch.meshgrid(g, g, indexing="xy")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)
    x, y = data.x_test, data.y_test
    for i, (name, snaps, chosen) in enumerate(panels):
        for j in range(ncol):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(chosen):
                ax.axis("off")
                continue
            snap = chosen[j]
            model = snaps.model(snap["step"], member=0)  # the first seed, a plain network
            window = snap.get("window")
            if window and len(window["steps"]) > 1:  # Fig. 9: averaged over the last W steps
                states = {k: v[:, 0] for k, v in window["members"].items()}
                prob = averaged_probability(model, states, grid)[:, 0]
                p_test = averaged_probability(model, states, x)[:, 0]
                label = f"step {snap['step']} (mean of last {len(window['steps'])})"
                averaged = max(averaged, len(window["steps"]))
            else:
                with torch.no_grad():
                    prob = probability(model(grid))[:, 0]
                    p_test = probability(model(x))[:, 0]
                label = f"step {snap['step']}"
            acc = float(((p_test > 0.5).float() == y).float().mean())
            ax.imshow(prob.reshape(gx.shape).numpy(), origin="lower",
                      extent=(-lim, lim, -lim, lim), cmap="RdBu_r", vmin=0, vmax=1, alpha=0.8)
            ax.scatter(x[:, 0], x[:, 1], c=y, cmap="RdBu_r", s=3, edgecolors="k",
                       linewidths=0.2, vmin=0, vmax=1)
            ax.set_title(f"{name}\n{label}, test {100 * acc:.1f} %", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return averaged


def _histograms(run: Run, path: Path) -> bool:
    panels = [(n, run.snapshots[n].items) for n in run.methods[:8] if n in run.snapshots]
    panels = [(n, s) for n, s in panels if s]
    if not panels:
        return False
    plt = _plt()
    ncol = max(len(s) for _, s in panels)
    fig, axes = plt.subplots(len(panels), ncol, figsize=(2.8 * ncol, 2.3 * len(panels)),
                             squeeze=False)
    for i, (name, snaps) in enumerate(panels):
        for j in range(ncol):
            ax = axes[i, j]
            if j >= len(snaps):
                ax.axis("off")
                continue
            s = snaps[j]
            w = s["first_weight"].reshape(-1).numpy()
            b = s["first_bias"].reshape(-1).numpy()
            ax.hist(w[np.isfinite(w)], bins=40, alpha=0.6, label="weights", density=True)
            ax.hist(b[np.isfinite(b)], bins=40, alpha=0.6, label="biases", density=True)
            ax.set_title(f"{name}, step {s['step']}", fontsize=8)
            ax.tick_params(labelsize=6)
    axes[0, 0].legend(fontsize=6)
    fig.suptitle("first-layer weights and biases, all seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


def _sweeps(summary: dict, fig_dir: Path) -> list[str]:
    made = []
    groups: dict[str, list[tuple[dict, dict]]] = defaultdict(list)
    for m in summary["methods"].values():
        if m.get("sweep"):
            groups[m["base"]].append((m["sweep"], m))
    one_d = {b: g for b, g in groups.items() if len(g[0][0]) == 1}
    two_d = {b: g for b, g in groups.items() if len(g[0][0]) == 2}
    plt = _plt()
    if one_d:
        fig, ax = plt.subplots(figsize=(6, 4))
        for base, cells in one_d.items():
            key = next(iter(cells[0][0]))
            xs = [c[key] for c, _ in cells]
            if not all(isinstance(v, (int, float)) for v in xs):
                continue
            pos = [v if v > 0 else min([u for u in xs if u > 0], default=1) / 10 for v in xs]
            ax.errorbar(pos, [m["test_accuracy_mean"] for _, m in cells],
                        yerr=[m["test_accuracy_std"] for _, m in cells], marker="o",
                        capsize=3, label=f"{base} vs {key}")
            if all(v > 0 for v in pos):
                ax.set_xscale("log")
        ax.set_ylabel("final test accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(fig_dir / "sweep.png", dpi=90)
        plt.close(fig)
        made.append("sweep.png")
    for base, cells in two_d.items():
        k1, k2 = list(cells[0][0])
        v1 = sorted({c[k1] for c, _ in cells})
        v2 = sorted({c[k2] for c, _ in cells})
        table = [[float("nan")] * len(v1) for _ in v2]
        for c, m in cells:
            table[v2.index(c[k2])][v1.index(c[k1])] = m["test_accuracy_mean"]
        fig, ax = plt.subplots(figsize=(1.2 * len(v1) + 2.5, 1.0 * len(v2) + 1.8))
        im = ax.imshow(table, origin="lower", cmap="viridis", vmin=0.5, vmax=1.0)
        ax.set_xticks(range(len(v1)), [f"{v:g}" for v in v1], fontsize=7)
        ax.set_yticks(range(len(v2)), [f"{v:g}" for v in v2], fontsize=7)
        ax.set_xlabel(k1)
        ax.set_ylabel(k2)
        for i, row in enumerate(table):
            for j, val in enumerate(row):
                if not math.isnan(val):
                    ax.text(j, i, f"{100 * val:.0f}", ha="center", va="center", fontsize=7,
                            color="w")
        fig.colorbar(im, ax=ax, label="mean final test accuracy")
        ax.set_title(f"{base}: mean test accuracy over seeds", fontsize=9)
        fig.tight_layout()
        name = "heatmap.png" if len(two_d) == 1 else f"heatmap_{slug(base)}.png"
        fig.savefig(fig_dir / name, dpi=90)
        plt.close(fig)
        made.append(name)
    return made
