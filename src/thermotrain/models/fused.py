r"""The training gradient of an :class:`~thermotrain.models.MLP` ensemble in one C call.

For the paper's studies — many seeds of tiny networks — autograd's per-operation cost
dominates a step: the ten-odd batched ops of a 2-100-1 ensemble forward and backward cost
~0.8 ms for K = 100 while the arithmetic is ~2M multiply-adds. :func:`loss_and_grad` computes
the same thing as ::

    loss = ensemble_loss(model(x[idx]), y[idx])      # (K,) member means
    model.zero_grad(); loss.sum().backward()

member by member in cache (``_mlp.c``, compiled at first use like the Philox kernel, see
:mod:`thermotrain._native`), on torch's OpenMP threads. Results agree with autograd to
rounding (sums are taken in another order) and never depend on the thread count or on K.
:func:`supports` says when it applies: small CPU float32/float64 MLPs (ReLU or tanh, binary
or softmax head, at most 16 layers and :data:`MAX_WEIGHTS` weights per member — larger layers
are better served by torch's GEMMs), with the C compiler available.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from .. import _native
from .losses import ensemble_loss
from .mlp import MLP

__all__ = ["supports", "loss_and_grad", "gradient_fn", "autograd_loss_and_grad"]

_SOURCE = Path(__file__).with_name("_mlp.c")
_LIB: ctypes.CDLL | None | bool = False
_ACT = {"relu": 0, "tanh": 1}
#: networks with more weights per member than this keep autograd (its GEMMs win there)
MAX_WEIGHTS = 20_000


def _declare(lib: ctypes.CDLL) -> None:
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    for name in ("tt_mlp_grad_f32", "tt_mlp_grad_f64"):
        fn = getattr(lib, name)
        fn.argtypes = [i64, i64, ptr, ptr, ptr, ptr, ptr, ptr, ptr, i64, ptr, i64, ctypes.c_int,
                       ptr]
        fn.restype = ctypes.c_int


def _library() -> ctypes.CDLL | None:
    global _LIB
    if _LIB is False:
        _LIB = _native.load(_SOURCE, "the fused MLP gradient", _declare)
    return _LIB  # type: ignore[return-value]


def supports(model: torch.nn.Module, x: Tensor, y: Tensor) -> bool:
    """Whether :func:`loss_and_grad` can train ``model`` on data ``x`` ``(N, d_in)`` with
    targets ``y`` ``(N,)``."""
    if not isinstance(model, MLP) or model.activation not in _ACT or model.batchnorm:
        return False
    params = list(model.parameters())
    dtype = params[0].dtype
    if dtype not in (torch.float32, torch.float64) or len(model.layers) > 16:
        return False
    widths = model.widths
    if sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True)) > MAX_WEIGHTS:
        return False
    if not all(p.device.type == "cpu" and p.dtype == dtype and p.is_contiguous()
               for p in params):
        return False
    if x.dim() != 2 or x.shape[1] != model.widths[0] or x.device.type != "cpu":
        return False
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        return False
    return _library() is not None


def _key(model: MLP, x: Tensor, y: Tensor) -> tuple:
    # what a prepared call depends on: the storages of the parameters, their gradients and
    # the data (and the data's versions: an in-place change of x or y invalidates the copies)
    layers = model.layers
    return (tuple(model.widths), model.activation,
            *(t.data_ptr() for m in layers for t in (m.weight, m.bias)),
            *(t.grad.data_ptr() if t.grad is not None else 0
              for m in layers for t in (m.weight, m.bias)),
            x.data_ptr(), y.data_ptr(), x.shape, x._version, y._version)


class _Prepared:
    """The data in the model's dtype and the ctypes arrays of one model, reused each step."""

    def __init__(self, model: MLP, x: Tensor, y: Tensor):
        params = [(layer.weight, layer.bias) for layer in model.layers]
        self.dtype = params[0][0].dtype
        self.members = model.ensemble_size or 1
        self.x = x.to(self.dtype).contiguous()
        self.y = y.to(self.dtype).contiguous()
        self.n = x.shape[0]
        classes = model.widths[-1]
        if classes >= 2 and not bool(((y >= 0) & (y < classes)).all()):
            raise ValueError(f"targets must be class indices in [0, {classes}) for a "
                             f"{classes}-class head, got values in "
                             f"[{y.min().item()}, {y.max().item()}]")
        for w, b in params:
            for p in (w, b):
                if p.grad is None or p.grad.shape != p.shape or not p.grad.is_contiguous():
                    p.grad = torch.zeros_like(p)
        grads = [(w.grad, b.grad) for w, b in params]
        n = len(params)
        self.widths = (ctypes.c_int64 * (n + 1))(*model.widths)
        self.ptrs = [(ctypes.c_void_p * n)(*[t.data_ptr() for t in ts]) for ts in
                     ([w for w, _ in params], [b for _, b in params],
                      [g for g, _ in grads], [g for _, g in grads])]
        self.key = _key(model, x, y)


