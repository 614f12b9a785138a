r"""The fused implementation of a step program: the C kernel's interpreter (``_philox.c``,
``tt_program``) runs the op list of :func:`.splittings.program` — the same ops as
:mod:`.reference` — over tiles of :math:`(\theta, p, \nabla\tilde L)` while they are in
cache, making the Philox normals tile by tile (never stored), on torch's OpenMP threads. Ops
are passed as op codes, coefficients as arrays of K doubles (one per ensemble member); E cuts
the program into passes around its :math:`p^\top p` (summed per tile in float64, reduced in
a fixed order).

Results are bit-reproducible from run to run and for any thread count; they agree with the
torch reference to rounding only (the C compiler may contract a multiply and an add into an
FMA, and :math:`p^\top p` is summed in float64 there).

Every tensor is validated here (device, dtype, shape, contiguity) before its address reaches
C, and the kernel checks again that every row it touches lies inside the tensors' sizes; a
mismatch raises :class:`ValueError` naming the parameter.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence

import torch
from torch import Tensor

from .philox import Keys, _array, _library, kernel_available
from .reference import GroupView

__all__ = ["supports", "problem", "signature", "prepare", "run", "finite_members", "screen_args",
           "set_gradients", "screen_of", "combined_screen", "refresh_combined_screen",
           "OPCODES", "ProgramError"]

#: op codes of ``tt_program`` (``_philox.c``)
OPCODES = {"A": 0, "B": 1, "O": 2, "R": 3, "C": 4, "D": 5, "E": 6, "G": 7, "W": 8}
SLOTS = 2


class ProgramError(ValueError):
    """A tensor of the group does not fit the kernel (raised before anything is written)."""


_PROBLEMS: dict[tuple, str | None] = {}


def signature(view: GroupView, members: int) -> tuple:
    """What the kernel's checks and argument arrays depend on: the tensors, their storages
    and shapes (a step reuses its tensors, so the checks run once per set of tensors)."""
    return (members, *((id(t), t.data_ptr(), t.shape) for t in (
        *view.params, *view.grads, *view.momenta, *view.xis)))


def problem(view: GroupView, members: int, sig: tuple | None = None) -> str | None:
    """Why the kernel cannot take this group (``None``: it can): it takes CPU float32/float64
    tensors of one dtype, contiguous, gradients and momenta shaped like their parameters, the
    ensemble axis (if any) leading. Cached per :func:`signature`."""
    sig = signature(view, members) if sig is None else sig
    if sig in _PROBLEMS:
        return _PROBLEMS[sig]
    if len(_PROBLEMS) > 1024:
        _PROBLEMS.clear()
    hit = _PROBLEMS[sig] = _problem(view, members)
    return hit


def supports(view: GroupView, members: int, sig: tuple | None = None) -> bool:
    """Whether the compiled kernel is available and can take this group."""
    return kernel_available() and problem(view, members, sig) is None


def _problem(view: GroupView, members: int) -> str | None:
    """Why the kernel cannot take ``view`` (``None``: it can)."""
    dtype = view.params[0].dtype
    if dtype not in (torch.float32, torch.float64):
        return f"dtype {dtype} (the kernel takes float32 and float64)"
    momenta = view.momenta or [None] * len(view.params)
    xis = view.xis or [None] * len(view.params)
    for i, (p, g, m, xi, e) in enumerate(zip(view.params, view.grads, momenta, xis,
                                             view.ensemble_dims, strict=True)):
        name = view.names[i] if view.names else f"parameter {i}"
        if e not in (None, 0) and members > 1:
            return f"{name}: ensemble axis {e} (the kernel takes a leading one)"
        for what, t in (("parameter", p), ("gradient", g), ("momentum", m)):
            if t is None:
                continue
            if t.device.type != "cpu" or t.dtype != dtype or not t.is_contiguous():
                return (f"{name}: its {what} is {t.dtype} on {t.device}"
                        f"{'' if t.is_contiguous() else ', not contiguous'}")
            if t.shape != p.shape:
                return (f"{name}: its {what} has shape {tuple(t.shape)}, the parameter "
                        f"{tuple(p.shape)}")
        if xi is not None and (xi.numel() != members or xi.dtype != dtype
                               or not xi.is_contiguous() or xi.device.type != "cpu"):
            return f"{name}: its thermostat has shape {tuple(xi.shape)} ({xi.dtype})"
    return None


def _packed_tensors(view: GroupView, members: int) -> tuple:
    count = len(view.params)
    momenta = view.momenta or [None] * count
    xis = view.xis or [None] * count
    n = [p.numel() // members for p in view.params]
    numel = []
    for p, m, g in zip(view.params, momenta, view.grads, strict=True):
        numel += [p.numel(), m.numel() if m is not None else 0, g.numel()]
    return (count,
            _array(ctypes.c_void_p, (p.data_ptr() for p in view.params)),
            _array(ctypes.c_void_p, (m.data_ptr() if m is not None else None for m in momenta)),
            _array(ctypes.c_void_p, (g.data_ptr() for g in view.grads)),
            _array(ctypes.c_void_p, (x.data_ptr() if x is not None else None for x in xis)),
            _array(ctypes.c_int64, [members] * count),
            _array(ctypes.c_int64, n),
            _array(ctypes.c_int64, n),  # contiguous rows: the stride is the row length
            _array(ctypes.c_int64, numel))


def pack_program(ops: Sequence[tuple], members: int) -> tuple:
    """The op codes, draw indices and the (op, slot, member) coefficient array."""
    codes = _array(ctypes.c_int, (OPCODES[op[0]] for op in ops))
    draws = _array(ctypes.c_int, (op[3] for op in ops))
    coef = []
    for op in ops:
        for v in op[1:3]:
            coef += [float(x) for x in v] if isinstance(v, list) else [float(v)] * members
    return len(ops), codes, draws, _array(ctypes.c_double, coef)


def prepare(view: GroupView, offsets: Sequence[Sequence[int]], members: int,
            sig: tuple | None = None) -> tuple:
    """Check the group's tensors (:class:`ProgramError` naming the parameter) and build the
    kernel's argument arrays for them (reused while the step reuses the same tensors)."""
    why = problem(view, members, signature(view, members) if sig is None else sig)
    if why is not None:
        raise ProgramError(f"the fused kernel cannot take {why}")
    ndraws = len(offsets)
    starts = [offsets[j][i] for j in range(ndraws) for i in range(len(view.params))]
    return (_packed_tensors(view, members), ndraws, _array(ctypes.c_uint64, starts or [0]),
            int(view.params[0].dtype == torch.float64), list(view.names))


