r"""Parameter initialisation with explicit seeds (docs/science.md §6).

Two schemes, both drawn from an explicit :class:`torch.Generator` (never the global RNG):

* ``"default"`` — PyTorch's default for ``nn.Linear`` / ``nn.Conv2d``: every weight and bias
  entry i.i.d. :math:`\mathcal U(-1/\sqrt{n_\text{in}},\, 1/\sqrt{n_\text{in}})` with
  :math:`n_\text{in}` the fan-in (``in_features``, or ``in_channels·kh·kw`` for a convolution).
  The draw is literally ``nn.init.kaiming_uniform_(W, a=√5)`` followed by
  ``nn.init.uniform_(b, -1/√n_in, 1/√n_in)``, i.e. the calls ``nn.Linear.reset_parameters``
  makes, so a model built with ``seed=s`` is bit-identical to the same layers built by plain
  PyTorch after ``torch.manual_seed(s)`` (the global CPU generator and
  ``torch.Generator().manual_seed(s)`` produce the same stream).
* ``("normal", s)`` — every weight and bias entry i.i.d. :math:`\mathcal N(0, s^2)`
  (the paper uses :math:`s = 0.01` and :math:`s = 0.5`).

**Order of the draws** (part of the reproducibility contract): one generator per network
(per ensemble member), seeded with that network's seed; the layers in registration order, and
within a layer first the whole weight tensor (row-major), then the bias.

**Ensembles.** Member :math:`k` of a K-member ensemble gets seed :math:`s_k` — ``seed + k`` for
an int ``seed``, or ``seed[k]`` for a list of K ints — and its own generator, so its
parameters are bit-identical to those of the plain network built with ``seed=s_k``.

**Device.** Numbers are drawn on the CPU in the model's dtype and then copied to the model's
device, so an initialisation does not depend on the device (CPU and GPU runs start from the
same parameters).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from .._checks import check_seed, make_generator
from .._checks import member_seeds as shared_member_seeds

__all__ = [
    "Init",
    "InitLike",
    "as_init",
    "member_seeds",
    "make_generator",
    "init_weight_bias_",
    "init_layer_",
]



@dataclass(frozen=True)
class Init:
    r"""An initialisation scheme: ``Init("default")`` or ``Init("normal", std)``.

    Attributes:
        kind: ``"default"`` (:math:`\mathcal U(\pm 1/\sqrt{n_\text{in}})`, PyTorch's default)
            or ``"normal"`` (:math:`\mathcal N(0, \text{std}^2)` for weights and biases).
        std: the standard deviation :math:`s` of ``"normal"``; must be ``None`` for
            ``"default"``.

    Example:
        >>> Init.normal(0.01)
        Init(kind='normal', std=0.01)
        >>> as_init(("normal", 0.5)) == Init("normal", 0.5)
        True
    """

    kind: Literal["default", "normal"] = "default"
    std: float | None = None

    def __post_init__(self) -> None:
        if self.kind == "default":
            if self.std is not None:
                raise ValueError(f"Init('default') takes no std, got std={self.std!r}")
        elif self.kind == "normal":
            std = self.std
            if isinstance(std, bool) or not isinstance(std, (int, float)):
                raise TypeError(
                    f"Init('normal', std) needs a real std > 0, got {std!r} "
                    f"of type {type(std).__name__}"
                )
            if not (math.isfinite(std) and std > 0):
                raise ValueError(f"Init('normal', std) needs a finite std > 0, got {std!r}")
            object.__setattr__(self, "std", float(std))
        else:
            raise ValueError(f"Init kind must be 'default' or 'normal', got {self.kind!r}")

    @classmethod
    def default(cls) -> Init:
        """PyTorch's default ``U(±1/sqrt(fan_in))`` for weights and biases."""
        return cls("default")

    @classmethod
    def normal(cls, std: float) -> Init:
        """``N(0, std²)`` for weights and biases."""
        return cls("normal", std)


#: What the ``init=`` arguments accept: ``"default"``, ``("normal", s)`` or an :class:`Init`.
InitLike = Init | str | tuple

_INIT_HELP = "'default', ('normal', std) or thermotrain.models.Init"


def as_init(init: object) -> Init:
    """Normalise an ``init=`` argument to an :class:`Init`.

    Accepts ``"default"``, ``("default",)``, ``("normal", std)`` (tuple or list) or an
    :class:`Init`. Raises ``ValueError`` / ``TypeError`` naming the value otherwise.
    """
    if isinstance(init, Init):
        return init
    if isinstance(init, str):
        if init == "default":
            return Init.default()
        if init == "normal":
            raise ValueError(
                "init='normal' needs a standard deviation: pass ('normal', std), "
                "e.g. ('normal', 0.01)"
            )
        raise ValueError(f"init must be {_INIT_HELP}, got {init!r}")
    if isinstance(init, (tuple, list)):
        if len(init) == 1 and init[0] == "default":
            return Init.default()
        if len(init) == 2 and init[0] == "normal":
            return Init.normal(init[1])
        raise ValueError(f"init must be {_INIT_HELP}, got {init!r}")
    raise TypeError(f"init must be {_INIT_HELP}, got {init!r} of type {type(init).__name__}")


def member_seeds(seed: object, ensemble: int | None) -> tuple[int, ...]:
    """The seeds of the networks of a model: ``(seed,)`` or ``(s_0, …, s_{K−1})``.

    Args:
        seed: an int; or, for an ensemble only, a sequence of ``ensemble`` ints.
        ensemble: ``None`` for a plain model, else the number of members K.

    Returns:
        ``(seed,)`` for a plain model; ``(seed, seed + 1, …, seed + K − 1)`` for an ensemble
        with an int seed; ``tuple(seed)`` for an ensemble with a list of K seeds.

    Example:
        >>> member_seeds(7, 3)
        (7, 8, 9)
        >>> member_seeds([5, 1], 2)
        (5, 1)
    """
    if ensemble is None:
        if isinstance(seed, Sequence) and not isinstance(seed, (str, bytes)):
            raise TypeError(
                f"seed must be an int for a plain model (ensemble=None), got {seed!r} of type "
                f"{type(seed).__name__}; a list of seeds needs ensemble=len(seeds)"
            )
        return (check_seed("seed", seed),)
    return shared_member_seeds(seed, ensemble)


def init_weight_bias_(
    weight: Tensor, bias: Tensor | None, init: Init, generator: torch.Generator
) -> None:
    r"""Fill one network's ``weight`` (then ``bias``) in place from ``generator``.

    ``weight`` has the layout of ``nn.Linear`` (``(out, in)``) or ``nn.Conv2d``
    (``(out, in, kh, kw)``); the fan-in is ``weight[0].numel()``. ``"default"``:
    :math:`W, b \sim \mathcal U(\pm 1/\sqrt{n_\text{in}})` via exactly the calls of
    ``nn.Linear.reset_parameters``; ``"normal"``: :math:`W, b \sim \mathcal N(0, s^2)`.
    ``weight`` and ``bias`` must be CPU tensors (the generator is a CPU generator).
    """
    with torch.no_grad():
        if init.kind == "default":
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
            if bias is not None:
                fan_in = weight[0].numel()
                bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                nn.init.uniform_(bias, -bound, bound, generator=generator)
        else:
            assert init.std is not None
            weight.normal_(0.0, init.std, generator=generator)
            if bias is not None:
                bias.normal_(0.0, init.std, generator=generator)


def init_layer_(layer: nn.Module, init: Init, generators: Sequence[torch.Generator]) -> None:
    """Initialise one layer (a module owning ``weight`` and ``bias``) in place.

    For a plain layer (``nn.Linear``, ``nn.Conv2d``) ``generators`` holds one generator; for
    an ensemble layer (``ensemble_size`` = K, parameters with a leading K axis) it holds K, and
    slice ``[k]`` is drawn from ``generators[k]`` exactly as a plain layer of member k would be.
    Each generator advances, so calling this for the layers in order reproduces the documented
    draw order (layer by layer, weight then bias).
    """
    weight: Tensor = layer.weight  # type: ignore[assignment]
    bias: Tensor | None = layer.bias  # type: ignore[assignment]
    k_members = getattr(layer, "ensemble_size", None)
    # the index of one network's slice: the whole tensor, or [k] for ensemble member k
    indices: list[tuple[int, ...]] = [()] if k_members is None else [(k,) for k in range(k_members)]
    if len(generators) != len(indices):
        raise ValueError(
            f"init_layer_ needs {len(indices)} generator(s) for {type(layer).__name__}, "
            f"got {len(generators)}"
        )
    w_shape = weight.shape if k_members is None else weight.shape[1:]
    b_shape = None if bias is None else (bias.shape if k_members is None else bias.shape[1:])
    with torch.no_grad():
        for index, gen in zip(indices, generators, strict=True):
            w = torch.empty(w_shape, dtype=weight.dtype)
            b = None if b_shape is None else torch.empty(b_shape, dtype=weight.dtype)
            init_weight_bias_(w, b, init, gen)
            weight[index].copy_(w)
            if bias is not None and b is not None:
                bias[index].copy_(b)
