r"""The Philox stream on GPUs: a Triton kernel computing the definition of
:mod:`.philox` (Philox4x32-10, counter ``(lo32(j), hi32(j), lo32(d), hi32(d))`` for block j
of draw d, the member's 64-bit seed as key; Box–Muller from 24-bit (float32) or 53-bit
(float64) uniforms), so a CUDA run draws the same noise as a CPU run, to the last bits of
``log`` and ``sin``.

Used by :func:`.philox.philox_normal_` for tensors on a CUDA device when Triton is importable
(it ships with CUDA builds of torch); elsewhere the torch definition runs. No GPU was lent to
this project: the kernel is tested on the CPU with Triton's interpreter
(``TRITON_INTERPRET=1``) against :func:`.philox.philox4x32` (the raw words, bit for bit) and
:func:`.philox.philox_normal_reference` (the normals, to rounding); its speed on a GPU has
not been measured (docs/conventions.md).
"""

from __future__ import annotations

import functools
import importlib.util

import torch
from torch import Tensor

__all__ = ["available", "fill", "raw_words"]

_BLOCK = 256  # Philox blocks per program


#: let CPU tensors take the Triton path too (tests, under Triton's interpreter,
#: ``TRITON_INTERPRET=1``); the C kernel is the CPU's own path
INTERPRET_ON_CPU = False


def available(device: torch.device) -> bool:
    """Whether the Triton kernel fills tensors on ``device``: CUDA with Triton importable."""
    if device.type != "cuda" and not INTERPRET_ON_CPU:
        return False
    return importlib.util.find_spec("triton") is not None


@functools.cache
def _kernels() -> dict:
    from . import _triton_kernels

    k = _triton_kernels.KERNELS
    return {"raw": k["raw"], torch.float32: k["float32"], torch.float64: k["float64"]}


def _i64(v: int) -> int:
    """A 64-bit block counter as the int64 of the same bits (the kernel's type for it)."""
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >= 1 << 63 else v


def _key_tensors(seeds: list[int], device: torch.device) -> tuple[Tensor, Tensor]:
    lo = torch.tensor([s & 0xFFFFFFFF for s in seeds], dtype=torch.int64, device=device)
    hi = torch.tensor([(s >> 32) & 0xFFFFFFFF for s in seeds], dtype=torch.int64, device=device)
    return lo, hi


def fill(x: Tensor, seeds: list[int], draw: int, start: int, keys: tuple | None = None) -> None:
    """Fill ``x`` (shape ``(R, n)``, unit stride along rows; row r on stream ``seeds[r]``)
    with entries ``[start, start + n)`` of draw ``draw``. ``keys``: the seeds' low and high
    words as int64 tensors on ``x``'s device, if the caller keeps them."""
    import triton

    rows, n = x.shape
    if rows == 0 or n == 0:
        return
    if x.dtype not in (torch.float32, torch.float64):  # half types: float32 normals, cast
        tmp = torch.empty(rows, n, dtype=torch.float32, device=x.device)
        fill(tmp, seeds, draw, start, keys)
        x.copy_(tmp)
        return
    if n > 1 and x.stride(1) != 1:
        tmp = torch.empty(rows, n, dtype=x.dtype, device=x.device)
        fill(tmp, seeds, draw, start, keys)
        x.copy_(tmp)
        return
    per = 2 if x.dtype == torch.float64 else 4
    first = start // per
    nblocks = (start + n + per - 1) // per - first
    lo, hi = keys if keys is not None else _key_tensors(seeds, x.device)
    grid = (rows, triton.cdiv(nblocks, _BLOCK))
    _kernels()[x.dtype][grid](x, x.stride(0) if rows > 1 else n, n, start, lo, hi, _i64(first),
                              nblocks, draw & 0xFFFFFFFF, (draw >> 32) & 0xFFFFFFFF,
                              BLOCK=_BLOCK)


def raw_words(first: int, n: int, key: int, draw: int, device: torch.device) -> Tensor:
    """The raw Philox words of blocks ``first … first+n-1`` (``(4n,)`` uint32 as int64), for
    tests against :func:`.philox.philox4x32` and the known-answer vectors."""
    import triton

    out = torch.empty(4 * n, dtype=torch.int32, device=device)
    lo, hi = _key_tensors([key], device)
    _kernels()["raw"][(1, triton.cdiv(n, _BLOCK))](out, lo, hi, _i64(first), n, draw & 0xFFFFFFFF,
                                                   (draw >> 32) & 0xFFFFFFFF, BLOCK=_BLOCK)
    return out.to(torch.int64) & 0xFFFFFFFF
