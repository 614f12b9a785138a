"""Study ``bayes-linreg``: ULA, SGLD and SGWORLD on docs/science.md §4's Bayesian linear regression,
thousands of chains as one ensemble; the covariance error against the exact posterior
(issue 9; ``docs/thermo.md``).

Each (step size, sampler) pair is one stage (``stages/h-<h>-<method>.json``, :mod:`._stages`):
``--resume`` reuses the finished ones and samples the rest with the same seeds."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ... import samplers, thermo
from ...data import bayesian_linear_regression
from ...thermo.batching import EnsembleBatches
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
    fmt,
    notes_section,
    one_thread,
    pyplot,
    read_json,
    validate,
    write_report,
)

METHODS = ("ULA", "SGLD", "SGWORLD")
SCHEMA = {
    **COMMON,
    "problem": {"n": COUNT, "dim": COUNT, "batch_size": COUNT, "noise_std": POSITIVE,
                "prior_std": POSITIVE, "seed": SEED},
    "sampling": {"chains": COUNT, "records": COUNT, "burn_in_relaxations": POSITIVE,
                 "record_relaxations": POSITIVE, "steps": POSITIVES, "methods": list,
                 "seed": SEED},
}
PAPER = {"h=1e-4": {"ULA": 0.010, "SGLD": [0.18, 0.21], "SGWORLD": [0.030, 0.032]},
         "h=3e-5": {"ULA": 0.003, "SGLD": 0.062, "SGWORLD": 0.0027}}


def _check(spec: dict[str, Any]) -> None:
    file = spec.get("_file", "<study>")
    validate(spec, SCHEMA, file)
    methods = spec["sampling"]["methods"]
    bad = [m for m in methods if m not in METHODS] if isinstance(methods, list) else [methods]
    if bad or not methods:
        from ..config import ConfigError

        raise ConfigError(f"{file}: sampling.methods must list some of {', '.join(METHODS)}, "
                          f"got {methods!r}")
    p = spec["problem"]
    if p["batch_size"] > p["n"]:
        from ..config import ConfigError

        raise ConfigError(f"{file}: problem.batch_size must be <= problem.n = {p['n']}, got "
                          f"{p['batch_size']}")


def sample(problem: Any, method: str, h: float, chains: int, batch_size: int, burn: int,
           thin: int, records: int, seed: int) -> np.ndarray:
    """``(chains, records, d)`` draws of one sampler, chains started at the posterior mean.

    ULA: full gradient; SGLD: with-replacement batches; SGWORLD: epoch permutations; all
    θ ← θ − h∇L + √(2h)R with the sum-scaled loss (τ = 1, docs/science.md §4)."""
    theta = problem.mean.to(torch.float64).expand(chains, -1).clone().requires_grad_(True)
    cls = thermo.SGWORLD if method == "SGWORLD" else samplers.SGLD
    opt = cls([theta], lr=h, temperature=1.0, seed=seed, ensemble_dim=0, rng="philox")
    thermo.check_minibatch_policy(opt, replacement=method == "SGLD")
    batches = None if method == "ULA" else EnsembleBatches(
        problem.n, batch_size, chains, replacement=method == "SGLD", seed=seed)
    out = torch.empty(chains, records, problem.dim, dtype=torch.float64)
    with torch.no_grad():
        for step in range(burn + thin * records):
            idx = None if batches is None else batches.next()
            theta.grad = problem.grad_neg_log_posterior(theta, idx)
            opt.step()
            j, r = divmod(step + 1 - burn, thin)
            if step + 1 > burn and r == 0:
                out[:, j - 1] = theta
    return out.numpy()


def covariance_error(draws: np.ndarray, target: np.ndarray) -> float:
    """‖Σ̂ − Σ‖_F / ‖Σ‖_F with Σ̂ the covariance of all draws (chains × records)."""
    cov = np.cov(draws.reshape(-1, draws.shape[-1]).T)
    return float(np.linalg.norm(cov - target) / np.linalg.norm(target))


def run(spec: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    _check(spec)
    prepare_folder(spec, ctx)
    p, s = spec["problem"], spec["sampling"]
    problem = bayesian_linear_regression(p["n"], p["dim"], noise_std=p["noise_std"],
                                         prior_std=p["prior_std"], seed=p["seed"],
                                         dtype=torch.float64)
    exact = problem.covariance.numpy()
    lam = np.linalg.eigvalsh(problem.precision.numpy())
    timer, rows, diagnostics = Timer(), [], {}
    stages = Stages(ctx.out, ctx.resume, say=ctx.say)

    def measure(method: str, h: float, burn: int, thin: int, ula: np.ndarray,
                exact_ula: float) -> dict[str, Any]:
        phase = f"{method} h={h:g}"
        with timer.phase(phase):
            draws = sample(problem, method, h, s["chains"], p["batch_size"], burn,
                           thin, s["records"], s["seed"])
        err = covariance_error(draws, exact)
        row = {"h": h, "method": method, "error": err, "exact_ula_error": exact_ula,
               "steps": burn + thin * s["records"], "burn_in": burn, "thin": thin,
               "n_over_b_h_lambda_max": p["n"] / p["batch_size"] * h * lam.max()}
        if method == "ULA":  # pure Monte Carlo noise: ULA's draws vs ULA's exact Σ_h
            row["noise_level"] = covariance_error(draws, ula)
        table_ = thermo.mcmc_summary(draws, kind="diagnostics")
        row["ess_bulk_min"] = float(table_["ess_bulk"].min())
        row["r_hat_max"] = float(table_["r_hat"].max())
        ctx.say(f"h={h:g} {method}: error {err:.4f}")
        return {"row": row, "seconds": timer.seconds[phase]}

    with one_thread():
        hs = [float(v) for v in s["steps"]]
        for h in hs:
            if h >= problem.max_stable_step():
                from ..config import ConfigError

                raise ConfigError(f"{spec['_file']}: sampling.steps has h = {h} >= "
                                  f"2/λ_max(H) = {problem.max_stable_step():.4g} (ULA unstable)")
        for h in hs:
            relax = 1.0 / (h * lam.min())
            burn = math.ceil(s["burn_in_relaxations"] * relax)
            thin = max(1, math.ceil(s["record_relaxations"] * relax))
            ula = problem.ula_covariance(h).numpy()
            exact_ula = float(np.linalg.norm(ula - exact) / np.linalg.norm(exact))
            for method in s["methods"]:
                # one stage per (h, sampler): its chains and measurements (docs/runs.md)
                done = stages.run(f"h={h:g}-{method}",
                                  lambda m=method, h=h, b=burn, t=thin, u=ula, e=exact_ula:
                                  measure(m, h, b, t, u, e))
                timer.seconds[f"{method} h={h:g}"] = done["seconds"]
                rows.append(done["row"])
    summary = {"experiment": "bayes-linreg", "name": spec["name"], "paper": PAPER,
               "rows": rows, "lambda": lam, "chains": s["chains"], "records": s["records"],
               "diagnostics": diagnostics, "seconds": timer.seconds}
    write_json(ctx.out / "summary.json", summary)
    return summary


def table(summary: dict[str, Any]) -> str:
    lines = [f"{'h':>8} {'method':>8} {'error':>8} {'ULA exact':>10} {'ESS min':>9} {'R-hat':>7}"]
    for r in summary["rows"]:
        lines.append(f"{r['h']:8.1e} {r['method']:>8} {r['error']:8.4f} "
                     f"{r['exact_ula_error']:10.4f} {r['ess_bulk_min']:9.0f} "
                     f"{r['r_hat_max']:7.4f}")
    return "\n".join(lines)


def report(out: Path) -> Path:
    out = Path(out)
    config = read_json(out / "config.json")
    summary = read_json(out / "summary.json")
    rows = summary["rows"]
    plt = pyplot()
    d = figure_dir(out)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for method in METHODS:
        pts = [(r["h"], r["error"]) for r in rows if r["method"] == method]
        if pts:
            ax.loglog(*zip(*pts, strict=True), "o-", label=method)
    hs = sorted({r["h"] for r in rows})
    ax.loglog(hs, [next(r["exact_ula_error"] for r in rows if r["h"] == h) for h in hs], "k--",
              label="ULA exact [H(I − hH/2)]⁻¹")
    noise = [r["noise_level"] for r in rows if "noise_level" in r]
    if noise:
        ax.axhline(float(np.median(noise)), color="grey", lw=0.8, ls=":",
                   label="Monte Carlo noise level")
    ax.set(xlabel="step size h", ylabel="‖Σ̂ − Σ‖_F / ‖Σ‖_F",
           title="covariance error vs h (Bayesian linear regression)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(d / "error_vs_h.png", dpi=90)
    plt.close(fig)
    lam = summary["lambda"]
    lines = [f"# {config.get('name', 'bayes-linreg')}: SGWORLD vs SGLD vs ULA", "",
             config.get("description", ""), "",
             f"{summary['chains']} chains per sampler as one ensemble, started at the posterior "
             f"mean, {summary['records']} records each after a burn-in; λ(H) = "
             f"{', '.join(f'{v:.1f}' for v in lam)}.", "",
             "| h | method | error | ULA exact | (N/B)·h·λ_max | steps | ESS (bulk, min) | "
             "R̂ (max) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['h']:.0e} | {r['method']} | {r['error']:.4f} | "
                     f"{r['exact_ula_error']:.4f} | {r['n_over_b_h_lambda_max']:.3f} | "
                     f"{r['steps']} | {r['ess_bulk_min']:.0f} | {r['r_hat_max']:.4f} |")
    noise = [r["noise_level"] for r in rows if "noise_level" in r]
    lines += ["", f"Monte Carlo noise level of the error (ULA's draws against ULA's exact "
              f"stationary covariance): {', '.join(fmt(v, 2) for v in noise)} for the h's in "
              "order.", "",
              "Paper (docs/science.md §4, two independent draws): h = 1e-4: ULA 0.010, "
              "SGLD 0.18–0.21, SGWORLD 0.030–0.032; h = 3e-5: ULA 0.003, SGLD 0.062, SGWORLD "
              "0.0027.", "", "![error vs h](figures/error_vs_h.png)", ""]
    lines += notes_section(config)
    lines += [f"Run time: {sum(summary['seconds'].values()):.1f} s."]
    return write_report(out, lines)


register(Experiment("bayes-linreg", run, report, table,
                    "ULA, SGLD and SGWORLD on Bayesian linear regression: covariance error vs h "
                    "(docs/science.md §4)"))
