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
  of each saved seed (Fig. 3, docs/science.md §8), computed by
  :func:`thermotrain.landscape.interpolate`
  for any model the snapshots rebuild. Image data are found from ``data_dir``, the run's
  ``data.json``, ``$THERMOTRAIN_DATA``, in that order; if they are missing the figure is
  skipped with a note. Evaluating saved parameters is analysis, not training.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from .report_figures import _boundaries, _curves, _histograms, _load_run_data, _plt, _sweeps
from .run_folder import ReportError, RunError, atomic_write_text
from .run_view import Run

__all__ = ["ReportError", "comparison_table", "write_report"]


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
    cells = [c for m in summary["methods"].values() for c in m.get("ray_cells") or []]
    if cells:
        lines += ["", f"Trained as {len(cells)} ray cells on {len({c['node'] for c in cells})} "
                  "node(s) (`summary.json` ray_cells)."]
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
