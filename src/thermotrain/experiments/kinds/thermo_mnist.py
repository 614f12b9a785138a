"""Study ``ft-mnist``: SGD's non-equilibrium steady state for softmax regression on a
PCA-reduced MNIST (the abstract's second example; protocol ours, ``docs/thermo.md``).

The model is generic PyTorch (``nn.Linear`` with a reference class, so that no exact symmetry
makes D singular); every quantity comes from :mod:`thermotrain.thermo` for any small model:
per-sample gradients and the Hessian by ``torch.func``, the minimum by Newton, K SGD chains
through :func:`~thermotrain.thermo.chain_gradients`.

Stages (``stages/<name>.json``, :mod:`._stages`): ``one_step``, ``cheap_check`` and
``stationary`` (the chains with the fluctuation theorems); ``--resume`` reuses the finished
ones (the data, the minimum and the theory, seconds, are always recomputed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ... import thermo
from ...data import load_mnist
from ...thermo.batching import EnsembleBatches
from . import Experiment, RunContext, prepare_folder, register, write_json
from ._stages import Stages
from ._thermo_chains import (
    cheap_check,
    entropy_matrix,
    fluctuation_results,
    one_step_check,
)
from ._thermo_chains import stationary_chains as run_chains
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
    "data": {"n_train": COUNT, "components": COUNT, "classes": COUNT},
    "model": {"weight_decay": POSITIVE},
    "sgd": {"lr": POSITIVE, "batch_size": COUNT},
    "one_step": {"samples": COUNT, "seed": SEED},
    "cheap_check": {"samples": COUNT, "seed": SEED},
    "stationary": {"chains": COUNT, "steps": COUNT, "seed": SEED},
    "fluctuation": {"k": list, "bins": COUNT},
}


class ReferenceSoftmax(nn.Module):
    """Softmax regression whose class 0 has logit 0 (the other C − 1 are ``Linear(d, C − 1)``):
    without the reference class, adding one vector to every class's weights leaves the loss
    unchanged and the gradient covariance D singular."""

    def __init__(self, d: int, classes: int):
        super().__init__()
        self.linear = nn.Linear(d, classes - 1, dtype=torch.float64)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        z = self.linear(x)
        return torch.cat([torch.zeros_like(z[..., :1]), z], dim=-1)


def pca_mnist(n: int, components: int, classes: int, data_dir: str | None
              ) -> tuple[Tensor, Tensor, np.ndarray]:
    """The first ``n`` training digits of the first ``classes`` classes, pixels in [0, 1],
    projected on their top ``components`` principal directions and standardized (float64);
    also the explained-variance fractions."""
    images, labels = load_mnist("train", data_dir, dtype=torch.float64)
    keep = labels < classes
    x, y = images[keep][:n].reshape(-1, 784), labels[keep][:n]
    xc = x - x.mean(0)
    _, s, vt = torch.linalg.svd(xc, full_matrices=False)
    z = xc @ vt[:components].T
    z = z / z.std(0)
    explained = (s[:components] ** 2 / (s**2).sum()).numpy()
    return z, y, explained


def run(spec: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    file = spec.get("_file", "<study>")
    validate(spec, SCHEMA, file)
    ks = spec["fluctuation"]["k"]
    if not ks or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in ks):
        from ..config import ConfigError

        raise ConfigError(f"{file}: fluctuation.k must be a list of integers >= 1, got {ks!r}")
    if spec["data"]["classes"] < 2 or spec["data"]["classes"] > 10:
        from ..config import ConfigError

        raise ConfigError(f"{file}: data.classes must be in 2..10, got "
                          f"{spec['data']['classes']!r}")
    prepare_folder(spec, ctx)
    d, sgd = spec["data"], spec["sgd"]
    lr, b, lam = float(sgd["lr"]), int(sgd["batch_size"]), float(spec["model"]["weight_decay"])
    timer = Timer()
    with one_thread():
        with timer.phase("data"):
            x, y, explained = pca_mnist(d["n_train"], d["components"], d["classes"], ctx.data_dir)
        n = x.shape[0]
        model = ReferenceSoftmax(d["components"], d["classes"])

        def penalty(p: dict[str, Tensor]) -> Tensor:
            return 0.5 * lam * sum(t.square().sum() for t in p.values())

        with timer.phase("minimum"):
            f = thermo.full_loss(model, F.cross_entropy, x, y, penalty)
            w_star = thermo.minimize_newton(f, thermo.flatten_parameters(model), steps=30)
            params = thermo.unflatten_parameters(w_star, dict(model.named_parameters()))
        with timer.phase("theory"):
            g = thermo.per_sample_gradients(model, F.cross_entropy, x, y, penalty=penalty,
                                            params=params)
            h = thermo.hessian(model, F.cross_entropy, x, y, penalty=penalty, params=params)
            ness = thermo.GaussianNESS(h, thermo.minibatch_diffusion(g, lr, b), lr,
                                       mean=w_star)
        eig = np.linalg.eigvalsh(ness.hessian)
        ctx.say(f"P = {w_star.numel()} parameters, <sigma> theory "
                f"{ness.mean_entropy_production:.4e}")
        grad = thermo.chain_gradients(model, F.cross_entropy, x, y, penalty=penalty)
        stages = Stages(ctx.out, ctx.resume, say=ctx.say)

        def timed(phase: str, compute: Any, phases: tuple[str, ...] = ()) -> Any:
            return timed_stage(stages, timer, phase, compute, phases)

        o, c, s = spec["one_step"], spec["cheap_check"], spec["stationary"]
        one = timed("one_step", lambda: one_step_check(g, ness.diffusion, lr, EnsembleBatches(
            n, b, o["samples"], replacement=True, seed=o["seed"])))
        cheap = timed("cheap_check", lambda: cheap_check(ness, grad, lr, EnsembleBatches(
            n, b, c["samples"], replacement=True, seed=c["seed"]), c["seed"]))

        def stationary() -> dict[str, Any]:
            with timer.phase("stationary"):
                w0 = torch.from_numpy(ness.sample(s["chains"],
                                                  np.random.default_rng(s["seed"])))
                wr = run_chains(grad, w0, lr, EnsembleBatches(n, b, s["chains"],
                                                              replacement=True, seed=s["seed"]),
                                s["steps"], w_star, {"spec": entropy_matrix(ness)})
            with timer.phase("fluctuation"):
                ks = [int(k) for k in spec["fluctuation"]["k"]]
                ft = fluctuation_results(wr["sigma"]["spec"], ks, spec["fluctuation"]["bins"])
            return {"ft": ft, "areal_velocity": wr["areal_velocity"],
                    "variance": wr["variance"]}

        # the chains and their fluctuation theorems: one stage (σ itself is not kept)
        st = timed("stationary", stationary, ("stationary", "fluctuation"))
        ft = st["ft"]
        wr = {"areal_velocity": np.asarray(st["areal_velocity"]),
              "variance": np.asarray(st["variance"])}
    iu = np.triu_indices(ness.dim, 1)
    a, cc = wr["areal_velocity"], ness.circulation
    summary = {
        "experiment": "ft-mnist", "name": spec["name"], "parameters": ness.dim, "samples": n,
        "pca_explained_variance": float(explained.sum()),
        "hessian_eigenvalues": [float(eig.min()), float(eig.max())],
        "relaxation_steps": 1.0 / (lr * float(eig.min())),
        "h_lambda_max": lr * float(eig.max()),
        "theory": {"mean_entropy_production": ness.mean_entropy_production,
                   "lyapunov_residual": ness.lyapunov_residual(),
                   "circulation_max": float(np.abs(cc).max()),
                   "diffusion_condition": float(np.linalg.cond(ness.diffusion))},
        "one_step": one, "cheap_check": cheap,
        "stationary": {"chains": s["chains"], "steps": s["steps"],
                       "mean_sigma": ft["mean_sigma"], "mean_sigma_se": ft["mean_sigma_se"],
                       "areal_velocity_vs_C_slope": float(np.sum(a[iu] * cc[iu])
                                                          / np.sum(cc[iu] ** 2)),
                       "variance_vs_theory": float(np.median(wr["variance"]
                                                             / np.diag(ness.covariance)))},
        "fluctuation": {"ift": ft["ift"],
                        "dft": [{k: v for k, v in dd.items()
                                 if k in ("k", "slope", "stderr", "deviation", "samples")}
                                for dd in ft["dft"]]},
        "seconds": timer.seconds,
    }
    write_json(ctx.out / "arrays.json", {"dft": ft["dft"], "areal_velocity": a[iu],
                                         "circulation": cc[iu]})
    write_json(ctx.out / "summary.json", summary)
    return summary


def table(summary: dict[str, Any]) -> str:
    st = summary["stationary"]
    lines = [f"parameters {summary['parameters']}, samples {summary['samples']}",
             f"<sigma> theory {summary['theory']['mean_entropy_production']:.4e}, measured "
             f"{st['mean_sigma']:.4e} ± {st['mean_sigma_se']:.1e}"]
    for r in summary["fluctuation"]["ift"]:
        lines.append(f"<exp(-dS_{r['k']})> = {r['mean']:.6f} ± {r['stderr']:.6f}")
    for dd in summary["fluctuation"]["dft"]:
        lines.append(f"DFT slope (k={dd['k']}) = {dd['slope']:.3f} ± {dd['stderr']:.3f}")
    return "\n".join(lines)


def report(out: Path) -> Path:
    out = Path(out)
    config = read_json(out / "config.json")
    summary = read_json(out / "summary.json")
    arrays = read_json(out / "arrays.json")
    plt = pyplot()
    d = figure_dir(out)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for dft in arrays["dft"]:
        axes[0].errorbar(dft["centers"], dft["log_ratio"], yerr=dft["log_ratio_error"],
                         fmt="o", ms=3, label=f"k = {dft['k']}: slope {dft['slope']:.2f} ± "
                         f"{dft['stderr']:.2f}")
    top = max(max(dft["centers"]) for dft in arrays["dft"])
    axes[0].plot([0, top], [0, top], "k--", label="ΔS")
    axes[0].set(xlabel="ΔS", ylabel="log P(ΔS)/P(−ΔS)", title="detailed FT (MNIST)")
    axes[0].legend(fontsize=8)
    c, a = np.asarray(arrays["circulation"]), np.asarray(arrays["areal_velocity"])
    axes[1].plot(c, a, ".", ms=3)
    lim = np.abs(np.concatenate([a, c])).max() * 1.1
    axes[1].plot([-lim, lim], [-lim, lim], "k--")
    axes[1].set(xlabel="C_ij (theory)", ylabel="A_ij (measured)", title="areal velocity vs C")
    fig.tight_layout()
    fig.savefig(d / "ft_mnist.png", dpi=90)
    plt.close(fig)
    t, st, one, ch = summary["theory"], summary["stationary"], summary["one_step"], \
        summary["cheap_check"]
    lines = [f"# {config.get('name', 'ft-mnist')}: SGD out of equilibrium on MNIST", "",
             config.get("description", ""), "",
             f"{summary['parameters']} parameters, {summary['samples']} digits, PCA keeps "
             f"{summary['pca_explained_variance']:.1%} of the pixel variance. Hessian "
             f"eigenvalues {fmt(summary['hessian_eigenvalues'][0], 3)} … "
             f"{fmt(summary['hessian_eigenvalues'][1], 3)} (h·λ_max = "
             f"{fmt(summary['h_lambda_max'], 3)}; slowest relaxation "
             f"{summary['relaxation_steps']:.3g} steps); cond(D) = "
             f"{fmt(t['diffusion_condition'], 3)}.", "",
             "| quantity | value |", "|---|---|",
             f"| ⟨σ⟩ theory | {t['mean_entropy_production']:.5e} |",
             f"| ⟨σ⟩ measured ({st['chains']} chains × {st['steps']} steps) | "
             f"{st['mean_sigma']:.4e} ± {st['mean_sigma_se']:.1e} |",
             f"| one-step ½Cov(Δw) vs D, relative Frobenius error | "
             f"{fmt(one['frobenius_relative_error'], 3)} ({one['samples']} samples) |",
             f"| cheap check ⟨e^(−σ)⟩ | {ch['exp_minus_sigma']:.6f} ± "
             f"{ch['exp_minus_sigma_se']:.6f} |",
             f"| areal velocity vs C (slope) | {st['areal_velocity_vs_C_slope']:.3f} |",
             f"| stationary variance / Σ_ii (median) | {st['variance_vs_theory']:.3f} |"]
    for r in summary["fluctuation"]["ift"]:
        lines.append(f"| ⟨e^(−ΔS_{r['k']})⟩ | {r['mean']:.6f} ± {r['stderr']:.6f} "
                     f"({r['deviation']:+.2f} s.e.) |")
    for dd in summary["fluctuation"]["dft"]:
        lines.append(f"| DFT slope, k = {dd['k']} | {dd['slope']:.3f} ± {dd['stderr']:.3f} |")
    lines += ["", "![ft-mnist](figures/ft_mnist.png)", ""] + notes_section(config)
    lines += [f"Run time: {sum(summary['seconds'].values()):.1f} s."]
    return write_report(out, lines)


register(Experiment("ft-mnist", run, report, table,
                    "SGD's NESS and fluctuation theorems for softmax regression on PCA-reduced "
                    "MNIST (protocol ours)"))
