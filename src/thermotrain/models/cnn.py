r"""A small convolutional classifier for 1×28×28 (MNIST) or 3×32×32 (CIFAR-10) images.

Architecture (defaults ``channels=(16, 32)``, ``kernel_size=5``):

.. math::

    x \to [\operatorname{conv}_{c_1} \to \phi \to \operatorname{maxpool}_2]
      \to [\operatorname{conv}_{c_2} \to \phi \to \operatorname{maxpool}_2]
      \to \operatorname{flatten} \to \operatorname{linear}_{C},

each convolution with stride 1 and "same" zero padding ``kernel_size // 2``; a 28×28 input
leaves 32·7·7 = 1568 features for the linear head, a 32×32 input 32·8·8 = 2048. The output is
the logits; the heads are in :mod:`thermotrain.models.losses`.

Ensemble version (``ensemble=K``): every convolution is an
:class:`~thermotrain.models.EnsembleConv2d` (members stacked on the channel axis, one grouped
convolution with ``groups=K``) and the head an :class:`~thermotrain.models.EnsembleLinear`.
Between the convolutions the activations stay *packed* as ``(B, K·C, H, W)``: ReLU/tanh and
max-pooling act channel by channel, so they commute with the packing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import skip_init

from ._checks import ACTIVATIONS, check_activation, check_positive_int, is_int
from .base import StackableModel
from .initialization import InitLike
from .layers import EnsembleConv2d, EnsembleLinear

__all__ = ["CNN"]


def _check_in_shape(in_shape: object) -> tuple[int, int, int]:
    if (
        isinstance(in_shape, (str, bytes))
        or not isinstance(in_shape, Sequence)
        or len(in_shape) != 3
        or not all(is_int(v) for v in in_shape)
    ):
        raise TypeError(
            f"in_shape must be three ints (channels, height, width) such as (1, 28, 28) or "
            f"(3, 32, 32), got {in_shape!r}"
        )
    if any(int(v) < 1 for v in in_shape):
        raise ValueError(f"in_shape entries must be >= 1, got {tuple(in_shape)!r}")
    c, h, w = (int(v) for v in in_shape)
    return c, h, w


def _check_channels(channels: object) -> tuple[int, ...]:
    if isinstance(channels, (str, bytes)) or not isinstance(channels, Sequence):
        raise TypeError(f"channels must be a sequence of ints such as (16, 32), got {channels!r}")
    if len(channels) < 1:
        raise ValueError(f"channels must list at least one convolution, got {list(channels)!r}")
    return tuple(check_positive_int(f"channels[{i}]", c) for i, c in enumerate(channels))


class CNN(StackableModel):
    r"""Small CNN: (conv → φ → 2×2 max-pool) per entry of ``channels``, then a linear head.

    Layers (each one module owning its weight and bias, in this registration order):
    ``self.convs[0], …, self.convs[n-1], self.head``.

    * ``ensemble=None``: ``nn.Conv2d`` / ``nn.Linear``; forward ``(B, C, H, W)`` (or the
      flattened ``(B, C·H·W)``) → logits ``(B, num_classes)``.
    * ``ensemble=K``: ensemble layers with a leading K axis on every parameter; forward
      ``(K, B, C, H, W)`` (per-member batches) or ``(B, C, H, W)`` (shared batch), or their
      flattened forms ``(K, B, C·H·W)`` / ``(B, C·H·W)`` → ``(K, B, num_classes)``.

    Args:
        in_shape: ``(channels, height, width)`` of one image, e.g. ``(1, 28, 28)``.
        num_classes: number of logits (1 for a binary sigmoid head).
        channels: output channels of the successive convolutions.
        kernel_size: odd square kernel size (padding ``kernel_size // 2`` keeps H, W).
        activation: ``"relu"`` or ``"tanh"``.
        ensemble, init, seed, device, dtype: as for :class:`~thermotrain.models.MLP`
            (the default init is PyTorch's, with fan-in ``in_channels·k·k`` for a convolution;
            member k of an ensemble is bit-identical to ``CNN(..., seed=s_k)`` at
            construction).

    Example:
        >>> net = CNN((1, 28, 28), 10, seed=0)
        >>> net(torch.zeros(8, 1, 28, 28)).shape
        torch.Size([8, 10])
        >>> CNN((3, 32, 32), 10, ensemble=4)(torch.zeros(8, 3, 32, 32)).shape
        torch.Size([4, 8, 10])
    """

    def __init__(
        self,
        in_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        *,
        channels: Sequence[int] = (16, 32),
        kernel_size: int = 5,
        activation: str = "relu",
        ensemble: int | None = None,
        init: InitLike = "default",
        seed: int | Sequence[int] = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.in_shape = _check_in_shape(in_shape)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.channels = _check_channels(channels)
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (for 'same' padding), got {kernel_size}")
        self.activation = check_activation(activation)
        self._phi = ACTIVATIONS[self.activation]
        c_in, h, w = self.in_shape
        n_pool = len(self.channels)
        if h >> n_pool < 1 or w >> n_pool < 1:
            raise ValueError(
                f"in_shape {self.in_shape} is too small for {n_pool} 2x2 poolings "
                f"(height and width must be >= {2**n_pool})"
            )
        fk = self._setup(ensemble, init, seed, device, dtype)
        k = self.ensemble_size
        pad = self.kernel_size // 2
        convs: list[nn.Module] = []
        for c_out in self.channels:
            if k is None:
                convs.append(skip_init(nn.Conv2d, c_in, c_out, self.kernel_size, padding=pad, **fk))
            else:
                convs.append(
                    EnsembleConv2d(k, c_in, c_out, self.kernel_size, padding=pad, init=None, **fk)
                )
            c_in = c_out
        self.convs = nn.ModuleList(convs)
        self.n_features = c_in * (h >> n_pool) * (w >> n_pool)
        if k is None:
            self.head: nn.Module = skip_init(nn.Linear, self.n_features, self.num_classes, **fk)
        else:
            self.head = EnsembleLinear(k, self.n_features, self.num_classes, init=None, **fk)
        self._initialize()

    def config(self) -> dict[str, Any]:
        return {
            "in_shape": list(self.in_shape),
            "num_classes": self.num_classes,
            "channels": list(self.channels),
            "kernel_size": self.kernel_size,
            "activation": self.activation,
        }

    def layer_modules(self) -> list[nn.Module]:
        return [*self.convs, self.head]

    def _images(self, x: Tensor) -> tuple[Tensor, bool]:
        """Reshape the input to images; returns (x, shared) with x 4-D (shared) or 5-D."""
        c, h, w = self.in_shape
        k = self.ensemble_size
        flat = c * h * w
        shapes = "(B, C, H, W) or (B, C*H*W)"
        if k is not None:
            shapes = f"(K={k}, B, C, H, W), (B, C, H, W), (K, B, C*H*W) or (B, C*H*W)"
        if x.ndim == 2 and x.shape[1] == flat:
            return x.reshape(x.shape[0], c, h, w), True
        if x.ndim == 4 and tuple(x.shape[1:]) == self.in_shape:
            return x, True
        if k is not None and x.ndim == 3 and x.shape[0] == k and x.shape[2] == flat:
            return x.reshape(k, x.shape[1], c, h, w), False
        if k is not None and x.ndim == 5 and x.shape[0] == k and x.shape[2:] == self.in_shape:
            return x, False
        raise ValueError(
            f"CNN with in_shape={self.in_shape} expects input {shapes} with C, H, W = "
            f"{c}, {h}, {w}; got {tuple(x.shape)}"
        )

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes)``; ensemble: ``(K, B, num_classes)``."""
        x, shared = self._images(x)
        k = self.ensemble_size
        if k is None:
            for conv in self.convs:
                x = F.max_pool2d(self._phi(conv(x)), 2)
            return self.head(x.flatten(1))
        for i, conv in enumerate(self.convs):
            assert isinstance(conv, EnsembleConv2d)
            if i == 0:
                x = conv.forward_shared_packed(x) if shared else conv.forward_packed(conv.pack(x))
            else:
                x = conv.forward_packed(x)
            x = F.max_pool2d(self._phi(x), 2)
        b = x.shape[0]
        # packed (B, K*C, H', W') -> (K, B, C*H'*W'): member-major channels, same flatten order
        # as the plain network's x.flatten(1)
        features = x.reshape(b, k, self.n_features).transpose(0, 1)
        return self.head(features)

    def extra_repr(self) -> str:
        return (
            f"in_shape={self.in_shape}, num_classes={self.num_classes}, "
            f"channels={list(self.channels)}, kernel_size={self.kernel_size}, "
            f"activation={self.activation!r}, ensemble={self.ensemble_size}"
        )
