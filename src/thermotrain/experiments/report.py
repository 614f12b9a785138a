"""Report of a run folder: ``report.md`` and PNG figures. Reads results only, never trains.

From ``config.json``, ``summary.json``, ``metrics.csv`` and ``methods/*/snapshots.pt``:

* the comparison table *method | ours (mean ± std over seeds) | paper | gap* (final test
  accuracy, percent), then the study's ``notes`` (from ``config.json``; e.g. why ours
  differs from the paper);
* ``figures/curves.png`` — mean ± std over seeds of train/test accuracy and loss per method;
* ``figures/boundaries.png`` — for 2-D data, the classifier's probability
  :math:`\\sigma(f(x))` on a grid with the test points, for the first seed of each method at
  its snapshot steps (like the paper's Figs. 1, 4, 9, 16). With ``training.snapshot_average
  = W > 1`` the panel shows the classifier averaged over the last W steps (paper Fig. 9): the
  mean of the W predicted probabilities :math:`\\frac1W\\sum_{t=s-W+1}^{s}\\sigma(f_{\\theta_t}(x))`
  (:func:`averaged_probability`; a trajectory average of the predictive, the natural reading
  for a sampler), not the classifier of the averaged parameters; the test accuracy in the
  title is that of the averaged probability (threshold 0.5);
* ``figures/histograms.png`` — first-layer weights and biases of all seeds at the snapshot
  steps (Figs. 6–8);
* ``figures/sweep.png`` — final test accuracy against a swept hyperparameter (Figs. 1, 10,
  16), ``figures/heatmap.png`` — the same over a two-parameter grid (Fig. 15);
* ``figures/line.png`` (and ``figures/line.csv``, a report section with the endpoint losses
  and the barrier) — for two methods from the same initialisation, the train and test loss
  along the line :math:`(1-\\alpha)\\theta_A + \\alpha\\theta_B`, :math:`\\alpha \\in [-0.5, 1.5]`,
  of each saved seed (Fig. 3, SPEC §8), on generated data or MLPs on image data (MNIST; the
  files are found from ``data_dir``, the run's ``data.json``, ``$THERMOTRAIN_DATA``, in
  that order; if they are missing the figure is skipped with a note). Evaluating saved
  parameters is analysis, not training.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from .config import DataConfig, slug
from .runner import atomic_write_text, evaluate, read_metrics

__all__ = ["ReportError", "comparison_table", "write_report", "averaged_probability",
           "line_losses"]

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


@torch.no_grad()
def averaged_probability(states: dict[str, torch.Tensor], x: torch.Tensor,
                         activation: str = "relu") -> torch.Tensor:
    """The classifier averaged over W parameter states: the mean of their predicted
    probabilities (sigmoid for one output, softmax otherwise).

    Args:
        states: MLP ensemble parameters with a leading state axis, ``name -> (W, K, ...)``
            (a snapshot's ``window["members"]``).
        x: inputs ``(N, d)``.

    Returns:
        ``(K, N, out)`` probabilities :math:`\\frac1W \\sum_w p_{\\theta_w}(x)`.
    """
    total = None
    width = next(iter(states.values())).shape[0]
    for w in range(width):  # one state at a time: memory stays that of one forward pass
        logits = _mlp_from_members({k: v[w] for k, v in states.items()}, activation)(x)
        prob = torch.sigmoid(logits) if logits.shape[-1] == 1 else torch.softmax(logits, -1)
        total = prob if total is None else total + prob
    assert total is not None
    return total / width


def _data_config(config: dict) -> DataConfig:
    return DataConfig(**{k: (tuple(v) if isinstance(v, list) else v)
                         for k, v in config["data"].items()})


def _load_run_data(run_dir: Path, config: dict, data_dir: str | Path | None):
    """The run's data set: generated again, or image files from ``data_dir``, else the
    data root recorded in ``data.json``, else ``$THERMOTRAIN_DATA`` / the user cache."""
    from .builders import load_data

    data_cfg = _data_config(config)
    if not data_cfg.binary and data_dir is None and (run_dir / "data.json").exists():
        recorded = _load_json(run_dir / "data.json").get("data_dir")
        if recorded and Path(recorded).is_dir():
            data_dir = recorded
    return load_data(data_cfg, data_dir)


def _boundaries(run_dir: Path, config: dict, methods: list[str], path: Path) -> int:
    """Draw the classifiers; return 0 (not drawn) or the largest number of parameter
    states averaged in a panel (1: no averaging, e.g. snapshots merged by the ray backend,
    which keeps no windows)."""
    data_cfg = _data_config(config)
    if not data_cfg.binary or config["model"]["kind"] != "mlp":
        return 0
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
        return 0
    averaged = 1
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
            act = config["model"]["activation"]
            window = snap.get("window")
            if window and len(window["steps"]) > 1:  # Fig. 9: averaged over the last W steps
                first = {k: v[:, :1] for k, v in window["members"].items()}
                prob = averaged_probability(first, grid, act)[0, :, 0].reshape(gx.shape)
                p_test = averaged_probability(first, x, act)[0, :, 0]
                acc = float(((p_test > 0.5).float() == y).float().mean())
                label = f"step {snap['step']} (mean of last {len(window['steps'])})"
                averaged = max(averaged, len(window["steps"]))
            else:
                model = _mlp_from_members(snap["members"], act)
                with torch.no_grad():
                    prob = torch.sigmoid(model(grid)[0, :, 0]).reshape(gx.shape)
                    acc = float(((model(x)[0, :, 0] > 0).float() == y).float().mean())
                label = f"step {snap['step']}"
            ax.imshow(prob.numpy(), origin="lower", extent=(-lim, lim, -lim, lim),
                      cmap="RdBu_r", vmin=0, vmax=1, alpha=0.8)
            ax.scatter(x[:, 0], x[:, 1], c=y, cmap="RdBu_r", s=3, edgecolors="k",
                       linewidths=0.2, vmin=0, vmax=1)
            ax.set_title(f"{name}\n{label}, test {100 * acc:.1f} %", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return averaged


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


@torch.no_grad()
def line_losses(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x: torch.Tensor,
                y: torch.Tensor, alphas: torch.Tensor, activation: str = "relu",
                chunk: int = 10_000) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss and accuracy along the line :math:`(1-\\alpha)\\theta_A + \\alpha\\theta_B`.

    Args:
        a, b: MLP ensemble parameters ``name -> (K, ...)`` (member k of ``a`` is paired with
            member k of ``b``).
        x, y: the data set (evaluated in chunks of ``chunk`` points).
        alphas: the values of :math:`\\alpha`.

    Returns:
        ``(len(alphas), K)`` mean losses and accuracies.
    """
    losses, accs = [], []
    for alpha in alphas.tolist():
        model = _mlp_from_members({k: (1 - alpha) * a[k] + alpha * b[k] for k in a}, activation)
        loss, acc = evaluate(model, x, y, chunk)
        losses.append(loss)
        accs.append(acc)
    return torch.stack(losses), torch.stack(accs)


def _line(run_dir: Path, config: dict, methods: list[str], path: Path,
          data_dir: str | Path | None = None) -> tuple[bool, list[str]]:
    """Loss along the line between the final parameters of two methods, per saved seed.

    Returns whether ``line.png`` was drawn and the lines of its report section."""
    bases = {m["base"] for m in config["methods"] if m["name"] in methods}
    if len(methods) != 2 or len(bases) != 2 or config["model"]["kind"] != "mlp":
        return False, []
    inits = {(m["init"], m["init_std"]) for m in config["methods"]}
    if len(inits) != 1:
        return False, []  # not the same initialisation
    snaps = [_snapshots(run_dir, m) for m in methods]
    if not all(snaps) or not snaps[0][-1]["members"]:
        return False, []
    a, b = snaps[0][-1]["members"], snaps[1][-1]["members"]
    if next(iter(a.values())).shape[0] == 0:
        return False, []
    from ..data import DatasetError

    try:
        data = _load_run_data(run_dir, config, data_dir)
    except DatasetError as exc:
        note = " ".join(str(exc).split())
        return False, [f"Line plot skipped: the data set could not be loaded ({note}). Set "
                       "THERMOTRAIN_DATA or pass data_dir to write_report.", ""]
    alphas = torch.linspace(-0.5, 1.5, 41)
    i0, i1 = int((alphas - 0).abs().argmin()), int((alphas - 1).abs().argmin())
    alphas[i0], alphas[i1] = 0.0, 1.0
    act = config["model"]["activation"]
    chunk = int(config["training"].get("eval_batch", 10_000))
    curves = {split: line_losses(a, b, xs, ys, alphas, act, chunk)
              for split, xs, ys in (("train", data.x_train, data.y_train),
                                    ("test", data.x_test, data.y_test))}
    seeds = [int(config["training"]["seed"]) + k for k in range(curves["train"][0].shape[1])]

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for split, style in (("train", "-"), ("test", "--")):
        values = curves[split][0]  # (alphas, members)
        for k in range(values.shape[1]):
            ax.plot(alphas, values[:, k], style, color=f"C{k}",
                    label=f"{split}, seed {seeds[k]}" if k < 3 else None)
    ax.axvline(0, color="k", lw=0.5)
    ax.axvline(1, color="k", lw=0.5)
    ax.set_yscale("log")
    ax.set_xlabel(f"alpha: 0 = {methods[0]}, 1 = {methods[1]}")
    ax.set_ylabel("loss")
    ax.set_title(f"{config['data']['kind']}: loss along the line between the solutions",
                 fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)

    csv_lines = ["alpha,seed,split,loss,accuracy"]
    for split, (loss, acc) in curves.items():
        for i, alpha in enumerate(alphas.tolist()):
            for k, seed in enumerate(seeds):
                csv_lines.append(f"{alpha:.4g},{seed},{split},{float(loss[i, k]):.6g},"
                                 f"{float(acc[i, k]):.6g}")
    atomic_write_text(path.with_suffix(".csv"), "\n".join(csv_lines) + "\n")

    inside = (alphas >= 0) & (alphas <= 1)
    section = [
        "## Loss along the line between the two solutions (Fig. 3)",
        "",
        f"θ(α) = (1 − α) θ_{methods[0]} + α θ_{methods[1]}, final parameters of the same "
        f"seed (same initialisation), {len(alphas)} values of α in [−0.5, 1.5] "
        "(`figures/line.csv`). Barrier = max over α ∈ [0, 1] of L(α) − max(L(0), L(1)), "
        "0 when the loss never rises above both endpoints.",
        "",
        f"| seed | split | loss α=0 ({methods[0]}) | loss α=1 ({methods[1]}) | barrier | "
        f"acc. % α=0 | acc. % α=1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, seed in enumerate(seeds):
        for split, (loss, acc) in curves.items():
            l0, l1 = float(loss[i0, k]), float(loss[i1, k])
            barrier = max(0.0, float(loss[inside, k].max()) - max(l0, l1))
            section.append(f"| {seed} | {split} | {l0:.4g} | {l1:.4g} | {barrier:.3g} | "
                           f"{_pct(float(acc[i0, k]))} | {_pct(float(acc[i1, k]))} |")
    return True, section + [""]


# --------------------------------------------------------------------------- report
def write_report(run_dir: str | Path, data_dir: str | Path | None = None) -> Path:
    """Write ``report.md`` and ``figures/*.png`` for a finished run folder; return the
    path of ``report.md``. ``data_dir``: data root of image data sets (only the Fig. 3 line
    reloads them; default: the run's ``data.json``, then ``$THERMOTRAIN_DATA``).

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
    width = _boundaries(run_dir, config, methods, fig_dir / "boundaries.png")
    if width:
        averaged = (f"; classifier averaged over the last {width} steps (mean of the "
                    f"predicted probabilities)") if width > 1 else ""
        figures.append(("boundaries.png", "Classifier probability on the plane with the test "
                        f"points, first seed of each method, at the snapshot steps{averaged}"))
    if _histograms(run_dir, methods, fig_dir / "histograms.png"):
        figures.append(("histograms.png", "First-layer weights and biases over time (all "
                        "seeds)"))
    for name in _sweeps(summary, fig_dir):
        figures.append((name, "Final test accuracy over the swept hyperparameters"))
    drawn, line_section = _line(run_dir, config, methods, fig_dir / "line.png", data_dir)
    if drawn:
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
    ]
    study_notes = config.get("notes") or []
    if study_notes:
        lines += ["## Notes", ""] + [f"- {text}" for text in study_notes] + [""]
    lines += [
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
    lines += [""] + line_section + ["## Figures", ""]
    for file, caption in figures:
        lines += [f"![{caption}](figures/{file})", "", f"*{caption}.*", ""]
    report = run_dir / "report.md"
    atomic_write_text(report, "\n".join(lines) + "\n")
    return report
