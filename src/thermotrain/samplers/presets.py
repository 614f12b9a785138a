r"""The paper's methods as presets of :class:`~thermotrain.samplers.PartitionedLangevin`
(docs/science.md §3).

Single-scheme samplers take ``params`` like any torch optimizer. Partitioned presets take a
model — partitioned *by layer*: a layer is the set of parameters owned directly by one module,
in registration order (:func:`layers`) — or an explicit list of layers (each an iterable of
tensors or a param-group dict, which may override hyperparameters), so users decide which
layer gets which dynamics. The ``*_layers`` arguments choose which layer indices get the
"first-layer" dynamics (default: layer 0 only).

=============  =====================  ===========================
preset         layers in ``first``    other layers
=============  =====================  ===========================
``BAOAB``      Langevin (γ, τ)        Langevin (γ, τ)
``LaLa``       Langevin (γ₁, τ₁)      Langevin (γ_ℓ, τ_ℓ) each
``AdLaLa``     AdL (σ_A, ε, τ₁, ξ₀)   Langevin (γ, τ₂)
``LOL``        Langevin (γ₁, τ₁)      Overdamped (τ₂)
=============  =====================  ===========================
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from torch import Tensor, nn

from .optimizer import Hyperparameter, PartitionedLangevin
from .splittings import SPLITTINGS, scheme_for_splitting

__all__ = [
    "layers",
    "Langevin",
    "BAOAB",
    "SGLD",
    "OverdampedLangevin",
    "AdaptiveLangevin",
    "AdLaLa",
    "LOL",
    "LaLa",
    "PRESETS",
]


def layers(model: nn.Module) -> list[list[nn.Parameter]]:
    """The layers of ``model``: for every module that owns parameters directly (in
    registration order), the list of those parameters (e.g. ``[weight, bias]``)."""
    out = []
    for module in model.modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if own:
            out.append(own)
    return out


def _layer_groups(model_or_layers: Any, preset: str, minimum: int) -> list[dict]:
    if isinstance(model_or_layers, nn.Module):
        found = [{"params": ps} for ps in layers(model_or_layers)]
        source = f"the model ({type(model_or_layers).__name__})"
    elif isinstance(model_or_layers, Sequence) and not isinstance(model_or_layers, Tensor):
        found = []
        for i, layer in enumerate(model_or_layers):
            if isinstance(layer, dict):
                found.append(dict(layer))
            elif isinstance(layer, Tensor):
                raise TypeError(
                    f"{preset} partitions by layer: item {i} is a single tensor; pass the model "
                    "or a list of layers, each an iterable of parameters or a param-group dict"
                )
            elif isinstance(layer, Iterable):
                found.append({"params": list(layer)})
            else:
                raise TypeError(f"{preset}: layer {i} is a {type(layer).__name__}, not an "
                                "iterable of parameters or a dict")
        source = "the list of layers"
    else:
        raise TypeError(
            f"{preset} partitions by layer: pass an nn.Module or a list of layers (each an "
            f"iterable of parameters or a param-group dict), got {type(model_or_layers).__name__}"
        )
    if len(found) < minimum:
        raise ValueError(
            f"{preset} needs at least {minimum} layers (modules that own parameters), but "
            f"{source} has {len(found)}"
        )
    return found


def _pair(value: Any, name: str, preset: str) -> tuple[Hyperparameter, Hyperparameter]:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{preset}: {name} must be a number or a pair (first layer, other "
                             f"layers), got {value!r}")
        return value[0], value[1]
    return value, value


def _first_indices(indices: Sequence[int], n: int, preset: str, name: str) -> set[int]:
    chosen = set()
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, int) or not -n <= i < n:
            raise ValueError(f"{preset}: {name} must list layer indices in [0, {n}), got {i!r}")
        chosen.add(i % n)
    return chosen


def _assign(groups: list[dict], chosen: set[int], first: dict, rest: dict) -> list[dict]:
    out = []
    for i, g in enumerate(groups):
        base = first if i in chosen else rest
        out.append({**base, **g})  # explicit group keys override the preset
    return out


class BAOAB(PartitionedLangevin):
    r"""Underdamped Langevin dynamics with the BAOAB splitting, all parameters alike.

    .. math::
        p \leftarrow p - k\nabla\tilde L(\theta);\quad \theta \leftarrow \theta + \tfrac h2 p;\quad
        p \leftarrow e^{-\gamma h}p + \sqrt{(1-e^{-2\gamma h})\tau}\,R;\quad
        \theta \leftarrow \theta + \tfrac h2 p

    (k = h/2 on the first step, h afterwards: the authors' merged kicks, docs/science.md §2).
    Samples
    :math:`\propto e^{-L(\theta)/\tau}` with :math:`O(h^2)` configurational bias (exact on
    quadratics). ``temperature=0`` is the deterministic damped momentum (heavy-ball) method
    with momentum :math:`e^{-\gamma h}` and SGD step :math:`h^2(1+e^{-\gamma h})/2`; see
    ``docs/conventions.md`` for the mapping from SGD with momentum.
    """

    def __init__(self, params, lr: Hyperparameter = 0.1, friction: Hyperparameter = 1.0,
                 temperature: Hyperparameter = 1e-4, **kwargs):
        super().__init__(params, lr, scheme="langevin", friction=friction,
                         temperature=temperature, **kwargs)


class Langevin(PartitionedLangevin):
    r"""Underdamped Langevin dynamics with a chosen one-gradient splitting (docs/science.md §1):
    ``"BAOAB"`` (default, = :class:`BAOAB`), ``"ABOBA"``, ``"OBABO"`` or ``"BAOA"``.

    On :math:`U = \tfrac12\theta^\top A\theta` the positions the optimizer leaves in the
    parameters have the stationary covariance :math:`\tau A^{-1}` (BAOAB, BAOA: exact at any
    stable h) or :math:`\tau[A(I - h^2A/4)]^{-1}` (OBABO; and ABOBA, whose parameters sit
    mid-drift where its gradient is taken — its exact boundary positions
    :math:`\theta - \tfrac h2 p`, covariance :math:`\tau A^{-1}`, come from
    :meth:`boundary_positions`). A word needing two gradients per step is a ValueError.

    Example:
        >>> import torch, thermotrain as tt
        >>> w = torch.zeros(3, requires_grad=True)
        >>> opt = tt.Langevin([w], lr=0.1, friction=1.0, temperature=1e-3, splitting="OBABO",
        ...                   seed=0)
        >>> w.grad = torch.ones(3); opt.step()
    """

    def __init__(self, params, lr: Hyperparameter = 0.1, friction: Hyperparameter = 1.0,
                 temperature: Hyperparameter = 1e-4, splitting: str = "BAOAB", **kwargs):
        super().__init__(params, lr, scheme=scheme_for_splitting(splitting), friction=friction,
                         temperature=temperature, **kwargs)
        self.splitting = splitting


class SGLD(PartitionedLangevin):
    r"""Stochastic gradient Langevin dynamics:
    :math:`\theta \leftarrow \theta - h\nabla\tilde L + \sigma\sqrt h R`,
    :math:`\sigma=\sqrt{2\tau}`.

    ``temperature=0`` is plain SGD. (docs/science.md §3 [ours]; with epoch-reshuffled minibatches
    this is
    SGWORLD, docs/science.md §4.)
    """

    def __init__(self, params, lr: Hyperparameter = 0.1, temperature: Hyperparameter = 1e-4,
                 **kwargs):
        super().__init__(params, lr, scheme="sgld", temperature=temperature, **kwargs)


class OverdampedLangevin(PartitionedLangevin):
    r"""The overdamped (γ → ∞) limit of BAOAB, in position form
    :math:`\theta_{n+1} = \theta_n - \tfrac{h^2}{2}\nabla\tilde L + \tfrac h2\sqrt\tau(R_n+R_{n-1})`
    (Leimkuhler–Matthews). Note the effective time step is :math:`h^2/2`."""

    def __init__(self, params, lr: Hyperparameter = 0.1, temperature: Hyperparameter = 1e-4,
                 **kwargs):
        super().__init__(params, lr, scheme="overdamped", temperature=temperature, **kwargs)


class AdaptiveLangevin(PartitionedLangevin):
    r"""Adaptive Langevin (Nosé–Hoover–Langevin) dynamics

    .. math::
        d\theta = p\,dt,\quad dp = -\nabla L\,dt - \xi p\,dt + \sigma_A\,dW,\quad
        d\xi = \varepsilon(\|p\|^2 - N\tau)\,dt,

    split as :math:`A_{h/2}C_{h/2}D_{h/2}E_hD_{h/2}C_{h/2}A_{h/2}` after the merged kick, one
    ξ per tensor (per ensemble member) starting at ``xi_init``. Samples
    :math:`\propto e^{-L/\tau}` in θ for any :math:`\sigma_A > 0` with
    :math:`\langle\|p\|^2\rangle/N \to \tau`; ξ absorbs unknown (e.g. minibatch) noise.
    """

    def __init__(self, params, lr: Hyperparameter = 0.1, temperature: Hyperparameter = 1e-4,
                 noise: Hyperparameter = 0.01, coupling: Hyperparameter = 0.05,
                 xi_init: Hyperparameter = 0.1, **kwargs):
        super().__init__(params, lr, scheme="adaptive", temperature=temperature, noise=noise,
                         coupling=coupling, xi_init=xi_init, **kwargs)


class AdLaLa(PartitionedLangevin):
    """AdLaLa: adaptive Langevin on the first layer, Langevin on the others (docs/science.md §3).

    Defaults are the authors' code: h = 0.25, γ = 0.1, τ₁ = τ₂ = 1e-4, σ_A = 0.01, ε = 0.05,
    ξ₀ = 0.1. ``temperature`` is τ or (τ₁, τ₂); ``adaptive_layers`` picks the AdL layers.

    Example:
        >>> import torch, thermotrain as tt
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 100), torch.nn.ReLU(),
        ...                           torch.nn.Linear(100, 1))
        >>> opt = tt.AdLaLa(net, seed=0)
        >>> [g["scheme"] for g in opt.param_groups]
        ['adaptive', 'langevin']
        >>> torch.nn.functional.binary_cross_entropy_with_logits(
        ...     net(torch.randn(25, 2)), torch.ones(25, 1)).backward()
        >>> opt.step()
        >>> [tuple(xi.shape) for xi in opt.thermostats()[0]]  # one ξ per tensor
        [(), ()]
    """

    def __init__(self, model, lr: Hyperparameter = 0.25, friction: Hyperparameter = 0.1,
                 temperature: Any = (1e-4, 1e-4), noise: Hyperparameter = 0.01,
                 coupling: Hyperparameter = 0.05, xi_init: Hyperparameter = 0.1,
                 adaptive_layers: Sequence[int] = (0,), **kwargs):
        groups = _layer_groups(model, "AdLaLa", 2)
        t1, t2 = _pair(temperature, "temperature", "AdLaLa")
        first = {"scheme": "adaptive", "temperature": t1, "noise": noise, "coupling": coupling,
                 "xi_init": xi_init}
        rest = {"scheme": "langevin", "temperature": t2, "friction": friction}
        chosen = _first_indices(adaptive_layers, len(groups), "AdLaLa", "adaptive_layers")
        super().__init__(_assign(groups, chosen, first, rest), lr, **kwargs)


class LOL(PartitionedLangevin):
    """LOL: Langevin (γ₁, τ₁) on the first layer, overdamped Langevin (τ₂) on the others.

    Paper defaults: h = 0.1, γ₁ = 0.01, τ₁ = 1e-3; τ₂ = τ₁ unless ``temperature=(τ₁, τ₂)``.
    """

    def __init__(self, model, lr: Hyperparameter = 0.1, friction: Hyperparameter = 0.01,
                 temperature: Any = 1e-3, langevin_layers: Sequence[int] = (0,), **kwargs):
        groups = _layer_groups(model, "LOL", 2)
        t1, t2 = _pair(temperature, "temperature", "LOL")
        first = {"scheme": "langevin", "temperature": t1, "friction": friction}
        rest = {"scheme": "overdamped", "temperature": t2}
        chosen = _first_indices(langevin_layers, len(groups), "LOL", "langevin_layers")
        super().__init__(_assign(groups, chosen, first, rest), lr, **kwargs)


class LaLa(PartitionedLangevin):
    """Multi-layer Langevin: BAOAB with its own (γ_ℓ, τ_ℓ) per layer. ``friction`` and
    ``temperature`` are each one value for all layers or a list with one value per layer."""

    def __init__(self, model, lr: Hyperparameter = 0.1, friction: Any = 1.0,
                 temperature: Any = 1e-4, **kwargs):
        groups = _layer_groups(model, "LaLa", 1)
        n = len(groups)
        per_layer = {}
        for name, value in (("friction", friction), ("temperature", temperature)):
            if isinstance(value, (list, tuple)):
                if len(value) != n:
                    raise ValueError(f"LaLa: {name} lists {len(value)} values but there are {n} "
                                     "layers")
                per_layer[name] = list(value)
            else:
                per_layer[name] = [value] * n
        out = []
        for i, g in enumerate(groups):
            base = {"scheme": "langevin", "friction": per_layer["friction"][i],
                    "temperature": per_layer["temperature"][i]}
            out.append({**base, **g})
        super().__init__(out, lr, **kwargs)


#: preset name -> class (the study schema is derived from these signatures)
PRESETS: dict[str, type[PartitionedLangevin]] = {
    "baoab": BAOAB,
    "langevin": Langevin,
    "sgld": SGLD,
    "overdamped": OverdampedLangevin,
    "adaptive": AdaptiveLangevin,
    "adlala": AdLaLa,
    "lol": LOL,
    "lala": LaLa,
}

assert set(SPLITTINGS) == {"BAOAB", "ABOBA", "OBABO", "BAOA"}
