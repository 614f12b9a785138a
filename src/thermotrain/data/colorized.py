r"""Colourised MNIST: digits drawn in a random colour on a random background [ours].

A three-channel stand-in for CIFAR-10 (not available on these machines) for the channel
swaps of docs/science.md §9. Definition (ours, docs/swaps.md): for image i with grey intensities
:math:`m \in [0, 1]^{28\times 28}` (MNIST's :math:`u/255`), a background colour
:math:`g_{i} \sim \mathcal U([0, 0.5]^3)` and a brighter foreground colour
:math:`f_{i,c} = g_{i,c} + d_{i,c}`, :math:`d_{i,c} \sim \mathcal U[0.25, 0.5]` (every channel
keeps a contrast of at least 0.25 and the digit is brighter than the background in every
channel, as in MNIST), the image is

.. math::
    x_{i,c} = g_{i,c}\,(1 - m_i) + f_{i,c}\, m_i, \qquad c = 1, 2, 3.

The colours come from a generator seeded with ``2·seed`` (train) or ``2·seed + 1`` (test),
drawn for the whole split in image order: image i has the same colours in every subset.
The colours are independent across channels, so a channel swap is another plausible colour
of the same digit (the label does not change).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from .mnist import load_mnist

__all__ = ["colorize", "load_colorized_mnist"]


def colorize(images: Tensor, seed: int = 0) -> Tensor:
    """``(N, 1, H, W)`` grey images in [0, 1] → ``(N, 3, H, W)`` colour images (see the module
    docstring); deterministic in ``seed``."""
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 1:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a (N, 1, H, W) tensor, got {shape}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**62:
        raise ValueError(f"seed must be an int in [0, 2**62), got {seed!r}")
    n = images.shape[0]
    gen = torch.Generator().manual_seed(seed)
    draws = torch.rand(n, 2, 3, generator=gen, dtype=torch.float64)
    bg = 0.5 * draws[:, 0]
    fg = bg + 0.25 + 0.25 * draws[:, 1]
    fg = fg.to(images.dtype).to(images.device)[:, :, None, None]
    bg = bg.to(images.dtype).to(images.device)[:, :, None, None]
    return bg * (1 - images) + fg * images


def load_colorized_mnist(split: str = "train", data_dir: str | os.PathLike[str] | None = None,
                         *, seed: int = 0, count: int | None = None,
                         device: torch.device | str | None = None,
                         dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """Colourised MNIST: ``images[N, 3, 28, 28]`` in [0, 1] and ``labels[N]`` (int64).

    Loads MNIST through :func:`~thermotrain.data.load_mnist` (same files, verification and
    data root) and colours it with :func:`colorize` at seed ``2·seed`` (train) or
    ``2·seed + 1`` (test). ``count``: only the first ``count`` images (the same images and
    colours as the first ``count`` of the whole split).

    Example:
        >>> x, y = load_colorized_mnist("test", "../shared/data")  # doctest: +SKIP
        >>> x.shape  # doctest: +SKIP
        torch.Size([10000, 3, 28, 28])
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**61:
        raise ValueError(f"seed must be an int in [0, 2**61), got {seed!r}")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int)
                              or count < 1):
        raise ValueError(f"count must be None or an int >= 1, got {count!r}")
    images, labels = load_mnist(split, data_dir, dtype=dtype)
    images, labels = images[:count], labels[:count]
    colour = colorize(images, 2 * seed + (split == "test"))
    return colour.to(device) if device is not None else colour, \
        labels.to(device) if device is not None else labels