_PREPARED: dict[int, _Prepared] = {}


def _prepare(model: MLP, x: Tensor, y: Tensor) -> _Prepared:
    prep = _PREPARED.get(id(model))
    if prep is None or prep.key != _key(model, x, y):
        if not supports(model, x, y):
            raise ValueError("loss_and_grad needs a small CPU float32/float64 MLP with ReLU or "
                             "tanh, data (N, d_in) and targets (N,), and the compiled kernel; "
                             "check supports() first")
        if len(_PREPARED) > 64:
            _PREPARED.clear()
        prep = _PREPARED[id(model)] = _Prepared(model, x, y)
    return prep


def loss_and_grad(model: MLP, x: Tensor, y: Tensor, idx: Tensor) -> Tensor:
    """Member k's mean loss on the rows ``idx[k]`` of ``(x, y)`` and its gradient, written
    into the parameters' ``.grad`` (overwriting them, as after ``zero_grad()``).

    Args:
        model: an :class:`MLP` (plain, or an ensemble of K).
        x, y: the data ``(N, d_in)`` and targets ``(N,)`` (0/1 for a binary head, class
            indices for a softmax head).
        idx: int64 ``(K, B)`` row indices (``(B,)`` for a plain model).

    Returns:
        The ``(K,)`` member losses (``()`` for a plain model), without autograd history.
    """
    prep = _prepare(model, x, y)
    k = prep.members
    plain = model.ensemble_size is None
    rows = idx.reshape(1, -1) if plain and idx.dim() == 1 else idx
    if rows.dim() != 2 or rows.shape[0] != k or rows.dtype != torch.int64:
        raise ValueError(f"idx must be int64 of shape (K={k}, B), got {idx.dtype} "
                         f"{tuple(idx.shape)}")
    rows = rows.contiguous()
    loss = torch.empty(k, dtype=prep.dtype)
    lib = _library()
    fn = lib.tt_mlp_grad_f32 if prep.dtype == torch.float32 else lib.tt_mlp_grad_f64
    status = fn(k, len(model.layers), prep.widths, *prep.ptrs, prep.x.data_ptr(),
                prep.y.data_ptr(), prep.n, rows.data_ptr(), rows.shape[1],
                _ACT[model.activation], loss.data_ptr())
    if status == -3:
        raise ValueError(f"idx must index the {prep.n} rows of x, got values in "
                         f"[{int(rows.min())}, {int(rows.max())}]")
    if status != 0:
        raise MemoryError("the fused MLP gradient could not allocate its work space")
    return loss[0] if plain else loss


def autograd_loss_and_grad(model: torch.nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """The per-member losses ``ensemble_loss(model(x), y)`` ``(K,)`` of an explicit batch
    ``x`` ``(K, B, ...)``, ``y`` ``(K, B)``, with the gradient of their sum left in the
    parameters' ``.grad`` (previous gradients discarded). Member k's gradient is that of its
    own mean loss :math:`\\nabla L_k` (the members do not interact). Returned without
    autograd history."""
    model.zero_grad(set_to_none=True)
    losses = ensemble_loss(model(x), y)
    losses.sum().backward()
    return losses.detach()


def gradient_fn(model: torch.nn.Module, x: Tensor, y: Tensor) -> Callable[[Tensor], Tensor]:
    """The training gradient of an ensemble as a function of the batch indices ``idx``
    ``(K, B)``: it returns the per-member losses ``ensemble_loss(model(x[idx]), y[idx])``
    ``(K,)`` (detached) and leaves the gradient of their sum in the parameters' ``.grad`` —
    through :func:`loss_and_grad` when :func:`supports` says so (decided once, here), else
    through autograd (:func:`autograd_loss_and_grad`). Both paths return the same losses to
    rounding; Metropolis moves and the divergence check of the training loop use them."""
    if supports(model, x, y):
        return lambda idx: loss_and_grad(model, x, y, idx)  # looked up at call time

    def autograd(idx: Tensor) -> Tensor:
        return autograd_loss_and_grad(model, x[idx], y[idx])

    return autograd
