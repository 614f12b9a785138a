r"""Generated classification data of docs/science.md §6 (and, re-exported from
:mod:`.regression`, the regression sets of §4 and §5).

All random numbers come from an explicit CPU :class:`torch.Generator` (an ``int`` seed or a
generator passed as ``seed``) and are drawn in float64; the result is then cast to ``dtype``
and moved to ``device``. Hence the same seed gives the same points (up to rounding to
``dtype``) on every device and for every dtype.

- :func:`spirals` — the two-spiral classification data of the paper (Eq. 16), docs/science.md §6.
- :func:`planar_trig` — planar trigonometric data (Eq. 17), **our** definition, docs/science.md §6.
- :func:`bayesian_linear_regression` — the exactly solvable SGWORLD check of docs/science.md §4.
- :func:`tanh_regression` — the 1-2-1 tanh regression of the fluctuation-theorem paper,
  docs/science.md §5.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._checks import check_device, check_float, check_float_dtype, check_int, make_generator
from .regression import BayesianLinearRegression, bayesian_linear_regression, tanh_regression

__all__ = [
    "spirals",
    "planar_trig",
    "BayesianLinearRegression",
    "bayesian_linear_regression",
    "tanh_regression",
]


def spirals(
    n: int,
    *,
    turns: float = 4,
    a: float = 2.0,
    p: float = 0.5,
    noise: float = 0.02,
    seed: int | torch.Generator,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    r"""Two interleaved spirals, the binary classification data of the paper
    (docs/science.md §6, Eq. 16).

    With :math:`m = n/2` values :math:`t_j \sim U[0, 1)` and :math:`r_j = t_j^{p}`,

    .. math::

        x_j = a\, r_j \,\bigl(\cos(2\pi b\, r_j),\ \sin(2\pi b\, r_j)\bigr),
        \qquad b = \text{turns},

    class 0 is :math:`\{x_j\}`, class 1 is :math:`\{-x_j\}`, and every one of the :math:`n`
    points then gets independent noise :math:`c\,\mathcal N(0, I_2)` with :math:`c` = ``noise``.

    Args:
        n: total number of points, even and positive (``n/2`` per class).
        turns: number of turns :math:`b` of each spiral (> 0; need not be an integer).
        a: radius scale :math:`a` (> 0): the noiseless points lie in the disc of radius ``a``.
        p: exponent :math:`p` (> 0) of :math:`t^p`; ``p = 0.5`` spreads points evenly in area,
            ``p = 1`` (the paper's Fig. 9) puts more of them near the centre.
        noise: standard deviation :math:`c \ge 0` of the added Gaussian noise.
        seed: int seed (``0 <= seed < 2**63``) or a CPU :class:`torch.Generator` (advanced in
            place). Draw the test set with a different seed: "test points: a fresh draw".
        device: where the returned tensors live (default CPU).
        dtype: floating dtype of both returned tensors (default float32).

    Returns:
        ``(X, y)``: ``X`` of shape ``(n, 2)``; ``y`` of shape ``(n,)`` with values 0.0/1.0 in
        ``dtype`` (ready for :class:`torch.nn.BCELoss`). The first ``n/2`` rows are class 0,
        the last ``n/2`` class 1, and row ``j + n/2`` is the mirror image of row ``j`` before
        noise (minibatching shuffles; see :class:`~thermotrain.data.Minibatcher`).

    Defaults are docs/science.md §6's: ``a = 2``, ``p = 0.5``, ``b = 4`` turns, ``c = 0.02``.
    Random draws, in order: ``t`` (``n/2`` uniforms), then the ``(n, 2)`` noise matrix.

    Example:
        >>> X, y = spirals(500, turns=2, seed=0)
        >>> X.shape, y.shape, float(y.mean())
        (torch.Size([500, 2]), torch.Size([500]), 0.5)
    """
    n = check_int("n", n, minimum=2)
    if n % 2:
        raise ValueError(f"n must be even (n/2 points per class), got {n}")
    turns = check_float("turns", turns, minimum=0.0, strict=True)
    a = check_float("a", a, minimum=0.0, strict=True)
    p = check_float("p", p, minimum=0.0, strict=True)
    noise = check_float("noise", noise, minimum=0.0)
    dtype, device = check_float_dtype(dtype), check_device(device)
    generator = make_generator(seed)

    m = n // 2
    t = torch.rand(m, generator=generator, dtype=torch.float64)
    r = t.pow(p)
    angle = 2.0 * math.pi * turns * r
    arm = a * r.unsqueeze(1) * torch.stack((torch.cos(angle), torch.sin(angle)), dim=1)
    X = torch.cat((arm, -arm), dim=0)
    X = X + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    y = torch.cat((torch.zeros(m, dtype=torch.float64), torch.ones(m, dtype=torch.float64)))
    return X.to(device=device, dtype=dtype), y.to(device=device, dtype=dtype)


def planar_trig(
    n: int,
    *,
    frequency: float = 3.0,
    b: float = 2.0,
    noise: float = 0.02,
    seed: int | torch.Generator,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    r"""Planar trigonometric classification data (paper's Eq. 17; **our** definition,
    docs/science.md §6).

    .. note::
        The paper's formula is not recoverable from its sources; this is the project's own
        definition (docs/science.md §6, marked [ours]), chosen to match the captions' parameters
        :math:`a` (frequency), :math:`b`, :math:`c` (noise).

    .. math::

        (x_1, x_2) \sim U([-1, 1]^2), \qquad
        y = \mathbb 1\bigl[x_2 > \sin(a \pi x_1)/b\bigr], \qquad
        x \leftarrow x + c\,\mathcal N(0, I_2).

    The label is decided on the clean point; noise is added afterwards, so points near the
    boundary can cross it. Larger :math:`a` (more oscillations) is harder; the paper uses
    :math:`a \in \{3, 6, 10\}`, :math:`b = 2`, :math:`c = 0.02`.

    Args:
        n: number of points (>= 1).
        frequency: :math:`a > 0`; :math:`\sin(a\pi x_1)` has period :math:`2/a`, so the
            boundary makes :math:`a` full oscillations across :math:`[-1, 1]`.
        b: :math:`b > 0`, the boundary's amplitude is :math:`1/b`.
        noise: standard deviation :math:`c \ge 0` of the added Gaussian noise.
        seed: int seed or CPU :class:`torch.Generator`.
        device: where the returned tensors live (default CPU).
        dtype: floating dtype (default float32).

    Returns:
        ``(X, y)``: ``X`` of shape ``(n, 2)``, ``y`` of shape ``(n,)`` with values 0.0/1.0.
        Random draws, in order: the ``(n, 2)`` uniforms, then the ``(n, 2)`` noise.

    Example:
        >>> X, y = planar_trig(1000, frequency=6.0, seed=1)
        >>> X.shape, bool(((y == 0) | (y == 1)).all())
        (torch.Size([1000, 2]), True)
    """
    n = check_int("n", n, minimum=1)
    frequency = check_float("frequency", frequency, minimum=0.0, strict=True)
    b = check_float("b", b, minimum=0.0, strict=True)
    noise = check_float("noise", noise, minimum=0.0)
    dtype, device = check_float_dtype(dtype), check_device(device)
    generator = make_generator(seed)

    X = 2.0 * torch.rand(n, 2, generator=generator, dtype=torch.float64) - 1.0
    y = (X[:, 1] > torch.sin(frequency * math.pi * X[:, 0]) / b).to(torch.float64)
    X = X + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return X.to(device=device, dtype=dtype), y.to(device=device, dtype=dtype)
