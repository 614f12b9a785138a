"""Report of a run folder: ``report.md`` and PNG figures. Reads results only, never trains.

From ``config.json``, ``summary.json``, ``metrics.csv`` and ``methods/*/snapshots.pt``:

* the comparison table *method | ours (mean ± std over seeds) | paper | gap* (final test
  accuracy, percent);
* ``figures/curves.png`` — mean ± std over seeds of train/test accuracy and loss per method;
* ``figures/boundaries.png`` — for 2-D data, the classifier's probability
  :math:`\\sigma(f(x))` on a grid with the test points, for the first seed of each method at
  its snapshot steps (like the paper's Figs. 1, 4, 9, 16);
* ``figures/histograms.png`` — first-layer weights and biases of all seeds at the snapshot
  steps (Figs. 6–8);
* ``figures/sweep.png`` — final test accuracy against a swept hyperparameter (Figs. 1, 10,
  16), ``figures/heatmap.png`` — the same over a two-parameter grid (Fig. 15);
* ``figures/line.png`` — for two methods from the same initialisation, the loss along the
  line :math:`(1-\\alpha)\\theta_A + \\alpha\\theta_B`, :math:`\\alpha \\in [-0.5, 1.5]`, of each
  saved seed (Fig. 3, SPEC §8). Evaluating saved parameters is analysis, not training.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from .config import DataConfig, slug
from .runner import atomic_write_text, read_metrics

__all__ = ["ReportError", "comparison_table", "write_report"]

_MAX_PANELS = 12


class ReportError(RuntimeError):
    """The folder is not a (finished) run folder; one-line message."""


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def comparison_table(summary: dict[str, Any]) -> str:
    """Markdown table of the final test accuracy: method | ours | paper | gap (percent)."""
    lines = ["| method | ours: test acc. % (mean ± std) | seeds | paper % | gap (pp) |",
             "|---|---|---|---|---|"]
    for name, m in summary["methods"].items():
        ours = f"{_pct(m['test_accuracy_mean'])} ± {_pct(m['test_accuracy_std'])}"
        paper = m.get("paper") or {}
        p_acc, p_std = paper.get("test_accuracy"), paper.get("test_accuracy_std")
        if p_acc is None:
            p_text, gap = "–", "–"
        else:
            p_text = _pct(p_acc) + (f" ± {_pct(p_std)}" if p_std is not None else "")
            if paper.get("step") not in (None, m["steps"]):
                p_text += f" (at step {paper['step']})"
            gap = f"{100 * (m['test_accuracy_mean'] - p_acc):+.1f}"
        lines.append(f"| {name} | {ours} | {m['n_seeds']} | {p_text} | {gap} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- loading
def _load_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ReportError(f"{path.parent} is not a finished run folder (no {path.name}); run "
                          "`thermotrain run` first or pass --resume to finish it") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path} is unreadable: {exc}") from None


def _snapshots(run_dir: Path, method: str) -> list[dict] | None:
    path = run_dir / "methods" / slug(method) / "snapshots.pt"
    if not path.exists():
        return None
    return torch.load(path, weights_only=True)["snapshots"]


# --------------------------------------------------------------------------- figures
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _curves(rows: list[dict], methods: list[str], path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharex=True)
    by = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by[(r["method"], r["split"])][r["step"]].append(r)
    for col, split in enumerate(("test", "train")):
        for row, metric in enumerate(("accuracy", "loss")):
            ax = axes[row, col]
            for name in methods:
                series = by.get((name, split))
                if not series:
                    continue
                steps = sorted(series)
                vals = [[r[metric] for r in series[s]] for s in steps]
                mean = [sum(v) / len(v) for v in vals]
                std = [math.sqrt(sum((x - m) ** 2 for x in v) / max(len(v) - 1, 1))
                       for v, m in zip(vals, mean, strict=True)]
                (line,) = ax.plot(steps, mean, label=name)
                ax.fill_between(steps, [m - s for m, s in zip(mean, std, strict=True)],
                                [m + s for m, s in zip(mean, std, strict=True)],
                                color=line.get_color(), alpha=0.2)
            ax.set_title(f"{split} {metric} (mean ± std over seeds)")
            if metric == "loss":
                ax.set_yscale("log")
                ax.set_xlabel("step")
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _mlp_from_members(members: dict[str, torch.Tensor], activation: str):
    from ..models import MLP

    names = sorted((n for n in members if n.endswith(".weight")),
                   key=lambda n: int(n.split(".")[1]))
    widths = [members[names[0]].shape[2]] + [members[n].shape[1] for n in names]
    k = members[names[0]].shape[0]
    model = MLP(widths, activation=activation, ensemble=k)
    model.load_state_dict(members)
    return model


def _boundaries(run_dir: Path, config: dict, methods: list[str], path: Path) -> bool:
    data_cfg = DataConfig(**{k: (tuple(v) if isinstance(v, list) else v)
                             for k, v in config["data"].items()})
    if not data_cfg.binary or config["model"]["kind"] != "mlp":
        return False
    from .builders import load_data

    data = load_data(data_cfg)
    panels = []
    for name in methods[:_MAX_PANELS]:
        snaps = _snapshots(run_dir, name)
        if not snaps:
            continue
        chosen = [s for s in snaps if s["step"] > 0 and s["members"]]
        if not chosen or next(iter(chosen[0]["members"].values())).shape[0] == 0:
            continue
        panels.append((name, chosen[-4:]))
    if not panels:
        return False
    plt = _plt()
    ncol = max(len(c) for _, c in panels)
    fig, axes = plt.subplots(len(panels), ncol, figsize=(3.2 * ncol, 3.0 * len(panels)),
                             squeeze=False)
    lim = float(data.x_test.abs().max()) * 1.05
    g = torch.linspace(-lim, lim, 150)
    gx, gy = torch.meshgrid(g, g, indexing="xy")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)
    x, y = data.x_test, data.y_test
    for i, (name, snaps) in enumerate(panels):
        for j in range(ncol):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(snaps):
                ax.axis("off")
                continue
            snap = snaps[j]
            model = _mlp_from_members(snap["members"], config["model"]["activation"])
            with torch.no_grad():
                prob = torch.sigmoid(model(grid)[0, :, 0]).reshape(gx.shape)
                acc = float(((model(x)[0, :, 0] > 0).float() == y).float().mean())
            ax.imshow(prob.numpy(), origin="lower", extent=(-lim, lim, -lim, lim),
                      cmap="RdBu_r", vmin=0, vmax=1, alpha=0.8)
            ax.scatter(x[:, 0], x[:, 1], c=y, cmap="RdBu_r", s=3, edgecolors="k",
                       linewidths=0.2, vmin=0, vmax=1)
            ax.set_title(f"{name}\nstep {snap['step']}, test {100 * acc:.1f} %", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


def _histograms(run_dir: Path, methods: list[str], path: Path) -> bool:
    panels = [(n, _snapshots(run_dir, n)) for n in methods[:8]]
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
            ax.hist(w, bins=40, alpha=0.6, label="weights", density=True)
            ax.hist(b, bins=40, alpha=0.6, label="biases", density=True)
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


def _line(run_dir: Path, config: dict, methods: list[str], path: Path) -> bool:
    """Loss along the line between the final parameters of two methods, per saved seed."""
    bases = {m["base"] for m in config["methods"] if m["name"] in methods}
    if len(methods) != 2 or len(bases) != 2 or config["model"]["kind"] != "mlp":
        return False
    inits = {(m["init"], m["init_std"]) for m in config["methods"]}
    if len(inits) != 1:
        return False  # not the same initialisation
    data_cfg = DataConfig(**{k: (tuple(v) if isinstance(v, list) else v)
                             for k, v in config["data"].items()})
    if not data_cfg.binary:
        return False  # generated data only: the report never needs the image files
    snaps = [_snapshots(run_dir, m) for m in methods]
    if not all(snaps) or not snaps[0][-1]["members"]:
        return False
    a, b = snaps[0][-1]["members"], snaps[1][-1]["members"]
    if next(iter(a.values())).shape[0] == 0:
        return False
    from ..models import ensemble_loss
    from .builders import load_data

    data = load_data(data_cfg)
    alphas = torch.linspace(-0.5, 1.5, 41)
    act = config["model"]["activation"]
    curves = {"train": [], "test": []}
    with torch.no_grad():
        for alpha in alphas.tolist():
            members = {k: (1 - alpha) * a[k] + alpha * b[k] for k in a}
            model = _mlp_from_members(members, act)
            for split, (x, y) in (("train", (data.x_train, data.y_train)),
                                  ("test", (data.x_test, data.y_test))):
                curves[split].append(ensemble_loss(model(x), y))
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for split, style in (("train", "-"), ("test", "--")):
        values = torch.stack(curves[split])  # (alphas, members)
        for k in range(values.shape[1]):
            ax.plot(alphas, values[:, k], style, color=f"C{k}",
                    label=f"{split}, seed #{k}" if k < 3 else None)
    ax.axvline(0, color="k", lw=0.5)
    ax.axvline(1, color="k", lw=0.5)
    ax.set_yscale("log")
    ax.set_xlabel(f"alpha: 0 = {methods[0]}, 1 = {methods[1]}")
    ax.set_ylabel("loss")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------- report
def write_report(run_dir: str | Path) -> Path:
    """Write ``report.md`` and ``figures/*.png`` for a finished run folder; return the
    path of ``report.md``.

    Raises:
        ReportError: the folder is not a finished run folder.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir} is not a directory")
    config = _load_json(run_dir / "config.json")
    summary = _load_json(run_dir / "summary.json")
    if not (run_dir / "metrics.csv").exists():
        raise ReportError(f"{run_dir} has no metrics.csv; is the run finished?")
    rows = read_metrics(run_dir / "metrics.csv")
    methods = list(summary["methods"])
    fig_dir = run_dir / "figures"
    fig_dir.mkdir(exist_ok=True)
    figures: list[tuple[str, str]] = []
    _curves(rows, methods, fig_dir / "curves.png")
    figures.append(("curves.png", "Accuracy and loss over training (mean ± std over seeds)"))
    if _boundaries(run_dir, config, methods, fig_dir / "boundaries.png"):
        figures.append(("boundaries.png", "Classifier probability on the plane with the test "
                        "points, first seed of each method, at the snapshot steps"))
    if _histograms(run_dir, methods, fig_dir / "histograms.png"):
        figures.append(("histograms.png", "First-layer weights and biases over time (all "
                        "seeds)"))
    for name in _sweeps(summary, fig_dir):
        figures.append((name, "Final test accuracy over the swept hyperparameters"))
    if _line(run_dir, config, methods, fig_dir / "line.png"):
        figures.append(("line.png", "Loss along the line between the two methods' solutions "
                        "from the same initialisation (per saved seed)"))

    t = config["training"]
    d = config["data"]
    lines = [
        f"# {summary['study']}",
        "",
        summary.get("description", ""),
        "",
        f"Source: {config.get('source', '')}",
        "",
        f"Data: {d['kind']} (train {d['n_train'] or 'all'}, test {d['n_test'] or 'all'}); "
        f"model: {config['model']['kind']} hidden {config['model']['hidden']}, "
        f"{config['model']['activation']}, init {config['model']['init']}; "
        f"{t['seeds']} seeds × {t['steps']} steps, batch {t['batch_size']}"
        f"{' (with replacement)' if t['replacement'] else ' (epoch-reshuffled)'}.",
        "",
        "## Final test accuracy",
        "",
        comparison_table(summary),
        "",
        "Std is the sample standard deviation over seeds (ddof = 1). Gap = ours − paper in "
        "percentage points.",
        "",
        "## Methods",
        "",
        "| method | optimizer | hyperparameters | train acc. % | steps/s |",
        "|---|---|---|---|---|",
    ]
    for name, m in summary["methods"].items():
        hp = ", ".join(f"{k}={v}" for k, v in m["hyperparameters"].items())
        rate = m.get("steps_per_second")
        rate_text = "–" if rate is None or not math.isfinite(rate) else f"{rate:,.0f}"
        lines.append(f"| {name} | {m['optimizer']} | {hp} | "
                     f"{_pct(m['train_accuracy_mean'])} ± {_pct(m['train_accuracy_std'])} | "
                     f"{rate_text} |")
    notes = [(n, m["paper"]["note"]) for n, m in summary["methods"].items()
             if m.get("paper") and m["paper"].get("note")]
    if notes:
        lines += ["", "Paper notes:", ""] + [f"- {n}: {text}" for n, text in notes]
    lines += ["", "## Figures", ""]
    for file, caption in figures:
        lines += [f"![{caption}](figures/{file})", "", f"*{caption}.*", ""]
    report = run_dir / "report.md"
    atomic_write_text(report, "\n".join(lines) + "\n")
    return report
