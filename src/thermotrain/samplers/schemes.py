r"""Schemes: compositions of the sub-steps of :mod:`~thermotrain.samplers.substeps` (SPEC §3).

One optimizer step (SPEC §2) is, for every parameter group,

1. the *gradient part* — for momentum schemes the merged kick
   :math:`p \leftarrow p - k\,\nabla\tilde L(\theta_n)` with :math:`k = h/2` on the first step and
   :math:`k = h_{n-1}/2 + h_n/2` afterwards (momenta start at zero);
2. the *gradient-free part* of the group's scheme;

and the new :math:`\theta_{n+1}` is where the next gradient is taken. The positions are exactly
those of the textbook splitting; the stored :math:`p` lags by the closing half kick
(:meth:`PartitionedLangevin.finalize` applies it).

A new scheme is a function composing sub-steps plus one :data:`SCHEMES` entry.

=============  =============================================================
scheme         gradient-free part (all sample :math:`\propto e^{-L/\tau}`)
=============  =============================================================
``langevin``   :math:`A_{h/2}\,O_h\,A_{h/2}` (BAOAB)
``overdamped`` :math:`A_{h/2}\,O^\infty\,A_{h/2}`, :math:`p \leftarrow \sqrt\tau R`
``adaptive``   :math:`A_{h/2} C_{h/2} D_{h/2} E_h D_{h/2} C_{h/2} A_{h/2}`
``sgld``       :math:`\theta \leftarrow \theta - h\nabla\tilde L + \sqrt{2\tau h}\,R`
=============  =============================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from .substeps import drift, inject, kick, ou, ou_coefficients, rescale, thermostat

__all__ = ["Scheme", "SCHEMES", "GroupView", "get_scheme"]


@dataclass
class GroupView:
    """The tensors of one parameter group that take part in this step."""

    params: list[Tensor]
    grads: list[Tensor]
    momenta: list[Tensor]
    xis: list[Tensor]
    counts: list[int]  # entries per ensemble member
    ensemble_dims: list[int | None]
    foreach: bool
    kick: float  # the merged kick coefficient k of this step


NoiseFn = Callable[[], list[Tensor]]


@dataclass(frozen=True)
class Scheme:
    """A splitting: which hyperparameters it reads, how many normals per entry it draws each
    step, whether it keeps momenta, and its two parts."""

    name: str
    hyperparameters: tuple[str, ...]
    draws: int
    momentum: bool
    gradient_part: Callable[[GroupView, dict], None]
    gradient_free_part: Callable[[GroupView, dict, NoiseFn], None]
    thermostat: bool = False
    #: no reductions: the scheme may be applied to slices of tensors independently
    elementwise: bool = True
    description: str = ""


def _merged_kick(g: GroupView, hp: dict) -> None:
    kick(g.momenta, g.grads, g.kick, g.foreach)


def _langevin(g: GroupView, hp: dict, noise: NoiseFn) -> None:
    h = hp["lr"]
    c, d = ou_coefficients(hp["friction"], hp["temperature"], h)
    drift(g.params, g.momenta, h / 2, g.foreach)
    ou(g.momenta, noise(), c, d, g.foreach)
    drift(g.params, g.momenta, h / 2, g.foreach)


def _overdamped(g: GroupView, hp: dict, noise: NoiseFn) -> None:
    h = hp["lr"]
    drift(g.params, g.momenta, h / 2, g.foreach)
    ou(g.momenta, noise(), 0.0, math.sqrt(hp["temperature"]), g.foreach)
    drift(g.params, g.momenta, h / 2, g.foreach)


def _adaptive(g: GroupView, hp: dict, noise: NoiseFn) -> None:
    h = hp["lr"]
    s = hp["noise"] * math.sqrt(h / 2)
    drift(g.params, g.momenta, h / 2, g.foreach)
    rescale(g.momenta, g.xis, h / 2, g.foreach)
    inject(g.momenta, noise(), s, g.foreach)
    thermostat(g.xis, g.momenta, g.counts, g.ensemble_dims, h, hp["coupling"], hp["temperature"])
    inject(g.momenta, noise(), s, g.foreach)
    rescale(g.momenta, g.xis, h / 2, g.foreach)
    drift(g.params, g.momenta, h / 2, g.foreach)


def _sgld_gradient(g: GroupView, hp: dict) -> None:
    kick(g.params, g.grads, hp["lr"], g.foreach)


def _sgld(g: GroupView, hp: dict, noise: NoiseFn) -> None:
    inject(g.params, noise(), math.sqrt(2.0 * hp["temperature"] * hp["lr"]), g.foreach)


SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in (
        Scheme(
            "langevin",
            ("friction", "temperature"),
            draws=1,
            momentum=True,
            gradient_part=_merged_kick,
            gradient_free_part=_langevin,
            description="underdamped Langevin, BAOAB splitting",
        ),
        Scheme(
            "overdamped",
            ("temperature",),
            draws=1,
            momentum=True,
            gradient_part=_merged_kick,
            gradient_free_part=_overdamped,
            description="overdamped limit of BAOAB (Leimkuhler–Matthews)",
        ),
        Scheme(
            "adaptive",
            ("temperature", "noise", "coupling", "xi_init"),
            draws=2,
            momentum=True,
            gradient_part=_merged_kick,
            gradient_free_part=_adaptive,
            thermostat=True,
            elementwise=False,
            description="adaptive Langevin (Nosé–Hoover–Langevin), ACDEDCA",
        ),
        Scheme(
            "sgld",
            ("temperature",),
            draws=1,
            momentum=False,
            gradient_part=_sgld_gradient,
            gradient_free_part=_sgld,
            description="stochastic gradient Langevin dynamics (Euler–Maruyama)",
        ),
    )
}


def get_scheme(name: object) -> Scheme:
    if not isinstance(name, str) or name not in SCHEMES:
        raise ValueError(f"unknown scheme {name!r}; allowed: {', '.join(sorted(SCHEMES))}")
    return SCHEMES[name]
