r"""Fused group steps for the counter-based noise (``rng="philox"`` with the C kernel).

With Philox noise a group's whole step — the merged kick and the gradient-free part of its
scheme — is one pass over :math:`(\theta, p, \nabla\tilde L)` in the C kernel (``_philox.c``),
the normals made in cache and never stored; the adaptive scheme takes two passes around its
reduction (:math:`E_h` needs :math:`p^\top p` after the first :math:`D_{h/2}`). The maps are
exactly those of :mod:`.schemes` composed from :mod:`.substeps`, in the same order; results
agree with the composed path (which :class:`~thermotrain.samplers.noise.CounterNoise` runs)
to rounding — the C compiler may fuse a multiply and an add, and :math:`p^\top p` is summed
in float64 — and are bit-reproducible from run to run and for any thread count.

Each function returns whether every value it wrote is finite (the optimizer's NaN check
comes for free).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from .philox import Keys, adaptive_kernel, kernel_available, scheme_kernel
from .substeps import ou_coefficients

__all__ = ["FUSED", "supports"]

#: kernel kinds of ``tt_scheme_jobs``
LANGEVIN, SGLD, ADAPTIVE_FIRST, ADAPTIVE_SECOND = 0, 1, 2, 3


_SUPPORTED: dict[tuple, bool] = {}


def supports(view, members: int) -> bool:
    """Whether the fused kernel can take this group: CPU float32/float64 tensors of one
    dtype, contiguous, the ensemble axis (if any) leading. (Cached per set of tensors and
    storages: a step reuses its tensors.)"""
    key = (members, kernel_available(), *((id(t), t.data_ptr()) for t in (*view.params, *view.grads,
                                                       *view.momenta, *view.xis)))
    hit = _SUPPORTED.get(key)
    if hit is None:
        if len(_SUPPORTED) > 1024:
            _SUPPORTED.clear()
        hit = _SUPPORTED[key] = _supports(view, members)
    return hit


def _supports(view, members: int) -> bool:
    if not kernel_available():
        return False
    dtype = view.params[0].dtype
    if dtype not in (torch.float32, torch.float64):
        return False
    for p, g, e in zip(view.params, view.grads, view.ensemble_dims, strict=True):
        if e not in (None, 0) and members > 1:
            return False
        for t in (p, g):
            if t.device.type != "cpu" or t.dtype != dtype or not t.is_contiguous():
                return False
        if g.shape != p.shape:
            return False
    return (all(m.is_contiguous() for m in view.momenta)
            and all(x.is_contiguous() and x.dtype == dtype for x in view.xis))


def _jobs(view, offsets: Sequence[int], momenta: bool):
    ps = view.momenta if momenta else [None] * len(view.params)
    return list(zip(view.params, ps, view.grads, offsets, strict=True))


def _langevin(view, hp, offsets, keys: Keys, draw: int, members: int) -> bool:
    h = hp["lr"]
    c, d = ou_coefficients(hp["friction"], hp["temperature"], h)
    return scheme_kernel(LANGEVIN, _jobs(view, offsets[0], True), members, keys, draw,
                         [view.kick, h / 2, c, d])


def _overdamped(view, hp, offsets, keys: Keys, draw: int, members: int) -> bool:
    h = hp["lr"]
    return scheme_kernel(LANGEVIN, _jobs(view, offsets[0], True), members, keys, draw,
                         [view.kick, h / 2, 0.0, math.sqrt(hp["temperature"])])


def _sgld(view, hp, offsets, keys: Keys, draw: int, members: int) -> bool:
    h = hp["lr"]
    return scheme_kernel(SGLD, _jobs(view, offsets[0], False), members, keys, draw,
                         [h, math.sqrt(2.0 * hp["temperature"] * h)])


def _adaptive(view, hp, offsets, keys: Keys, draw: int, members: int) -> bool:
    h = hp["lr"]
    jobs = list(zip(view.params, view.momenta, view.grads, view.xis, offsets[0], offsets[1],
                    strict=True))
    return adaptive_kernel(jobs, members, keys, draw,
                           [view.kick, h / 2, hp["noise"] * math.sqrt(h / 2),
                            h * hp["coupling"], hp["temperature"]])


#: scheme name -> fused step ``(view, hp, offsets, keys, draw, members) -> all finite``
FUSED: dict[str, Callable[..., bool]] = {
    "langevin": _langevin,
    "overdamped": _overdamped,
    "sgld": _sgld,
    "adaptive": _adaptive,
}
