r"""Fully connected networks (the paper's SHLP and deeper MLPs), plain or as a seed ensemble.

For widths :math:`(d_0, d_1, \dots, d_L)` and nonlinearity :math:`\phi` the network is

.. math::

    h_0 = x,\qquad h_\ell = \phi(W_\ell h_{\ell-1} + b_\ell)\ (\ell < L),\qquad
    f(x) = W_L h_{L-1} + b_L ,

with :math:`W_\ell \in \mathbb R^{d_\ell \times d_{\ell-1}}`. The output is the vector of
*logits* (no sigmoid/softmax): the heads live in :mod:`thermotrain.models.losses`. The
paper's SHLP (docs/science.md §6) is ``widths = [d_in, H, d_out]`` with ReLU; the 1-2-1 tanh
regression
net of docs/science.md §5 is ``MLP([1, 2, 1], activation="tanh")`` (7 parameters).

With ``batchnorm=True`` a batch normalization follows each hidden affine map, before the
nonlinearity (the MLI paper's placement, docs/science.md §8):
:math:`h_\ell = \phi(\operatorname{BN}_\ell(W_\ell h_{\ell-1} + b_\ell))`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import skip_init

from ._checks import ACTIVATIONS, check_activation, check_widths
from .base import StackableModel
from .initialization import InitLike, init_layer_, make_generator
from .layers import EnsembleBatchNorm1d, EnsembleLinear

__all__ = ["MLP", "SHLP"]


class MLP(StackableModel):
    r"""A multilayer perceptron; with ``ensemble=K``, K independent ones evaluated together.

    Layers are ``self.layers[0], …, self.layers[L-1]``, one module per affine map owning its
    ``weight`` and ``bias`` (the "layer" of the sampler's partition, docs/science.md §3); the
    nonlinearity is parameter-free and applied between them (not after the last).

    * ``ensemble=None``: the layers are ``nn.Linear``; forward ``(B, d_0)`` → ``(B, d_L)``.
      An ordinary PyTorch model.
    * ``ensemble=K``: the layers are :class:`~thermotrain.models.EnsembleLinear` with
      ``weight (K, d_ℓ, d_{ℓ−1})`` and ``bias (K, d_ℓ)``; forward ``(K, B, d_0)`` (member k
      sees its own batch) or ``(B, d_0)`` (one batch for all) → ``(K, B, d_L)``, one
      ``baddbmm`` per layer and no Python loop over members. Member k computes exactly
      the plain network with parameters ``[p[k] for p in self.parameters()]``; pass
      ``ensemble_dim=0`` to the sampler for these parameters.

    Args:
        widths: ``[d_in, h_1, …, d_out]``, at least two ints ≥ 1 (``[2, 100, 1]`` is an SHLP
            with 100 hidden units).
        activation: ``"relu"`` or ``"tanh"``.
        batchnorm: add a batch normalization after each hidden Linear, before the
            activation (``self.norms[ℓ]``: ``nn.BatchNorm1d``, or
            :class:`~thermotrain.models.EnsembleBatchNorm1d` in an ensemble; γ = 1, β = 0,
            momentum 0.1). The Linear layers are drawn exactly as without it (same seeds, same
            numbers); the running statistics are buffers in the state dict.
        ensemble: ``None`` or the number of members K ≥ 1.
        init: ``"default"`` (PyTorch's :math:`\mathcal U(\pm 1/\sqrt{\text{fan\_in}})` for
            weights and biases), ``("normal", s)`` (:math:`\mathcal N(0, s^2)` for weights and
            biases) or an :class:`~thermotrain.models.Init`. See
            :mod:`thermotrain.models.initialization` for the exact draw order.
        seed: the initialisation seed. Plain model: an int. Ensemble: an int (member k gets
            ``seed + k``) or a list of K ints; member k's initial parameters are then
            bit-identical to ``MLP(widths, seed=s_k)``'s. With ``init="default"`` a plain
            ``MLP(widths, seed=s)`` is also bit-identical to the ``nn.Linear`` layers that
            PyTorch builds after ``torch.manual_seed(s)``.
        device, dtype: of the parameters (the numbers are drawn on the CPU, then moved).

    Example:
        >>> net = MLP([2, 100, 1], seed=3)                 # one SHLP
        >>> net(torch.zeros(25, 2)).shape
        torch.Size([25, 1])
        >>> ens = MLP([2, 100, 1], ensemble=100, seed=0)  # seeds 0..99
        >>> ens(torch.zeros(25, 2)).shape
        torch.Size([100, 25, 1])
        >>> ens.layers[0].weight.shape
        torch.Size([100, 100, 2])
    """

    def __init__(
        self,
        widths: Sequence[int],
        *,
        activation: str = "relu",
        batchnorm: bool = False,
        ensemble: int | None = None,
        init: InitLike = "default",
        seed: int | Sequence[int] = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if not isinstance(batchnorm, bool):
            raise TypeError(f"batchnorm must be True or False, got {batchnorm!r}")
        self.batchnorm = batchnorm
        self.widths = check_widths(widths)
        self.activation = check_activation(activation)
        self._phi = ACTIVATIONS[self.activation]
        fk = self._setup(ensemble, init, seed, device, dtype)
        k = self.ensemble_size
        pairs = list(zip(self.widths[:-1], self.widths[1:], strict=True))
        if k is None:
            layers = [skip_init(nn.Linear, d_in, d_out, **fk) for d_in, d_out in pairs]
        else:
            layers = [EnsembleLinear(k, d_in, d_out, init=None, **fk) for d_in, d_out in pairs]
        self.layers = nn.ModuleList(layers)
        if batchnorm:
            hidden = self.widths[1:-1]
            if k is None:
                norms = [nn.BatchNorm1d(h, **fk) for h in hidden]
            else:
                norms = [EnsembleBatchNorm1d(k, h, **fk) for h in hidden]
            self.norms = nn.ModuleList(norms)
        self._initialize()

    def _initialize(self) -> None:
        """Draw the Linear layers only (as without batch norm); γ = 1, β = 0 are fixed."""
        gens = [make_generator(s) for s in self.seeds]
        for layer in self.layers:
            init_layer_(layer, self.initialization, gens)

    def config(self) -> dict[str, Any]:
        out: dict[str, Any] = {"widths": list(self.widths), "activation": self.activation}
        if self.batchnorm:
            out["batchnorm"] = True
        return out

    def layer_modules(self) -> list[nn.Module]:
        # registration order: every Linear, then every batch norm
        return list(self.layers) + (list(self.norms) if self.batchnorm else [])

    def member(self, k: int) -> StackableModel:
        """A plain copy of ensemble member ``k`` (parameters and batch-norm buffers copied)."""
        plain = super().member(k)
        if self.batchnorm:
            with torch.no_grad():
                for dst, src in zip(plain.buffers(), self.buffers(), strict=True):
                    dst.copy_(src[k])
        return plain

    def forward(self, x: Tensor) -> Tensor:
        """Logits: ``(B, d_in)`` → ``(B, d_out)``; ensemble: ``(K, B, d_in)`` or ``(B, d_in)``
        → ``(K, B, d_out)``."""
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                if self.batchnorm:
                    x = self._norm(i, x)
                x = self._phi(x)
        return x

    def _norm(self, i: int, x: Tensor) -> Tensor:
        if self.ensemble_size is not None and x.ndim == 2:
            x = x.expand(self.ensemble_size, *x.shape)
        return self.norms[i](x)

    def extra_repr(self) -> str:
        bn = ", batchnorm=True" if self.batchnorm else ""
        return (
            f"widths={list(self.widths)}, activation={self.activation!r}{bn}, "
            f"ensemble={self.ensemble_size}"
        )


def SHLP(  # noqa: N802 - the paper's name for the architecture
    d_in: int,
    hidden: int,
    d_out: int = 1,
    *,
    activation: str = "relu",
    batchnorm: bool = False,
    ensemble: int | None = None,
    init: InitLike = "default",
    seed: int | Sequence[int] = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> MLP:
    """The paper's single-hidden-layer perceptron: ``MLP([d_in, hidden, d_out], ...)``.

    Linear(d_in, H) → ReLU → Linear(H, d_out); ``d_out = 1`` for the binary (sigmoid + BCE)
    head, ``d_out = C`` for C-class softmax + cross-entropy (docs/science.md §6). Keyword arguments
    as
    for :class:`MLP`.

    Example:
        >>> SHLP(2, 20, init=("normal", 0.01), seed=1).widths
        (2, 20, 1)
    """
    return MLP(
        [d_in, hidden, d_out],
        activation=activation,
        batchnorm=batchnorm,
        ensemble=ensemble,
        init=init,
        seed=seed,
        device=device,
        dtype=dtype,
    )
