r"""Counter-based Gaussian noise: Philox4x32-10 with Box–Muller (``rng="philox"``, the
samplers' default, docs/science.md §0).

torch's CPU generator (mt19937, ``rng="torch"``) makes about one normal per 3.5 ns on one
core — as much time as a whole Adam step at 10M parameters. This stream is about twice as fast
per core, is made inside the fused step kernel where it is used (never stored), and has no
state beyond the member's seed and a draw counter:

    entry i of draw d of the stream with key s is a pure function f(s, d, i).

**Definition.** Philox4x32-10 (Salmon et al., SC'11; Random123's known-answer vectors are
tested) maps the counter ``(lo32(j), hi32(j), lo32(d), hi32(d))`` and the key
``(lo32(s), hi32(s))`` to four 32-bit words ``x0..x3``. Box–Muller turns them into normals:

* float32, block ``j`` gives entries ``4j … 4j+3``: with 24-bit uniforms
  :math:`u_1 = 2^{-24}(\lfloor x_0/2^8\rfloor + 1)`, :math:`u_2 = 2^{-24}\lfloor x_1/2^8\rfloor`
  (and :math:`u_3, u_4` from :math:`x_2, x_3`), :math:`r = \sqrt{-2\log u_1}`,
  :math:`a = 2\pi u_2`: entries :math:`r\sin(a+\pi/2),\ r\sin a` and the same from
  :math:`u_3, u_4`;
* float64, block ``j`` gives entries ``2j, 2j+1`` from 53-bit uniforms built from
  ``(x0:x1)`` and ``(x2:x3)``.

Because an entry does not depend on how the stream is cut, chunks, rows (ensemble members)
and threads can be filled in any order; the whole state of a stream is ``(seed, draws)``.

**Two implementations.** A C kernel (``_philox.c``), compiled at first use with the system's
C compiler (``$CC``, else ``cc``) and cached under ``$THERMOTRAIN_CACHE`` (default
``~/.cache/thermotrain``), fills CPU float32/float64 buffers; gcc vectorizes it with
glibc's vector ``log``/``sin``. Everything else (other devices, dtypes, no compiler, or
``THERMOTRAIN_NO_KERNEL=1``) uses :func:`philox_normal_reference`, written with torch
integer ops. The two give the same Philox words bit for bit; the normals agree to a few
units in the last place (different ``log``/``sin`` implementations), so a run is
bit-reproducible on one machine but not across the two implementations.

**Devices.** The C kernel is CPU only. On CUDA, where Triton is importable (it ships with
CUDA builds of torch), a Triton kernel (:mod:`._triton`) computes the same definition: the
same Philox words, normals to the last bits of ``log``/``sin``. On other devices (MPS, CUDA
without Triton) :func:`philox_normal_reference` runs in torch integer ops on that device.
Nothing here has been run on a GPU (none was available): the Triton kernel is tested on the
CPU under Triton's interpreter, against the reference and the known-answer vectors.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from .. import _native
from . import _triton

__all__ = [
    "philox4x32",
    "philox_normal_",
    "philox_normal_reference",
    "kernel_available",
]

_M0, _M1 = 0xD2511F53, 0xCD9E8D57
_W0, _W1 = 0x9E3779B9, 0xBB67AE85
_MASK32 = 0xFFFFFFFF
_MASK16 = 0xFFFF
_TWO_PI_F32 = 6.28318530717958648
_HALF_PI = 1.57079632679489662

_SOURCE = Path(__file__).with_name("_philox.c")
_LIB: ctypes.CDLL | None | bool = False  # False: not tried yet; None: unavailable


# --------------------------------------------------------------------------- reference
def _mulhilo(m: int, x: Tensor) -> tuple[Tensor, Tensor]:
    """High and low 32 bits of ``m * x`` for 32-bit ``m`` and int64 ``x`` in [0, 2³²), without
    64-bit overflow: ``x = xh·2¹⁶ + xl``."""
    lo_part = x & _MASK16
    hi_part = x >> 16
    low = m * lo_part                      # < 2^48
    mid = m * hi_part + (low >> 16)        # < 2^49; m*x = mid·2¹⁶ + (low & 0xFFFF)
    return mid >> 16, ((mid & _MASK16) << 16) | (low & _MASK16)


def philox4x32(counter: Sequence[Tensor], key: Sequence[Tensor]) -> list[Tensor]:
    """Philox4x32-10 of 32-bit words held in int64 tensors (broadcast together): the four
    counter words and two key words in, four words out."""
    x0, x1, x2, x3 = counter
    k0, k1 = key
    for _ in range(10):
        hi0, lo0 = _mulhilo(_M0, x0)
        hi1, lo1 = _mulhilo(_M1, x2)
        x0, x1, x2, x3 = hi1 ^ x1 ^ k0, lo1, hi0 ^ x3 ^ k1, lo0
        k0 = (k0 + _W0) & _MASK32
        k1 = (k1 + _W1) & _MASK32
    return [x0, x1, x2, x3]


def _key_words(keys: Sequence[int], device: torch.device) -> tuple[Tensor, Tensor]:
    k = torch.tensor([[int(s) & _MASK32, (int(s) >> 32) & _MASK32] for s in keys],
                     dtype=torch.int64, device=device)
    return k[:, :1], k[:, 1:]


def philox_normal_reference(
    keys: Sequence[int],
    draw: int,
    n: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    start: int = 0,
) -> Tensor:
    """Entries ``[start, start + n)`` of draw ``draw`` of the streams keyed ``keys``, as a
    ``(len(keys), n)`` tensor — the definition above, in torch ops on any device."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        raise TypeError(f"philox normals need a floating dtype, got {dtype}")
    wide = dtype == torch.float64
    per = 2 if wide else 4
    first, last = start // per, (start + n + per - 1) // per
    j = torch.arange(first, last, dtype=torch.int64, device=device)
    k0, k1 = _key_words(keys, device)
    counter = [j & _MASK32, j >> 32,
               torch.full_like(j, draw & _MASK32), torch.full_like(j, (draw >> 32) & _MASK32)]
    x0, x1, x2, x3 = philox4x32(counter, (k0, k1))
    if wide:
        u1 = (((x0 << 21) | (x1 >> 11)) + 1).double() * 2.0**-53
        u2 = ((x2 << 21) | (x3 >> 11)).double() * 2.0**-53
        r = torch.sqrt(-2.0 * torch.log(u1))
        a = (2 * torch.pi) * u2
        z = torch.stack([r * torch.sin(a + _HALF_PI), r * torch.sin(a)], dim=-1)
    else:
        f = torch.float32
        u = [((x >> 8) + 1).to(f) * 2.0**-24 if odd == 0 else (x >> 8).to(f) * 2.0**-24
             for odd, x in zip((0, 1, 0, 1), (x0, x1, x2, x3), strict=True)]
        r1 = torch.sqrt(-2.0 * torch.log(u[0]))
        r2 = torch.sqrt(-2.0 * torch.log(u[2]))
        a1, a2 = _TWO_PI_F32 * u[1], _TWO_PI_F32 * u[3]
        z = torch.stack([r1 * torch.sin(a1 + _HALF_PI), r1 * torch.sin(a1),
                         r2 * torch.sin(a2 + _HALF_PI), r2 * torch.sin(a2)], dim=-1)
    z = z.reshape(len(keys), -1)
    offset = start - first * per
    return z[:, offset : offset + n].to(dtype)