_SLOTS: dict[tuple[int, int], tuple] = {}


def _slots(prepared: tuple, packed_ops: tuple, members: int
           ) -> tuple[ctypes.Array, ctypes.Array]:
    """``tt_program_v``'s argument slots for a prepared group and a packed program, the
    per-call ones (keys, draw, skip, screen) left for the caller, and the per-member flags
    the kernel writes; cached (one optimizer's group), the entry keeping both alive, so the
    addresses stay valid."""
    key = (id(prepared), id(packed_ops))
    hit = _SLOTS.get(key)
    if hit is not None and hit[0] is prepared and hit[1] is packed_ops:
        return hit[2], hit[3]
    if len(_SLOTS) > 256:
        _SLOTS.clear()
    packed, ndraws, starts, f64, _ = prepared
    nops, codes, draws, coef = packed_ops
    at = ctypes.addressof
    values = [packed[0], *(at(a) for a in packed[1:9]), nops, at(codes), at(draws), at(coef),
              ndraws, at(starts), 0, 0, 0, 0, 0, 0,
              0, 0, f64]
    slots = (ctypes.c_int64 * 24)(*values)
    rowok = (ctypes.c_int32 * members)()
    _SLOTS[key] = (prepared, packed_ops, slots, rowok)
    return slots, rowok


def run(view: GroupView, ops: Sequence[tuple], packed_ops: tuple,
        offsets: Sequence[Sequence[int]], keys: Keys, draw: int, members: int,
        skip: Tensor | None, screen: tuple | None, cache: dict | None = None,
        sig: tuple | None = None, prepared: tuple | None = None) -> tuple[int, list[bool] | None]:
    """Run the program on the group. Returns ``(status, member ok)``: status 1 if every value
    written is finite (member ok ``None``), 0 if not, 2 if ``screen`` (:func:`screen_args` of
    the tensors to check first, e.g. every group's gradients) found a non-finite entry
    (nothing written). Raises :class:`ProgramError` for a tensor the kernel cannot take."""
    lib = _library()
    if lib is None:
        raise RuntimeError("the fused kernels need the compiled Philox kernel")
    if prepared is None:
        prepared = prepare(view, offsets, members, sig)
    names = prepared[4]
    slots, rowok = _slots(prepared, packed_ops, members)
    skip_arr = None
    if skip is not None:
        skip_arr = (ctypes.c_int32 * members)(*(int(s) for s in skip.tolist()))
    draw = int(draw or 0)
    slots[15] = keys.address(0) or 0
    slots[16] = draw if draw < 1 << 63 else draw - (1 << 64)  # the uint64 bits
    slots[17] = ctypes.addressof(skip_arr) if skip_arr is not None else 0
    if screen is None:
        slots[18] = slots[19] = slots[20] = slots[21] = slots[22] = 0
    else:
        slots[18] = screen[0]
        slots[19], slots[20], slots[21], slots[22] = (ctypes.addressof(a) for a in screen[1:5])
    status = lib.tt_program_v(slots, rowok)
    if status == 1:
        return 1, None
    if status == -1:
        raise MemoryError("the fused step kernel could not allocate its work space")
    if status <= -100:
        raise AssertionError(f"the fused step kernel rejected op {-100 - status} of {ops}")
    if status < 0:
        i = -2 - status
        name = names[i] if names else f"parameter {i}"
        raise ProgramError(f"the fused kernel rejected {name}: its sizes do not fit")
    return status, [bool(x) for x in rowok]


