"""Study ``ft-regression``: SGD's non-equilibrium steady state on the authors' 7-weight
network (docs/science.md §5, issue 9; ``docs/thermo.md``).

Theory at the authors' w* (H, D in both variants, Σ, C, ⟨σ⟩) beside docs/science.md §5's table; the
one-step check of D; the cheap IFT check; K independent SGD chains as one ensemble in the
stationary state (measured ⟨σ⟩, areal velocity vs C, integral FT for k = 1, 2, 3, detailed
FT); the same without replacement (cloud size ratio, currents, mean at argmin L_eff).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ... import thermo
from ...thermo.batching import EnsembleBatches
from . import Experiment, RunContext, prepare_folder, register, write_json
from ._stages import Stages
from ._thermo_chains import (
    chain_spread,
    cheap_check,
    entropy_matrix,
    fluctuation_results,
    one_step_check,
    stationary_chains,
)
from ._thermo_common import (
    COMMON,
    COUNT,
    POSITIVE,
    SEED,
    Timer,
    figure_dir,
    fmt,
    notes_section,
    one_thread,
    pyplot,
    read_json,
    timed_stage,
    validate,
    write_report,
)

SCHEMA = {
    **COMMON,
    "system": {"lr": POSITIVE, "batch_size": COUNT},
    "one_step": {"samples": COUNT, "seed": SEED},
    "cheap_check": {"samples": COUNT, "seed": SEED},
    "stationary": {"chains": COUNT, "steps": COUNT, "seed": SEED},
    "without_replacement": {"chains": COUNT, "epochs": COUNT, "seed": SEED},
    "fluctuation": {"k": list, "bins": COUNT},
}

#: docs/science.md §5's reference values (authors' D variant, exact D)
PAPER = {"authors": {"D11": 1.72743e-10, "Sigma11": 7.7408e-7, "C12": 3.0335e-12,
                     "mean_entropy_production": 3.14828e-4},
         "spec": {"D11": 1.73058e-10, "Sigma11": 7.8439e-7, "C12": 2.9948e-12,
                  "mean_entropy_production": 3.12195e-4},
         "authors_measured_mean_entropy_production": [3.44e-4, 5.6e-5],
         "authors_ift": [0.999974, 0.999938, 0.999932],
         "wr_wor_variance_ratio": [5e3, 1e5]}


def check_spec(spec: dict[str, Any]) -> dict[str, Any]:
    file = spec.get("_file", "<study>")
    validate(spec, SCHEMA, file)
    ks = spec["fluctuation"]["k"]
    if not ks or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in ks):
        from ..config import ConfigError

        raise ConfigError(f"{file}: fluctuation.k must be a list of integers >= 1, got {ks!r}")
    return spec


# ---------------------------------------------------------------------- the study
def run(spec: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    spec = check_spec(spec)
    prepare_folder(spec, ctx)
    timer = Timer()
    lr, b = float(spec["system"]["lr"]), int(spec["system"]["batch_size"])
    with one_thread():
        data = thermo.load_ft_regression(ctx.data_dir)
        with timer.phase("theory"):
            net = thermo.FTRegressionNet(data.w_min)
            g = thermo.per_sample_gradients(net, data.loss, data.x, data.y, penalty=data.penalty)
            h = thermo.hessian(net, data.loss, data.x, data.y, penalty=data.penalty)
            data_grad = data.batch_gradient(data.w_min.unsqueeze(0), data_only=True)[0]
            ness = {"spec": thermo.GaussianNESS(h, thermo.minibatch_diffusion(g, lr, b), lr,
                                                mean=data.w_min),
                    "authors": thermo.GaussianNESS(
                        h, thermo.minibatch_diffusion(g, lr, b, mean_gradient=data_grad), lr,
                        mean=data.w_min)}
            w_eff = thermo.minimize_newton(thermo.effective_loss(data.per_sample_loss, lr, b),
                                           data.w_min, steps=8)
        theory = {name: {"D11": n.diffusion[0, 0], "Sigma11": n.covariance[0, 0],
                         "C12": n.circulation[0, 1],
                         "mean_entropy_production": n.mean_entropy_production,
                         "lyapunov_residual": n.lyapunov_residual()} for name, n in ness.items()}
        ctx.say(f"theory: <sigma> = {theory['spec']['mean_entropy_production']:.6e} (exact D),"
                f" {theory['authors']['mean_entropy_production']:.6e} (authors' variant)")

        def grad(w: Tensor, idx: Tensor) -> Tensor:
            return data.batch_gradient(w, idx)

        # each measurement a stage (stages/NAME.json, reused by --resume: docs/runs.md)
        stages = Stages(ctx.out, ctx.resume, say=ctx.say)
        o, c, s = spec["one_step"], spec["cheap_check"], spec["stationary"]
        one = timed_stage(stages, timer, "one_step", lambda: one_step_check(
            g, ness["spec"].diffusion, lr,
            EnsembleBatches(data.n, b, o["samples"], replacement=True, seed=o["seed"])))
        cheap = timed_stage(stages, timer, "cheap_check", lambda: cheap_check(
            ness["spec"], grad, lr,
            EnsembleBatches(data.n, b, c["samples"], replacement=True, seed=c["seed"]),
            c["seed"]))

        def stationary() -> dict[str, Any]:
            with timer.phase("stationary_wr"):
                w0 = torch.from_numpy(ness["spec"].sample(s["chains"],
                                                          np.random.default_rng(s["seed"])))
                batches = EnsembleBatches(data.n, b, s["chains"], replacement=True,
                                          seed=s["seed"])
                wr = stationary_chains(grad, w0, lr, batches, s["steps"], data.w_min,
                                       {n: entropy_matrix(v) for n, v in ness.items()})
            ctx.say(f"stationary WR: {s['chains']} chains x {s['steps']} steps")
            with timer.phase("fluctuation"):
                ks = [int(k) for k in spec["fluctuation"]["k"]]
                fts = {name: fluctuation_results(wr["sigma"][name], ks,
                                                 spec["fluctuation"]["bins"])
                       for name in ness}
            # the chains' σ samples are not kept: the fluctuation results are
            return {"fts": fts, **{k: wr[k] for k in ("areal_velocity", "mean", "variance",
                                                      "variance_se")}}

        wr = timed_stage(stages, timer, "stationary_wr", stationary,
                         ("stationary_wr", "fluctuation"))
        fts = wr["fts"]
        wor = timed_stage(stages, timer, "stationary_wor", lambda: without_replacement(
            grad, data, lr, b, w_eff, spec["without_replacement"]))
    # stages come back as stored (JSON): arrays as lists
    wr = {**wr, **{k: np.asarray(wr[k]) for k in ("areal_velocity", "mean", "variance")}}
    wor = {**wor, **{k: np.asarray(v) for k, v in wor.items() if isinstance(v, list)}}
    # standard errors of the variances (stages stored before they were recorded: none)
    se_wr, se_wor = _standard_errors(wr, "variance"), _standard_errors(wor, "variance")
    ratio = wr["variance"] / wor["variance"]
    a_wr = wr["areal_velocity"]
    c_spec = ness["spec"].circulation
    iu = np.triu_indices(7, 1)
    summary = {
        "experiment": "ft-regression", "name": spec["name"], "paper": PAPER,
        "theory": theory, "hessian_eigenvalues": np.linalg.eigvalsh(ness["spec"].hessian),
        "one_step": one, "cheap_check": cheap,
        "stationary": {"chains": s["chains"], "steps": s["steps"],
                       "samples": s["chains"] * s["steps"],
                       "mean_sigma": {n: f["mean_sigma"] for n, f in fts.items()},
                       "mean_sigma_se": {n: f["mean_sigma_se"] for n, f in fts.items()},
                       "mean_relative_to_wmin": float(
                           np.linalg.norm(wr["mean"] - data.w_min.numpy())
                           / np.linalg.norm(data.w_min.numpy())),
                       "areal_velocity_vs_C_slope": float(np.sum(a_wr[iu] * c_spec[iu])
                                                          / np.sum(c_spec[iu] ** 2)),
                       "areal_velocity_max": float(np.abs(a_wr).max()),
                       "variance": wr["variance"], "variance_se": se_wr,
                       "variance_theory": np.diag(ness["spec"].covariance)},
        "fluctuation": {n: {"ift": f["ift"],
                            "dft": [{k: v for k, v in d.items() if k in
                                     ("k", "slope", "stderr", "deviation", "samples")}
                                    for d in f["dft"]]} for n, f in fts.items()},
        "without_replacement": {**{k: v for k, v in wor.items() if k != "areal_velocity"},
                                "variance_se": se_wor, "variance_ratio": ratio,
                                # independent estimates: relative errors add in quadrature
                                "variance_ratio_se": ratio * np.hypot(
                                    se_wr / wr["variance"], se_wor / wor["variance"])},
        "w_eff_shift_relative": float((w_eff - data.w_min).norm() / data.w_min.norm()),
        "seconds": timer.seconds,
    }
    arrays = {"areal_velocity_wr": a_wr, "circulation": c_spec,
              "circulation_authors": ness["authors"].circulation,
              "areal_velocity_wor": wor["areal_velocity"],
              "dft": {n: f["dft"] for n, f in fts.items()}}
    write_json(ctx.out / "arrays.json", arrays)
    write_json(ctx.out / "summary.json", summary)
    return json_roundtrip(summary)


def _standard_errors(results: dict[str, Any], name: str) -> np.ndarray:
    """``results[name + "_se"]``, or NaN per entry of ``results[name]`` (results stored
    before the standard errors were recorded)."""
    se = results.get(f"{name}_se")
    return np.asarray(np.full(len(results[name]), np.nan) if se is None else se, dtype=float)


def json_roundtrip(obj: Any) -> Any:
    import json

    from . import _jsonable

    return json.loads(json.dumps(obj, default=_jsonable))


def without_replacement(grad: Callable[[Tensor, Tensor], Tensor], data: Any, lr: float,
                        b: int, w_eff: Tensor, cfg: dict[str, Any]) -> dict[str, Any]:
    """K WOR chains from argmin L_eff, recorded at epoch boundaries; the first quarter of the
    epochs is discarded (the cloud builds up over the slowest relaxation time)."""
    k, epochs = cfg["chains"], cfg["epochs"]
    batches = EnsembleBatches(data.n, b, k, replacement=False, seed=cfg["seed"])
    m = batches.steps_per_epoch
    w = w_eff.expand(k, -1).clone()
    record = torch.empty(k, epochs, 7, dtype=torch.float64)
    for e in range(epochs):
        for _ in range(m):
            w = w - lr * grad(w, batches.next())
        record[:, e] = w
    kept = record[:, epochs // 4:].numpy()
    flat = kept.reshape(-1, 7)
    mean = flat.mean(0)
    w_min, w_e = data.w_min.numpy(), w_eff.numpy()
    return {"chains": k, "epochs": epochs, "steps": epochs * m, "recorded_epochs": kept.shape[1],
            "variance": flat.var(0),
            # chain k's share of the pooled variance (about the pooled mean), as for WR
            "variance_se": chain_spread(((kept - mean) ** 2).mean(1)),
            "mean_distance_to_w_eff": float(np.linalg.norm(mean - w_e) / np.linalg.norm(w_e)),
            "mean_distance_to_w_min": float(np.linalg.norm(mean - w_min) / np.linalg.norm(w_min)),
            "w_eff_distance_to_w_min": float(np.linalg.norm(w_e - w_min) / np.linalg.norm(w_min)),
            "areal_velocity": thermo.areal_velocity(kept),
            "areal_velocity_max": float(np.abs(thermo.areal_velocity(kept)).max())}


# ---------------------------------------------------------------------- report
def table(summary: dict[str, Any]) -> str:
    t, st = summary["theory"], summary["stationary"]
    lines = ["quantity                     exact D         authors' variant",
             f"<sigma> theory               {t['spec']['mean_entropy_production']:.6e}    "
             f"{t['authors']['mean_entropy_production']:.6e}",
             f"<sigma> measured             {st['mean_sigma']['spec']:.4e} "
             f"± {st['mean_sigma_se']['spec']:.1e}"]
    for r in summary["fluctuation"]["spec"]["ift"]:
        lines.append(f"<exp(-dS_{r['k']})>              {r['mean']:.6f} ± {r['stderr']:.6f}")
    for d in summary["fluctuation"]["spec"]["dft"]:
        lines.append(f"DFT slope (k={d['k']})            {d['slope']:.3f} ± {d['stderr']:.3f}")
    wor = summary["without_replacement"]
    ratio = np.asarray(wor["variance_ratio"])
    se = _standard_errors(wor, "variance_ratio")
    low = int(np.argmin(ratio))
    lines.append(f"WR/WOR variance ratio        {ratio.min():.3g} – {ratio.max():.3g} "
                 f"(lowest {ratio[low]:.4g} ± {se[low]:.2g}, weight {low + 1})")
    return "\n".join(lines)


def report(out: Path) -> Path:
    out = Path(out)
    config = read_json(out / "config.json")
    summary = read_json(out / "summary.json")
    arrays = read_json(out / "arrays.json")
    figs = _figures(out, summary, arrays)
    t, st, paper = summary["theory"], summary["stationary"], summary["paper"]
    lines = [f"# {config.get('name', 'ft-regression')}: SGD out of equilibrium", "",
             config.get("description", ""), "",
             "## Theory at the authors' w* (Gaussian NESS)", "",
             "| quantity | ours, authors' D variant | reference | ours, exact D | reference |",
             "|---|---|---|---|---|"]
    for key, label in (("D11", "D₁₁"), ("Sigma11", "Σ₁₁"), ("C12", "C₁₂"),
                       ("mean_entropy_production", "⟨σ⟩")):
        lines.append(f"| {label} | {t['authors'][key]:.6e} | {paper['authors'][key]:.6g} | "
                     f"{t['spec'][key]:.6e} | {paper['spec'][key]:.6g} |")
    ev = ", ".join(f"{v:.2f}" for v in summary["hessian_eigenvalues"])
    lines += ["", f"Hessian eigenvalues: {ev}. Lyapunov residual "
              f"{fmt(t['spec']['lyapunov_residual'], 2)}.", "",
              "## One-step check of D and the cheap IFT check", ""]
    one, ch = summary["one_step"], summary["cheap_check"]
    lines += [f"½Cov(Δw) of {one['samples']} one-step updates from w* vs D (exact): relative "
              f"Frobenius error {fmt(one['frobenius_relative_error'], 3)}, largest diagonal "
              f"error {fmt(one['max_diagonal_relative_error'], 3)} (Monte Carlo s.e. of a "
              f"diagonal entry ≈ {fmt(one['expected_diagonal_se'], 2)}).", "",
              f"w ~ N(w*, Σ), one WR step each ({ch['samples']} samples): ⟨e^(−σ)⟩ = "
              f"{ch['exp_minus_sigma']:.6f} ± {ch['exp_minus_sigma_se']:.6f}, ⟨σ⟩ = "
              f"{fmt(ch['mean_sigma'], 3)} ± {fmt(ch['mean_sigma_se'], 2)} (reference: 0.99994 ± "
              "0.00004 and (3.7 ± 0.4)e-4 for 4e5 samples).", "",
              "## Stationary state: K chains as one ensemble", "",
              f"{st['chains']} independent SGD chains (B = 10, h = 1e-7, with replacement) "
              f"started from N(w*, Σ), {st['steps']} steps each ({st['samples']:.3g} steps in "
              "all; the authors ran one chain for 3e7 steps). σ uses μ = w*.", "",
              "| | ours | theory | authors |", "|---|---|---|---|",
              f"| ⟨σ⟩ (exact D) | {st['mean_sigma']['spec']:.4e} ± "
              f"{st['mean_sigma_se']['spec']:.1e} | {t['spec']['mean_entropy_production']:.5e} | "
              f"{paper['authors_measured_mean_entropy_production'][0]:.3g} ± "
              f"{paper['authors_measured_mean_entropy_production'][1]:.2g} |",
              f"| ⟨σ⟩ (authors' variant) | {st['mean_sigma']['authors']:.4e} ± "
              f"{st['mean_sigma_se']['authors']:.1e} | "
              f"{t['authors']['mean_entropy_production']:.5e} | |",
              f"| areal velocity vs C (slope of A_ij on C_ij) | "
              f"{st['areal_velocity_vs_C_slope']:.3f} | 1 | |", "",
              "### Fluctuation theorems (σ with exact D)", "",
              "| k | ⟨e^(−ΔS_k)⟩ | s.e. | (mean − 1)/s.e. | windows | authors |",
              "|---|---|---|---|---|---|"]
    authors_ift = paper["authors_ift"]
    for r in summary["fluctuation"]["spec"]["ift"]:
        ref = authors_ift[r["k"] - 1] if r["k"] <= len(authors_ift) else "–"
        lines.append(f"| {r['k']} | {r['mean']:.6f} | {r['stderr']:.6f} | "
                     f"{r['deviation']:+.2f} | {r['windows']} | {ref} |")
    lines += ["", "| k | DFT slope | s.e. | (slope − 1)/s.e. |", "|---|---|---|---|"]
    for d in summary["fluctuation"]["spec"]["dft"]:
        lines.append(f"| {d['k']} | {d['slope']:.3f} | {d['stderr']:.3f} | "
                     f"{d['deviation']:+.2f} |")
    wor = summary["without_replacement"]
    ratio = np.asarray(wor["variance_ratio"])
    lines += ["", "## Without replacement", "",
              f"{wor['chains']} WOR chains started at argmin L_eff, {wor['epochs']} epochs "
              f"({wor['steps']} steps), recorded at epoch boundaries, the first quarter "
              "discarded.", "",
              f"- per-coordinate variance ratio WR/WOR: {ratio.min():.3g} – {ratio.max():.3g} "
              f"(reference: 5e3–1e5; per coordinate below)",
              f"- largest |areal velocity|: WR {fmt(st['areal_velocity_max'], 2)} per step, WOR "
              f"{fmt(wor['areal_velocity_max'], 2)} per epoch-boundary record "
              "(reference: ~3e-12–5e-11 → ~1e-15–4e-14)",
              f"- stationary WOR mean: {fmt(wor['mean_distance_to_w_eff'], 2)} (relative) from "
              f"argmin L_eff, {fmt(wor['mean_distance_to_w_min'], 2)} from w* (argmin L_eff is "
              f"{fmt(wor['w_eff_distance_to_w_min'], 2)} from w*; SPEC: 4.1e-5)"]
    lines += ["", "| weight | WR variance | WOR variance | WR/WOR ratio | s.e. | "
              "beyond 5e3–1e5 (s.e.) |", "|---|---|---|---|---|---|"]
    se = _standard_errors(wor, "variance_ratio")
    for i, (v_wr, v_wor, r, e) in enumerate(zip(st["variance"], wor["variance"], ratio, se,
                                               strict=True)):
        beyond = (5e3 - r) / e if r < 5e3 else (r - 1e5) / e if r > 1e5 else 0.0
        lines.append(f"| {i + 1} | {v_wr:.4g} | {v_wor:.4g} | {r:.4g} | {e:.2g} | "
                     f"{'–' if beyond == 0 else f'{beyond:.1f}'} |")
    lines += ["", "Standard errors: each chain's share of the pooled variance (its mean "
              "squared deviation from the pooled mean), their spread over √chains (the chains "
              "are independent); the relative errors of WR and WOR added in quadrature."]
    lines += ["", "## Figures", ""] + [f"![{name}](figures/{name}.png)" for name in figs] + [""]
    lines += notes_section(config)
    lines += [f"Run time: {', '.join(f'{k} {v:.1f} s' for k, v in summary['seconds'].items())}."]
    return write_report(out, lines)


def _figures(out: Path, summary: dict[str, Any], arrays: dict[str, Any]) -> list[str]:
    plt = pyplot()
    d = figure_dir(out)
    names = []
    dfts = arrays["dft"]["spec"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for dft in dfts:
        edges, counts = np.asarray(dft["edges"]), np.asarray(dft["counts"])
        centres = 0.5 * (edges[1:] + edges[:-1])
        axes[0].semilogy(centres, np.maximum(counts, 0.5), drawstyle="steps-mid",
                         label=f"k = {dft['k']}")
        axes[1].errorbar(dft["centers"], dft["log_ratio"], yerr=dft["log_ratio_error"], fmt="o",
                         ms=3, label=f"k = {dft['k']}: slope {dft['slope']:.2f} ± "
                         f"{dft['stderr']:.2f}")
    xs = np.linspace(0, max(max(dft["centers"]) for dft in dfts), 10)
    axes[1].plot(xs, xs, "k--", label="ΔS (the detailed FT)")
    axes[0].set(xlabel="ΔS", ylabel="count", title="P(ΔS)")
    axes[1].set(xlabel="ΔS", ylabel="log P(ΔS)/P(−ΔS)", title="detailed fluctuation theorem")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(d / "detailed_ft.png", dpi=90)
    plt.close(fig)
    names.append("detailed_ft")

    iu = np.triu_indices(7, 1)
    a, c = np.asarray(arrays["areal_velocity_wr"])[iu], np.asarray(arrays["circulation"])[iu]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(c, a, "o", label="WR chains")
    lim = np.abs(np.concatenate([a, c])).max() * 1.1
    ax.plot([-lim, lim], [-lim, lim], "k--", label="A = C")
    ax.set(xlabel="circulation C_ij (theory)", ylabel="areal velocity A_ij (measured)",
           title="probability currents")
    ax.legend()
    fig.tight_layout()
    fig.savefig(d / "areal_velocity.png", dpi=90)
    plt.close(fig)
    names.append("areal_velocity")

    ift = summary["fluctuation"]["spec"]["ift"]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.errorbar([r["k"] for r in ift], [r["mean"] - 1 for r in ift],
                yerr=[r["stderr"] for r in ift], fmt="o", capsize=4, label="ours")
    ax.plot([1, 2, 3], np.asarray(summary["paper"]["authors_ift"]) - 1, "s", label="authors")
    ax.axhline(0, color="k", lw=0.8)
    ax.set(xlabel="k (steps per window)", ylabel="⟨e^(−ΔS_k)⟩ − 1", title="integral FT")
    ax.legend()
    fig.tight_layout()
    fig.savefig(d / "integral_ft.png", dpi=90)
    plt.close(fig)
    names.append("integral_ft")

    st, wor = summary["stationary"], summary["without_replacement"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(1, 8)
    ax.semilogy(x, st["variance_theory"], "k_", ms=20, label="Σ_ii (theory, WR)")
    ax.semilogy(x, st["variance"], "o", label="WR chains")
    ax.semilogy(x, wor["variance"], "s", label="WOR chains (epoch boundaries)")
    ax.set(xlabel="weight i", ylabel="variance", title="stationary cloud size")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(d / "cloud_size.png", dpi=90)
    plt.close(fig)
    names.append("cloud_size")
    return names


register(Experiment("ft-regression", run, report, table,
                    "SGD's NESS on the authors' 7-weight net: D, Σ, C, entropy production, "
                    "fluctuation theorems, without replacement (docs/science.md §5)"))