# --------------------------------------------------------------------------- the kernel
def _declare(lib: ctypes.CDLL) -> None:
    i64, u64, ptr, cint = ctypes.c_int64, ctypes.c_uint64, ctypes.c_void_p, ctypes.c_int
    lib.tt_philox_fill.argtypes = [i64, ptr, ptr, ptr, ptr, ptr, ptr, ptr, u64, cint]
    lib.tt_philox_fill.restype = cint
    lib.tt_program.argtypes = [i64, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, cint, ptr, ptr,
                               ptr, cint, ptr, ptr, u64, ptr, i64, ptr, ptr, ptr, ptr, ptr,
                               cint]
    lib.tt_program.restype = cint
    lib.tt_program_v.argtypes = [ptr, ptr]
    lib.tt_program_v.restype = cint
    lib.tt_finite_rows.argtypes = [i64, ptr, ptr, ptr, ptr, ptr, i64, ptr, cint]
    lib.tt_finite_rows.restype = cint
    lib.tt_philox4x32_raw.argtypes = [ptr, i64, u64, u64, u64]
    lib.tt_philox4x32_raw.restype = None


def _library() -> ctypes.CDLL | None:
    global _LIB
    if _LIB is False:
        _LIB = _native.load(_SOURCE, "rng='philox'", _declare)
    return _LIB  # type: ignore[return-value]


def kernel_available() -> bool:
    """Whether the compiled CPU kernel is in use (else the torch implementation is)."""
    return _library() is not None