def set_gradients(prepared: tuple, grads: Sequence[Tensor]) -> None:
    """Write the addresses of this step's gradients into ``prepared``'s arguments (the caller
    has checked that each is shaped, typed and laid out like its parameter)."""
    ptrs = prepared[0][3]
    for i, g in enumerate(grads):
        ptrs[i] = g.data_ptr()


def screen_of(prepared: tuple) -> tuple:
    """The screen arguments of a prepared group's gradients: they share its gradient pointer
    array, so :func:`set_gradients` updates both."""
    packed, f64 = prepared[0], prepared[3]
    count, gptrs, rows, n = packed[0], packed[3], packed[5], packed[6]
    gnumel = _array(ctypes.c_int64, (packed[8][3 * i + 2] for i in range(count)))
    return (count, gptrs, rows, n, gnumel, f64)


def combined_screen(prepared: Sequence[tuple]) -> tuple | None:
    """The screen arguments over the gradients of several prepared groups (``None`` if their
    dtypes differ: the caller screens in torch); fill in the addresses with
    :func:`refresh_combined_screen`."""
    if len({p[3] for p in prepared}) != 1:
        return None
    parts = [screen_of(p) for p in prepared]
    count = sum(s[0] for s in parts)
    rows = [r for s in parts for r in s[2][: s[0]]]
    n = [x for s in parts for x in s[3][: s[0]]]
    numel = [x for s in parts for x in s[4][: s[0]]]
    return (count, (ctypes.c_void_p * max(count, 1))(), _array(ctypes.c_int64, rows),
            _array(ctypes.c_int64, n), _array(ctypes.c_int64, numel), parts[0][5])


def refresh_combined_screen(screen: tuple | None, prepared: Sequence[tuple]) -> None:
    if screen is None:
        return
    dst, at = ctypes.addressof(screen[1]), 0
    size = ctypes.sizeof(ctypes.c_void_p)
    for p in prepared:
        count = p[0][0]
        ctypes.memmove(dst + at * size, p[0][3], count * size)
        at += count


_SCREENS: dict[tuple, tuple | None] = {}


def screen_args(tensors: Sequence[Tensor], members: int) -> tuple | None:
    """The kernel's arguments for a finiteness screen of ``tensors`` (contiguous CPU
    float32/float64 of one dtype, members on a leading axis), cached; ``None`` where the
    kernel cannot take them (the caller screens in torch)."""
    if _library() is None or not tensors:
        return None
    key = (members, *((id(t), t.data_ptr(), t.shape) for t in tensors))
    args = _SCREENS.get(key, False)
    if args is False:
        if len(_SCREENS) > 256:
            _SCREENS.clear()
        args = _SCREENS[key] = _screen_args(tensors, members)
    return args


def finite_members(tensors: Sequence[Tensor], members: int) -> list[bool] | None:
    """Per member, whether every entry of ``tensors`` is finite, in one parallel pass of the
    kernel; ``None`` where the kernel cannot take them."""
    args = screen_args(tensors, members)
    if args is None:
        return None
    rowok = (ctypes.c_int32 * members)()
    status = _library().tt_finite_rows(args[0], args[1], args[2], args[3], args[3], args[4],
                                       members, rowok, args[5])
    if status < 0:
        raise ValueError("the finiteness screen rejected a tensor")
    return [bool(x) for x in rowok] if status == 0 else [True] * members


def _screen_args(tensors: Sequence[Tensor], members: int) -> tuple | None:
    dtype = tensors[0].dtype
    if dtype not in (torch.float32, torch.float64) or any(
            t.device.type != "cpu" or t.dtype != dtype or not t.is_contiguous()
            or t.numel() % members for t in tensors):
        return None
    n = [t.numel() // members for t in tensors]
    # (count, pointers, rows, row lengths (= strides), sizes, float64)
    return (len(tensors), _array(ctypes.c_void_p, (t.data_ptr() for t in tensors)),
            _array(ctypes.c_int64, [members] * len(tensors)), _array(ctypes.c_int64, n),
            _array(ctypes.c_int64, (t.numel() for t in tensors)), int(dtype == torch.float64))
