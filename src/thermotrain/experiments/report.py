"""Report of a run folder: ``report.md`` and PNG figures. Reads results only, never trains.

The folder is loaded once as a :class:`~.run_view.Run` (config, long metrics table,
summary, snapshots; a missing or corrupt file is a one-line :class:`ReportError` naming it);
this module only draws and tabulates (docs/runs.md):

* the comparison table *method | ours (mean ± std over seeds) | seeds | paper | gap* (final
  test accuracy, percent; members that diverged are excluded from the means by the runner
  and counted in the seeds column, ``summary.json`` ``n_diverged``), then the study's
  ``notes``;
* ``figures/curves.png`` — mean ± std over seeds of train/test accuracy and loss per method
  (non-finite values, i.e. diverged members, left out);
* ``figures/boundaries.png`` — for 2-D data, the classifier's probability
  :math:`\\sigma(f(x))` on a grid with the test points, for the first seed of each method at
  its snapshot steps (like the paper's Figs. 1, 4, 9, 16). With ``training.snapshot_average
  = W > 1`` the panel shows the classifier averaged over the last W steps (paper Fig. 9),
  :func:`thermotrain.models.averaged_probability`; the test accuracy in the title is that of
  the averaged probability (threshold 0.5);
* ``figures/histograms.png`` — first-layer weights and biases of all seeds at the snapshot
  steps (Figs. 6–8);
* ``figures/sweep.png`` — final test accuracy against a swept hyperparameter (Figs. 1, 10,
  16), ``figures/heatmap.png`` — the same over a two-parameter grid (Fig. 15);
* ``figures/line.png`` (and ``figures/line.csv``, a report section with the endpoint losses
  and the barrier) — for two methods from the same initialisation, the train and test loss
  along the line :math:`(1-\\alpha)\\theta_A + \\alpha\\theta_B`, :math:`\\alpha \\in [-0.5, 1.5]`,
  of each saved seed (Fig. 3, SPEC §8), computed by :func:`thermotrain.landscape.interpolate`
  for any model the snapshots rebuild. Image data are found from ``data_dir``, the run's
  ``data.json``, ``$THERMOTRAIN_DATA``, in that order; if they are missing the figure is
  skipped with a note. Evaluating saved parameters is analysis, not training.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models import averaged_probability, probability
from .config import DataConfig, slug
from .run_folder import ReportError, RunError, atomic_write_text
from .run_view import Run

__all__ = ["ReportError", "comparison_table", "write_report"]

_MAX_PANELS = 12


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _pct(x: float | None) -> str:
    return f"{100 * x:.1f}" if _finite(x) else "–"


def comparison_table(summary: dict[str, Any]) -> str:
    """Markdown table of the final test accuracy: method | ours | seeds | paper | gap
    (percent). Diverged members (``n_diverged``) are counted in the seeds column."""
    lines = ["| method | ours: test acc. % (mean ± std) | seeds | paper % | gap (pp) |",
             "|---|---|---|---|---|"]
    for name, m in summary["methods"].items():
        mean = m.get("test_accuracy_mean")
        ours = f"{_pct(mean)} ± {_pct(m.get('test_accuracy_std'))}"
        seeds = str(m["n_seeds"])
        if m.get("n_diverged"):
            seeds += f" ({m['n_diverged']} diverged)"
        paper = m.get("paper") or {}
        p_acc, p_std = paper.get("test_accuracy"), paper.get("test_accuracy_std")
        if p_acc is None:
            p_text, gap = "–", "–"
        else:
            p_text = _pct(p_acc) + (f" ± {_pct(p_std)}" if p_std is not None else "")
            if paper.get("step") not in (None, m["steps"]):
                p_text += f" (at step {paper['step']})"
            gap = f"{100 * (mean - p_acc):+.1f}" if _finite(mean) else "–"
        lines.append(f"| {name} | {ours} | {seeds} | {p_text} | {gap} |")
    return "\n".join(lines)


def _diverged_lines(summary: dict[str, Any]) -> list[str]:
    """The report lines on diverged members and failed methods (none when all is well)."""
    out = []
    for name, m in summary["methods"].items():
        if m.get("error"):
            out.append(f"- {name}: could not be trained ({m['error']}).")
        if not m.get("n_diverged"):
            continue
        where = ", ".join(f"seed {d.get('seed')} at step {d.get('step')}"
                          for d in m.get("diverged") or [])
        out.append(f"- {name}: {m['n_diverged']} of {m['n_seeds']} members diverged"
                   + (f" ({where})" if where else "") + "; excluded from the means.")
    return ["## Diverged members and failed methods", ""] + out + [""] if out else []


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


def _line(run: Run, path: Path, data_dir: str | Path | None = None
          ) -> tuple[bool, list[str]]:
    """Loss along the line between the final parameters of two methods, per saved seed
    (:func:`thermotrain.landscape.interpolate`).

    Returns whether ``line.png`` was drawn and the lines of its report section."""
    from ..landscape import interpolate

    config, methods = run.config, run.methods
    bases = {m["base"] for m in config["methods"] if m["name"] in methods}
    if len(methods) != 2 or len(bases) != 2:
        return False, []
    if len({(m["init"], m["init_std"]) for m in config["methods"]}) != 1:
        return False, []  # not the same initialisation
    snaps = [run.snapshots.get(m) for m in methods]
    if not all(s is not None and s.saved and s.spec is not None for s in snaps):
        return False, []
    if snaps[0].spec != snaps[1].spec or snaps[0].saved != snaps[1].saved:
        return False, []
    from ..data import DatasetError

    try:
        data = _load_run_data(run, data_dir)
    except DatasetError as exc:
        note = " ".join(str(exc).split())
        return False, [f"Line plot skipped: the data set could not be loaded ({note}). Set "
                       "THERMOTRAIN_DATA or pass data_dir to write_report.", ""]
    alphas = torch.linspace(-0.5, 1.5, 41, dtype=torch.float64)
    i0, i1 = int((alphas - 0).abs().argmin()), int((alphas - 1).abs().argmin())
    alphas[i0], alphas[i1] = 0.0, 1.0
    model = run.model(methods[0])
    result = interpolate(model, model.state_dict(), run.model(methods[1]).state_dict(),
                         {"train": (data.x_train, data.y_train),
                          "test": (data.x_test, data.y_test)},
                         alphas=alphas, batch_size=int(config["training"].get("eval_batch",
                                                                              10_000)))
    seeds = snaps[0].seeds[: snaps[0].saved] or [
        int(config["training"]["seed"]) + k for k in range(snaps[0].saved)]
    curves = {split: (result.loss[split], result.accuracy[split]) for split in ("train", "test")}

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
        ReportError: the folder is not a finished run folder, or a file of it is missing
            or corrupt (one line naming the file).
    """
    run = Run.load(run_dir)
    config, summary = run.config, run.summary
    fig_dir = run.path / "figures"
    try:
        fig_dir.mkdir(exist_ok=True)
    except OSError as exc:
        raise ReportError(f"cannot create {fig_dir}: {exc.strerror or exc}") from None
    figures: list[tuple[str, str]] = []
    _curves(run, fig_dir / "curves.png")
    figures.append(("curves.png", "Accuracy and loss over training (mean ± std over seeds)"))
    width = _boundaries(run, fig_dir / "boundaries.png")
    if width:
        averaged = (f"; classifier averaged over the last {width} steps (mean of the "
                    f"predicted probabilities)") if width > 1 else ""
        figures.append(("boundaries.png", "Classifier probability on the plane with the test "
                        f"points, first seed of each method, at the snapshot steps{averaged}"))
    if _histograms(run, fig_dir / "histograms.png"):
        figures.append(("histograms.png", "First-layer weights and biases over time (all "
                        "seeds)"))
    for name in _sweeps(summary, fig_dir):
        figures.append((name, "Final test accuracy over the swept hyperparameters"))
    drawn, line_section = _line(run, fig_dir / "line.png", data_dir)
    if drawn:
        figures.append(("line.png", "Loss along the line between the two methods' solutions "
                        "from the same initialisation (per saved seed)"))

    t, d, model = config["training"], config["data"], config["model"]
    lines = [
        f"# {summary['study']}",
        "",
        summary.get("description", ""),
        "",
        f"Source: {config.get('source', '')}",
        "",
        f"Data: {d['kind']} (train {d['n_train'] or 'all'}, test {d['n_test'] or 'all'}); "
        f"model: {model['kind']} hidden {model.get('hidden')}, "
        f"{model.get('activation')}, init {model.get('init')}; "
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
    lines += _diverged_lines(summary)
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
        rate_text = f"{rate:,.0f}" if _finite(rate) else "–"
        lines.append(f"| {name} | {m['optimizer']} | {hp} | "
                     f"{_pct(m.get('train_accuracy_mean'))} ± "
                     f"{_pct(m.get('train_accuracy_std'))} | {rate_text} |")
    notes = [(n, m["paper"]["note"]) for n, m in summary["methods"].items()
             if m.get("paper") and m["paper"].get("note")]
    if notes:
        lines += ["", "Paper notes:", ""] + [f"- {n}: {text}" for n, text in notes]
    lines += [""] + line_section + ["## Figures", ""]
    for file, caption in figures:
        lines += [f"![{caption}](figures/{file})", "", f"*{caption}.*", ""]
    report = run.path / "report.md"
    try:
        atomic_write_text(report, "\n".join(lines) + "\n")
    except RunError as exc:  # a failed write: the report's own one-line error
        raise ReportError(str(exc)) from None
    return report
