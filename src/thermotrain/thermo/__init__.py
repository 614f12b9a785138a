r"""Thermodynamics of training (docs/science.md §4, §5, §11; the guide is ``docs/thermo.md``).

SGD's stationary state near a minimum is out of equilibrium: minibatch noise with a
diffusion matrix D not proportional to the Hessian H drives probability currents, produces
entropy and obeys fluctuation theorems; minibatching without replacement changes the
effective landscape and, for Langevin sampling, removes most of the minibatch bias (SGWORLD).

* :class:`SGWORLD` — SGLD meant for without-replacement batches;
  :func:`check_minibatch_policy` warns about SGWORLD with with-replacement batches.
* :func:`per_sample_gradients`, :func:`hessian` — any small model, ensembles per member
  (``torch.func``); :func:`chain_gradients` (K chains of one model, vectorized);
  :func:`flatten_parameters`, :func:`unflatten_parameters`, :func:`full_loss`.
* :func:`minibatch_diffusion` (D with the finite-population factor, both variants of the
  mean), :func:`effective_loss` (L_eff of WOR SGD, docs/science.md §4), :func:`minimize_newton`.
* :class:`GaussianNESS` — Σ (Lyapunov), C, v(w), σ per step, ⟨σ⟩; :func:`areal_velocity`.
* :func:`integral_fluctuation_theorem`, :func:`detailed_fluctuation_theorem`.
* :class:`KineticTemperature`, :class:`ConfigurationalTemperature` — loop hooks.
* :func:`mcmc_summary`, :func:`effective_sample_size`, :func:`rhat` — ArviZ across members.
* :func:`load_ft_regression`, :class:`FTRegressionNet` — the authors' test system (docs/science.md
§5).
"""

from .diffusion import effective_loss, finite_population_factor, minibatch_diffusion
from .fluctuation import (
    DetailedFT,
    IntegralFT,
    detailed_fluctuation_theorem,
    integral_fluctuation_theorem,
    windowed_entropy,
)
from .ftnet import FTRegression, FTRegressionNet, load_ft_regression
from .gradients import (
    chain_gradients,
    flatten_parameters,
    full_loss,
    hessian,
    per_sample_gradients,
    unflatten_parameters,
)
from .mcmc import effective_sample_size, mcmc_summary, rhat
from .monitors import ConfigurationalTemperature, KineticTemperature
from .ness import GaussianNESS, areal_velocity, minimize_newton
from .sgworld import SGWORLD, check_minibatch_policy

__all__ = [
    "SGWORLD",
    "check_minibatch_policy",
    "per_sample_gradients",
    "hessian",
    "flatten_parameters",
    "unflatten_parameters",
    "full_loss",
    "chain_gradients",
    "minibatch_diffusion",
    "finite_population_factor",
    "effective_loss",
    "minimize_newton",
    "GaussianNESS",
    "areal_velocity",
    "integral_fluctuation_theorem",
    "detailed_fluctuation_theorem",
    "windowed_entropy",
    "IntegralFT",
    "DetailedFT",
    "KineticTemperature",
    "ConfigurationalTemperature",
    "mcmc_summary",
    "effective_sample_size",
    "rhat",
    "load_ft_regression",
    "FTRegression",
    "FTRegressionNet",
]
