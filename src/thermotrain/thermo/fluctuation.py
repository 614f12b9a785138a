r"""Fluctuation theorems for the entropy produced along SGD trajectories (docs/science.md §5,
``docs/thermo.md``).

With :math:`\sigma_n` the entropy produced by step n
(:meth:`~thermotrain.thermo.GaussianNESS.entropy_production`) and
:math:`\Delta S_k = \sigma_n + \dots + \sigma_{n+k-1}` over k consecutive steps:

* integral FT: :math:`\langle e^{-\Delta S_k}\rangle = 1` for every k;
* detailed FT: :math:`\log[P(\Delta S)/P(-\Delta S)] = \Delta S` (slope 1).

ΔS windows are **non-overlapping** (start every ``stride ≥ k`` steps), so their
:math:`e^{-\Delta S}` are nearly independent; standard errors are batch means over blocks of
consecutive windows (each chain of an ensemble its own blocks), which also covers what
dependence remains.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["IntegralFT", "DetailedFT", "windowed_entropy", "integral_fluctuation_theorem",
           "detailed_fluctuation_theorem"]


def _sigma(sigma: object) -> np.ndarray:
    if isinstance(sigma, Tensor):
        sigma = sigma.detach().cpu().to(torch.float64).numpy()
    s = np.asarray(sigma, dtype=np.float64)
    if s.ndim == 1:
        s = s[None]
    if s.ndim != 2 or s.shape[1] == 0:
        raise ValueError(f"sigma must be (T,) or (K, T) per-step entropy productions, got shape "
                         f"{np.shape(sigma)}")
    if not np.all(np.isfinite(s)):
        raise ValueError("sigma has non-finite entries")
    return s


def _k(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k (steps per window) must be an int >= 1, got {k!r}")
    return int(k)


def windowed_entropy(sigma: object, k: int, stride: int | None = None) -> np.ndarray:
    r""":math:`\Delta S_k` of windows of k consecutive steps starting every ``stride`` steps
    (default k: non-overlapping, adjacent), per chain: ``(K, windows)``."""
    s, k = _sigma(sigma), _k(k)
    stride = k if stride is None else _k(stride)
    if stride < k:
        raise ValueError(f"stride must be >= k = {k} (non-overlapping windows), got {stride}")
    starts = np.arange(0, s.shape[1] - k + 1, stride)
    if starts.size == 0:
        raise ValueError(f"a trajectory of {s.shape[1]} steps has no window of k = {k} steps")
    c = np.concatenate([np.zeros((s.shape[0], 1)), np.cumsum(s, axis=1)], axis=1)
    return c[:, starts + k] - c[:, starts]


def _batch_mean_error(values: np.ndarray, blocks: int) -> float:
    """Standard error of the mean of ``values (K, W)`` from block means: each chain cut into
    ``ceil(blocks / K)`` blocks of consecutive windows (at least 2 blocks in all)."""
    k, w = values.shape
    per_chain = max(1, min(w, -(-blocks // k)))
    usable = (w // per_chain) * per_chain
    means = values[:, :usable].reshape(k, per_chain, -1).mean(axis=2).reshape(-1)
    if means.size < 2:
        raise ValueError("too few windows for a standard error (need at least 2 blocks)")
    return float(means.std(ddof=1) / np.sqrt(means.size))


@dataclass(frozen=True)
class IntegralFT:
    r"""⟨e^{−ΔS_k}⟩ for one k, with its standard error; also ⟨ΔS_k⟩ and ``windows`` used."""

    k: int
    mean: float
    stderr: float
    mean_entropy: float
    entropy_stderr: float
    windows: int

    @property
    def deviation(self) -> float:
        """:math:`(\\langle e^{-\\Delta S}\\rangle - 1)/\\mathrm{s.e.}`: the FT holds within
        Monte Carlo error when this is O(1)."""
        return (self.mean - 1.0) / self.stderr


def integral_fluctuation_theorem(sigma: object, k: Iterable[int] | int = (1, 2, 3), *,
                                 stride: int | None = None, blocks: int = 100
                                 ) -> list[IntegralFT]:
    r"""The integral fluctuation theorem check :math:`\langle e^{-\Delta S_k}\rangle = 1`.

    Args:
        sigma: per-step entropy productions, ``(T,)`` or ``(K, T)`` (K independent chains).
        k: one window length or several (default 1, 2, 3 as in docs/science.md §5).
        stride: steps between window starts (default k; the authors use 150); ≥ k.
        blocks: number of blocks for the batch-means standard error.

    Returns:
        One :class:`IntegralFT` per k.
    """
    ks = [k] if isinstance(k, (int, np.integer)) else list(k)
    out = []
    for kk in ks:
        ds = windowed_entropy(sigma, kk, stride if stride is None else max(stride, _k(kk)))
        e = np.exp(-ds)
        out.append(IntegralFT(k=_k(kk), mean=float(e.mean()),
                              stderr=_batch_mean_error(e, blocks),
                              mean_entropy=float(ds.mean()),
                              entropy_stderr=_batch_mean_error(ds, blocks),
                              windows=int(ds.size)))
    return out


@dataclass(frozen=True)
class DetailedFT:
    r"""The detailed FT fit: ``slope`` ± ``stderr`` of :math:`\log[P(\Delta S)/P(-\Delta S)]`
    against ΔS (1 when the theorem holds), and the symmetric histogram for plotting:
    ``edges`` (bins + 1), ``counts`` (bins); ``centers``, ``log_ratio``, ``log_ratio_error``
    of the positive bins used in the fit."""

    k: int
    slope: float
    stderr: float
    edges: np.ndarray
    counts: np.ndarray
    centers: np.ndarray
    log_ratio: np.ndarray
    log_ratio_error: np.ndarray
    samples: int

    @property
    def deviation(self) -> float:
        """(slope − 1)/s.e."""
        return (self.slope - 1.0) / self.stderr


def detailed_fluctuation_theorem(sigma: object, k: int = 1, *, bins: int = 40,
                                 stride: int | None = None, width: float = 3.0,
                                 min_count: int = 20) -> DetailedFT:
    r"""The detailed fluctuation theorem check: the slope of :math:`\log[P(\Delta S)/P(-\Delta
    S)]` against :math:`\Delta S` (theory: 1).

    ΔS of non-overlapping k-step windows are histogrammed on a grid symmetric about 0
    (``bins`` bins, even, over ±``width`` standard deviations); for every positive bin x whose
    count and mirror count are ≥ ``min_count``, :math:`r = \log(n_x/n_{-x})` with the Poisson
    variance :math:`1/n_x + 1/n_{-x}`; the slope is the weighted least-squares fit
    :math:`r = s\,x` through the origin, :math:`s = \sum w x r/\sum w x^2`,
    :math:`\mathrm{s.e.} = (\sum w x^2)^{-1/2}`, :math:`w = 1/\mathrm{var}(r)`.
    """
    ds = windowed_entropy(sigma, k, stride).reshape(-1)
    if bins < 4 or bins % 2:
        raise ValueError(f"bins must be an even int >= 4, got {bins!r}")
    half = width * ds.std()
    if not half > 0:
        raise ValueError("ΔS has zero spread; nothing to fit")
    edges = np.linspace(-half, half, bins + 1)
    counts, _ = np.histogram(ds, edges)
    pos, neg = counts[bins // 2:], counts[: bins // 2][::-1]
    centers = 0.5 * (edges[bins // 2:-1] + edges[bins // 2 + 1:])
    keep = (pos >= min_count) & (neg >= min_count)
    if keep.sum() < 2:
        raise ValueError(f"fewer than 2 bins have >= {min_count} counts on both sides; use more "
                         "samples or fewer bins")
    x, npos, nneg = centers[keep], pos[keep].astype(float), neg[keep].astype(float)
    r = np.log(npos / nneg)
    var = 1.0 / npos + 1.0 / nneg
    w = 1.0 / var
    sxx = float(np.sum(w * x * x))
    slope = float(np.sum(w * x * r) / sxx)
    return DetailedFT(k=_k(k), slope=slope, stderr=float(sxx ** -0.5), edges=edges,
                      counts=counts, centers=x, log_ratio=r, log_ratio_error=np.sqrt(var),
                      samples=int(ds.size))
