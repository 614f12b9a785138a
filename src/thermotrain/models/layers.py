r"""Ensemble layers: K independent copies of a layer evaluated as one batched operation.

A K-member ensemble layer owns one ``weight`` and one ``bias`` whose leading axis (axis 0,
the *ensemble axis*) indexes the member; slice ``[k]`` has exactly the layout of the plain
PyTorch layer (``nn.Linear``: ``(out, in)``, ``nn.Conv2d``: ``(out, in, kh, kw)``). One layer
is one module owning its weight and bias, so the sampler's "by layer" partition (docs/science.md §3)
sees the same layers in an ensemble network as in a plain one; the sampler is told
``ensemble_dim=0`` for these parameters and treats each slice as an independent replica.

Activations carry the ensemble axis first as well: ``(K, B, ...)``. A 2-D (resp. 4-D) input
without that axis is one batch shared by all members.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import check_dtype, check_positive_int
from .initialization import InitLike, as_init, init_layer_, make_generator, member_seeds

__all__ = ["EnsembleLinear", "EnsembleConv2d", "EnsembleBatchNorm1d"]


def _factory(device: object, dtype: object) -> dict:
    if dtype is not None:
        check_dtype(dtype)
    return {"device": device, "dtype": dtype}


def _maybe_init(layer: nn.Module, init: InitLike | None, seed: object, ensemble: int) -> None:
    if init is None:
        return
    spec = as_init(init)
    gens = [make_generator(s) for s in member_seeds(seed, ensemble)]
    init_layer_(layer, spec, gens)


class EnsembleLinear(nn.Module):
    r"""K independent affine maps :math:`y_k = x_k W_k^\top + b_k`, batched.

    Parameters:
        weight: ``(K, out_features, in_features)``, :math:`W_k` = ``weight[k]``.
        bias: ``(K, out_features)``, :math:`b_k` = ``bias[k]``.

    Forward: ``(K, B, in)`` (member k sees its own batch :math:`x_k`) or ``(B, in)`` (one
    batch for all members) → ``(K, B, out)``, computed with one ``torch.baddbmm``:
    ``y = baddbmm(b[:, None, :], x, Wᵀ)``. Member k's output equals
    ``nn.Linear`` with ``weight[k]``, ``bias[k]`` applied to :math:`x_k` up to floating-point
    summation order.

    Args:
        ensemble_size: K ≥ 1.
        in_features, out_features: as for ``nn.Linear``.
        init: ``"default"``, ``("normal", s)``, an :class:`~thermotrain.models.Init`, or
            ``None`` to leave the parameters uninitialised (``torch.empty``; for callers that
            fill them, e.g. :class:`~thermotrain.models.MLP`).
        seed: an int (member k uses ``seed + k``) or a list of K ints; see
            :mod:`thermotrain.models.initialization`.
        device, dtype: of the parameters.

    Example:
        >>> layer = EnsembleLinear(4, 2, 3, seed=0)
        >>> layer(torch.randn(5, 2)).shape
        torch.Size([4, 5, 3])
    """

    def __init__(
        self,
        ensemble_size: int,
        in_features: int,
        out_features: int,
        *,
        init: InitLike | None = "default",
        seed: int | list[int] = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.ensemble_size = check_positive_int("ensemble_size", ensemble_size)
        self.in_features = check_positive_int("in_features", in_features)
        self.out_features = check_positive_int("out_features", out_features)
        fk = _factory(device, dtype)
        k = self.ensemble_size
        self.weight = nn.Parameter(torch.empty(k, self.out_features, self.in_features, **fk))
        self.bias = nn.Parameter(torch.empty(k, self.out_features, **fk))
        _maybe_init(self, init, seed, k)

    def forward(self, x: Tensor) -> Tensor:
        k, d_in = self.ensemble_size, self.in_features
        if x.ndim == 2 and x.shape[1] == d_in:
            x = x.expand(k, *x.shape)
        elif not (x.ndim == 3 and x.shape[0] == k and x.shape[2] == d_in):
            raise ValueError(
                f"EnsembleLinear expects input of shape (K={k}, B, {d_in}) or (B, {d_in}), "
                f"got {tuple(x.shape)}"
            )
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))

    def extra_repr(self) -> str:
        return (
            f"ensemble_size={self.ensemble_size}, in_features={self.in_features}, "
            f"out_features={self.out_features}"
        )


class EnsembleConv2d(nn.Module):
    r"""K independent 2-D convolutions (stride 1, zero padding), batched as a grouped conv.

    Parameters:
        weight: ``(K, out_channels, in_channels, kh, kw)``; ``weight[k]`` is member k's
            ``nn.Conv2d`` weight.
        bias: ``(K, out_channels)``.

    The K members are stacked on the channel axis: an input ``(K, B, C, H, W)`` is packed to
    ``(B, K·C, H, W)`` and convolved once with ``groups=K`` and the weight reshaped to
    ``(K·out, C, kh, kw)`` — group k sees only member k's channels and filters, so

    .. math:: y_k = \operatorname{conv2d}(x_k, W_k) + b_k .

    A shared input ``(B, C, H, W)`` needs no packing: one ordinary convolution with all
    K·out filters. Output ``(K, B, out, H', W')``. The packed layout is also exposed
    (:meth:`forward_packed`, :meth:`forward_shared_packed`) so that a network can stay packed
    between layers (channel-wise nonlinearities and pooling commute with the packing).

    Args:
        ensemble_size: K ≥ 1.
        in_channels, out_channels, kernel_size, padding: as for ``nn.Conv2d`` (square kernel,
            stride 1, dilation 1, no grouping within a member).
        init, seed, device, dtype: as for :class:`EnsembleLinear`.
    """

    def __init__(
        self,
        ensemble_size: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        padding: int = 0,
        init: InitLike | None = "default",
        seed: int | list[int] = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.ensemble_size = check_positive_int("ensemble_size", ensemble_size)
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.out_channels = check_positive_int("out_channels", out_channels)
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ValueError(f"padding must be an int >= 0, got {padding!r}")
        self.padding = padding
        fk = _factory(device, dtype)
        k, ks = self.ensemble_size, self.kernel_size
        self.weight = nn.Parameter(
            torch.empty(k, self.out_channels, self.in_channels, ks, ks, **fk)
        )
        self.bias = nn.Parameter(torch.empty(k, self.out_channels, **fk))
        _maybe_init(self, init, seed, k)

    def _packed_weight(self) -> tuple[Tensor, Tensor]:
        k, o, c, ks = self.ensemble_size, self.out_channels, self.in_channels, self.kernel_size
        return self.weight.reshape(k * o, c, ks, ks), self.bias.reshape(k * o)

    def forward_packed(self, x: Tensor) -> Tensor:
        """``(B, K·C_in, H, W)`` (member-major channels) → ``(B, K·C_out, H', W')``."""
        w, b = self._packed_weight()
        return F.conv2d(x, w, b, padding=self.padding, groups=self.ensemble_size)

    def forward_shared_packed(self, x: Tensor) -> Tensor:
        """``(B, C_in, H, W)`` shared by all members → packed ``(B, K·C_out, H', W')``."""
        w, b = self._packed_weight()
        return F.conv2d(x, w, b, padding=self.padding)

    def pack(self, x: Tensor) -> Tensor:
        """``(K, B, C, H, W)`` → ``(B, K·C, H, W)``; a 4-D shared input is returned as is."""
        k, c = self.ensemble_size, self.in_channels
        if x.ndim == 4 and x.shape[1] == c:
            return x
        if not (x.ndim == 5 and x.shape[0] == k and x.shape[2] == c):
            raise ValueError(
                f"EnsembleConv2d expects input of shape (K={k}, B, {c}, H, W) or (B, {c}, H, W), "
                f"got {tuple(x.shape)}"
            )
        return x.transpose(0, 1).reshape(x.shape[1], k * c, *x.shape[3:])

    def forward(self, x: Tensor) -> Tensor:
        packed = self.pack(x)
        if x.ndim == 4:
            y = self.forward_shared_packed(packed)
        else:
            y = self.forward_packed(packed)
        return unpack(y, self.ensemble_size)

    def extra_repr(self) -> str:
        return (
            f"ensemble_size={self.ensemble_size}, in_channels={self.in_channels}, "
            f"out_channels={self.out_channels}, kernel_size={self.kernel_size}, "
            f"padding={self.padding}"
        )


def unpack(y: Tensor, ensemble_size: int) -> Tensor:
    """Packed ``(B, K·C, *spatial)`` → ``(K, B, C, *spatial)`` (a view)."""
    b, kc = y.shape[:2]
    return y.reshape(b, ensemble_size, kc // ensemble_size, *y.shape[2:]).transpose(0, 1)


class EnsembleBatchNorm1d(nn.Module):
    r"""K independent ``nn.BatchNorm1d(C)`` layers on ``(K, B, C)`` activations, batched.

    Member k normalizes its own batch with its own statistics and affine map,

    .. math:: y_k = \gamma_k \odot \frac{x_k - \mu_k}{\sqrt{\sigma_k^2 + \epsilon}} + \beta_k ,

    with :math:`(\mu_k, \sigma_k^2)` the batch mean and (biased) variance in training mode —
    the running statistics being updated as :math:`r \leftarrow (1-m) r + m\,\hat r`
    (unbiased batch variance), momentum :math:`m` = 0.1 as in PyTorch — and the running
    statistics in eval mode. The K members are laid side by side on the channel axis,
    ``(K, B, C)`` → ``(B, K·C)``, and normalized with one ``F.batch_norm`` call: channels are
    normalized independently, so member k computes exactly ``nn.BatchNorm1d`` with
    ``weight[k]``, ``bias[k]``, ``running_mean[k]``, ``running_var[k]``.

    Parameters: ``weight`` (γ, ones) and ``bias`` (β, zeros), ``(K, C)``. Buffers:
    ``running_mean`` (zeros), ``running_var`` (ones), ``(K, C)``, and ``num_batches_tracked``
    ``(K,)`` — every entry of the state dict carries the ensemble axis first.

    Args:
        ensemble_size: K ≥ 1.
        num_features: C.
        eps, momentum: as for ``nn.BatchNorm1d`` (the attribute ``momentum`` may be set to
            ``None`` afterwards: a cumulative average, as in PyTorch).
        device, dtype: of the parameters and buffers.

    Example:
        >>> bn = EnsembleBatchNorm1d(3, 4)
        >>> bn(torch.randn(3, 8, 4)).shape
        torch.Size([3, 8, 4])
    """

    def __init__(
        self,
        ensemble_size: int,
        num_features: int,
        *,
        eps: float = 1e-5,
        momentum: float = 0.1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.ensemble_size = check_positive_int("ensemble_size", ensemble_size)
        self.num_features = check_positive_int("num_features", num_features)
        if not 0.0 < float(momentum) <= 1.0:
            raise ValueError(f"momentum must be in (0, 1], got {momentum!r}")
        if not float(eps) > 0.0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        self.eps, self.momentum = float(eps), float(momentum)
        fk = _factory(device, dtype)
        k, c = self.ensemble_size, self.num_features
        self.weight = nn.Parameter(torch.ones(k, c, **fk))
        self.bias = nn.Parameter(torch.zeros(k, c, **fk))
        self.register_buffer("running_mean", torch.zeros(k, c, **fk))
        self.register_buffer("running_var", torch.ones(k, c, **fk))
        self.register_buffer("num_batches_tracked",
                             torch.zeros(k, dtype=torch.long, device=fk["device"]))

    def forward(self, x: Tensor) -> Tensor:
        k, c = self.ensemble_size, self.num_features
        if not (x.ndim == 3 and x.shape[0] == k and x.shape[2] == c):
            raise ValueError(
                f"EnsembleBatchNorm1d expects input of shape (K={k}, B, {c}), "
                f"got {tuple(x.shape)}"
            )
        b = x.shape[1]
        packed = x.transpose(0, 1).reshape(b, k * c)
        momentum = self.momentum
        if self.training:
            self.num_batches_tracked.add_(1)
            if momentum is None:  # cumulative average of the batch statistics, as nn.BatchNorm
                momentum = 1.0 / float(self.num_batches_tracked[0])
        # reshape of the contiguous (K, C) buffers is a view: F.batch_norm updates them in place
        y = F.batch_norm(packed, self.running_mean.view(k * c), self.running_var.view(k * c),
                         self.weight.reshape(k * c), self.bias.reshape(k * c),
                         training=self.training, momentum=momentum or 0.0, eps=self.eps)
        return y.reshape(b, k, c).transpose(0, 1)

    def extra_repr(self) -> str:
        return (f"ensemble_size={self.ensemble_size}, num_features={self.num_features}, "
                f"eps={self.eps}, momentum={self.momentum}")