class Keys:
    """Member seeds as a C array for the kernel (built once, reused every draw)."""

    def __init__(self, seeds: Sequence[int]):
        self.seeds = [int(s) for s in seeds]
        for s in self.seeds:
            if not 0 <= s < 2**64:
                raise ValueError(f"philox keys must be in [0, 2**64), got {s}")
        self.array = (ctypes.c_uint64 * max(1, len(self.seeds)))(*self.seeds)
        self._words: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def __len__(self) -> int:
        return len(self.seeds)

    def words(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """The seeds' low and high 32-bit words as int64 tensors on ``device`` (cached)."""
        hit = self._words.get(device)
        if hit is None:
            hit = self._words[device] = _triton._key_tensors(self.seeds, device)
        return hit

    def address(self, first_row: int) -> int:
        return ctypes.addressof(self.array) + first_row * ctypes.sizeof(ctypes.c_uint64)


def _array(ctype, values):
    values = list(values)
    return (ctype * len(values))(*values)


def _kernel_job(x: Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            and x.dim() == 2 and (x.shape[1] <= 1 or x.stride(1) == 1)
            and (x.shape[0] <= 1 or x.stride(0) >= x.shape[1]))


def _fill(keys: Keys, first_row: int, x: Tensor, start: int, draw: int) -> None:
    """Fill ``x`` (shape ``(R, n)``, row r on stream ``keys[first_row + r]``) with entries
    ``[start, start + n)`` of draw ``draw``: the kernel where it applies, else the torch
    definition."""
    if x.shape[1] == 0 or x.shape[0] == 0:
        return
    lib = _library()
    if lib is None or not _kernel_job(x):
        seeds = keys.seeds[first_row : first_row + x.shape[0]]
        if _triton.available(x.device):  # CUDA: the same stream from a Triton kernel
            lo, hi = keys.words(x.device)
            _triton.fill(x, seeds, draw, start, (lo[first_row:], hi[first_row:]))
            return
        x.copy_(philox_normal_reference(seeds, draw, x.shape[1], x.dtype, x.device, start))
        return
    # the storage the kernel may touch: from x's first entry to the end of its storage
    avail = x.untyped_storage().nbytes() // x.element_size() - x.storage_offset()
    status = lib.tt_philox_fill(1, _array(ctypes.c_void_p, [x.data_ptr()]),
                                _array(ctypes.c_int64, [x.shape[0]]),
                                _array(ctypes.c_int64, [x.shape[1]]),
                                _array(ctypes.c_int64, [x.stride(0)]),
                                _array(ctypes.c_int64, [avail]),
                                _array(ctypes.c_uint64, [start]), keys.address(first_row),
                                draw, int(x.dtype == torch.float64))
    if status != 0:
        raise ValueError(f"the Philox kernel rejected a buffer of shape {tuple(x.shape)} and "
                         f"strides {x.stride()}")


def _rows(x: Tensor, keys: Keys, rows: slice | None, name: str) -> int:
    lo, hi, _ = (rows if rows is not None else slice(0, len(keys))).indices(len(keys))
    if x.dim() != 2 or x.shape[0] != hi - lo:
        raise ValueError(f"{name} must have shape ({hi - lo}, n), got {tuple(x.shape)}")
    return lo


def philox_normal_(out: Tensor, keys: Keys, draw: int, start: int = 0,
                   rows: slice | None = None) -> Tensor:
    """Fill ``out`` (shape ``(R, n)``, rows = the streams ``keys[rows]``) with entries
    ``[start, start + n)`` of draw ``draw``. Uses the C kernel where it applies (CPU,
    float32/float64, unit stride along a row), on torch's OpenMP threads."""
    lo = _rows(out, keys, rows, "out")
    if start < 0 or draw < 0:
        raise ValueError(f"start and draw must be >= 0, got start={start}, draw={draw}")
    _fill(keys, lo, out, start, draw)
    return out


def philox4x32_kernel(first: int, n: int, key: int, draw: int) -> Tensor | None:
    """Raw words of blocks ``first … first+n-1`` from the C kernel (``None`` without it);
    for tests against :func:`philox4x32` and the known-answer vectors."""
    lib = _library()
    if lib is None:
        return None
    out = torch.empty(4 * n, dtype=torch.int32)
    lib.tt_philox4x32_raw(out.data_ptr(), n, first, key, draw)
    return out.view(n, 4).to(torch.int64) & _MASK32
