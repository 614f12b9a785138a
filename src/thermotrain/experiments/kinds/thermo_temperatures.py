"""Study ``temperatures``: kinetic and configurational temperatures of BAOAB and AdLaLa on the
spiral net, full-batch vs minibatch gradients, a few step sizes and temperatures (issue 9,
docs/science.md §11; ``docs/thermo.md``). Trained with :func:`thermotrain.training.train`; the
monitors are :class:`~thermotrain.thermo.KineticTemperature` and
:class:`~thermotrain.thermo.ConfigurationalTemperature` hooks.

Each cell (method × τ × h × batch size) is one stage (``stages/<cell>.json``: its metric rows
and temperatures, :mod:`._stages`); ``--resume`` reuses the finished cells."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ... import samplers, thermo
from ...data import Minibatcher, spirals
from ...models import MLP
from ...training import train, write_rows
from . import Experiment, RunContext, prepare_folder, register, write_json
from ._stages import Stages
from ._thermo_common import (
    COMMON,
    COUNT,
    POSITIVE,
    POSITIVES,
    SEED,
    Timer,
    figure_dir,
    notes_section,
    one_thread,
    pyplot,
    read_json,
    validate,
    write_report,
)

SCHEMA = {
    **COMMON,
    "data": {"n_train": COUNT, "turns": POSITIVE, "seed": SEED},
    "model": {"hidden": list},
    "training": {"steps": COUNT, "members": COUNT, "seed": SEED, "record_every": COUNT,
                 "probes": COUNT},
    "grid": {"methods": list, "temperatures": POSITIVES, "lr": POSITIVES,
             "batch_sizes": list},
    "BAOAB": {"friction": POSITIVE},
    "AdLaLa": {"friction": POSITIVE, "noise": POSITIVE, "coupling": POSITIVE},
}
METHODS = ("BAOAB", "AdLaLa")


def _check(spec: dict[str, Any]) -> None:
    from ..config import ConfigError

    file = spec.get("_file", "<study>")
    validate(spec, SCHEMA, file)
    g = spec["grid"]
    if not g["methods"] or any(m not in METHODS for m in g["methods"]):
        raise ConfigError(f"{file}: grid.methods must list some of {', '.join(METHODS)}, got "
                          f"{g['methods']!r}")
    n = spec["data"]["n_train"]
    if not g["batch_sizes"] or any(isinstance(b, bool) or not isinstance(b, int)
                                   or not 0 <= b <= n for b in g["batch_sizes"]):
        raise ConfigError(f"{file}: grid.batch_sizes must list integers in [0, {n}] (0 = the "
                          f"full batch), got {g['batch_sizes']!r}")
    h = spec["model"]["hidden"]
    if not h or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in h):
        raise ConfigError(f"{file}: model.hidden must be a list of ints >= 1, got {h!r}")


def _optimizer(method: str, model: Any, spec: dict[str, Any], tau: float, h: float,
               seed: int) -> Any:
    if method == "BAOAB":
        return samplers.BAOAB(model.parameters(), lr=h, friction=spec["BAOAB"]["friction"],
                              temperature=tau, ensemble_dim=0, seed=seed)
    a = spec["AdLaLa"]
    return samplers.AdLaLa(model, lr=h, friction=a["friction"], temperature=(tau, tau),
                           noise=a["noise"], coupling=a["coupling"], ensemble_dim=0, seed=seed)


def run(spec: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    _check(spec)
    prepare_folder(spec, ctx)
    d, m, t, g = spec["data"], spec["model"], spec["training"], spec["grid"]
    x, y = spirals(d["n_train"], turns=d["turns"], seed=d["seed"])
    n, k, steps = d["n_train"], t["members"], t["steps"]
    timer, rows, cells = Timer(), [], []
    stages = Stages(ctx.out, ctx.resume, say=ctx.say)

    def measure(method: str, tau: float, h: float, batch: int, label: str) -> dict[str, Any]:
        model = MLP([2, *m["hidden"], 1], ensemble=k, seed=t["seed"])
        opt = _optimizer(method, model, spec, tau, h, t["seed"])
        batcher = Minibatcher(n, batch, replacement=False, seed=t["seed"], ensemble=k)
        hooks = [thermo.KineticTemperature(every=t["record_every"]),
                 thermo.ConfigurationalTemperature(every=t["record_every"], probes=t["probes"],
                                                   start=steps // 2, seed=t["seed"],
                                                   laplacian="fd", data="full"),
                 thermo.ConfigurationalTemperature(every=t["record_every"], probes=t["probes"],
                                                   start=steps // 2, seed=t["seed"],
                                                   laplacian="hvp", data="full",
                                                   name="configurational_temperature_hvp")]
        with timer.phase(label), one_thread():
            state = train(model, opt, batcher, steps=steps, x_train=x, y_train=y, hooks=hooks,
                          seeds=list(range(t["seed"], t["seed"] + k)), study=spec["name"],
                          method=label, handle_signals=False)
        ctx.say(f"{label}: done in {timer.seconds[label]:.1f} s")
        cell = {"method": method, "temperature": tau, "lr": h, "batch_size": batch,
                "label": label,
                "configurational": [v.tolist() for v in hooks[1].temperatures()],
                "configurational_hvp": [v.tolist() for v in hooks[2].temperatures()]}
        return {"cell": cell, "rows": [list(r) for r in state.rows],
                "seconds": timer.seconds[label]}

    for method, tau, h, b in itertools.product(g["methods"], g["temperatures"], g["lr"],
                                               g["batch_sizes"]):
        batch = n if b == 0 else b
        label = f"{method} tau={tau:g} h={h:g} B={'full' if b == 0 else b}"
        # one stage per cell: its training with the monitors (docs/runs.md)
        done = stages.run(label, lambda a=(method, float(tau), float(h), batch, label):
                          measure(*a))
        timer.seconds[label] = done["seconds"]
        rows += [tuple(r) for r in done["rows"]]
        cells.append(done["cell"])
    write_rows(rows, ctx.out / "metrics.csv")
    frame = pd.DataFrame(rows, columns=["study", "method", "seed", "step", "split", "metric",
                                        "value"])
    for cell in cells:
        late = frame[(frame.method == cell["label"]) & (frame.step >= steps // 2)]
        kin = late[late.metric.str.startswith("kinetic_temperature/")]
        cell["kinetic"] = {mt.split("/")[-1]: float(v) for mt, v in
                           kin.groupby("metric")["value"].mean().items()}
        cell["configurational_mean"] = {f"group{i}": float(np.mean(v))
                                        for i, v in enumerate(cell["configurational"])}
        cell["configurational_hvp_mean"] = {f"group{i}": float(np.mean(v))
                                            for i, v in enumerate(cell["configurational_hvp"])}
    summary = {"experiment": "temperatures", "name": spec["name"], "cells": cells,
               "steps": steps, "members": k, "seconds": timer.seconds}
    write_json(ctx.out / "summary.json", summary)
    return summary


def table(summary: dict[str, Any]) -> str:
    lines = [f"{'cell':<36} {'group':>6} {'T_kin/tau':>10} {'T_conf/tau':>11} {'(hvp)':>8}"]
    for c in summary["cells"]:
        for grp in sorted(set(c["kinetic"]) | set(c["configurational_mean"])):
            tk = c["kinetic"].get(grp, float("nan")) / c["temperature"]
            tc = c["configurational_mean"].get(grp, float("nan")) / c["temperature"]
            th = c["configurational_hvp_mean"].get(grp, float("nan")) / c["temperature"]
            lines.append(f"{c['label']:<36} {grp:>6} {tk:10.3f} {tc:11.3f} {th:8.3f}")
    return "\n".join(lines)


def report(out: Path) -> Path:
    out = Path(out)
    config = read_json(out / "config.json")
    summary = read_json(out / "summary.json")
    try:
        frame = pd.read_csv(out / "metrics.csv")
    except (OSError, ValueError) as exc:
        from ..run_folder import ReportError

        raise ReportError(f"{out / 'metrics.csv'} is missing or unreadable ({exc})") from None
    plt = pyplot()
    d = figure_dir(out)
    figs = []
    for method in sorted({c["method"] for c in summary["cells"]}):
        cells = [c for c in summary["cells"] if c["method"] == method]
        fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
        for ax, kind in zip(axes, ("kinetic_temperature", "configurational_temperature"),
                            strict=True):
            for c in cells:
                sel = frame[(frame.method == c["label"])
                            & (frame.metric == f"{kind}/group0")]
                curve = sel.groupby("step")["value"].mean() / c["temperature"]
                if len(curve):
                    ax.semilogy(curve.index, curve.values, label=c["label"].split(" ", 1)[1],
                                lw=1)
            ax.axhline(1.0, color="k", lw=0.8)
            ax.set(xlabel="step", title=f"{method}: {kind.replace('_', ' ')} (group 0) / τ")
        axes[0].set_ylabel("T / τ (mean over members)")
        axes[1].legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(d / f"temperatures_{method}.png", dpi=90)
        plt.close(fig)
        figs.append(f"temperatures_{method}")
    lines = [f"# {config.get('name', 'temperatures')}: kinetic and configurational "
             "temperatures (docs/science.md §11)", "", config.get("description", ""), "",
             f"{summary['members']} members per cell, {summary['steps']} steps; averages over "
             "the second half of the run and the members (T_conf: the ratio of the summed "
             "‖∇L‖² and Hutchinson Laplacians on the full train set; the central-difference "
             "Laplacian, and in the last column the double-backward HVP, which misses the ReLU "
             "kinks' curvature). Groups: BAOAB has one group; AdLaLa group0 = first layer "
             "(adaptive Langevin), group1 = the rest (Langevin).", "",
             "| cell | group | T_kin / τ | T_conf / τ | T_conf (HVP) / τ |",
             "|---|---|---|---|---|"]
    for c in summary["cells"]:
        for grp in sorted(set(c["kinetic"]) | set(c["configurational_mean"])):
            tau = c["temperature"]
            texts = []
            for table_ in (c["kinetic"], c["configurational_mean"],
                           c.get("configurational_hvp_mean", {})):
                v = table_.get(grp)
                texts.append("–" if v is None else f"{v / tau:.3f}")
            lines.append(f"| {c['label']} | {grp} | {' | '.join(texts)} |")
    lines += ["", "## Figures", ""] + [f"![{f}](figures/{f}.png)" for f in figs] + [""]
    lines += notes_section(config)
    lines += [f"Run time: {sum(summary['seconds'].values()):.1f} s."]
    return write_report(out, lines)


register(Experiment("temperatures", run, report, table,
                    "kinetic and configurational temperatures of BAOAB and AdLaLa on the "
                    "spiral net: full batch vs minibatch (docs/science.md §11)"))
