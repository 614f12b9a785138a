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

The same kernel takes the gradient at a shifted point θ + αv without writing θ
(``loss_and_grad(shift=...)``), and a whole finite-difference Hutchinson record of the
configurational temperature (:func:`fd_laplacian_sums`: the shifted gradients stay in its
work space, per-member, per-group sums come back), so a monitor recording every 10 steps
costs about one extra gradient (``docs/thermo.md``, Cost).

Forward only, for the landscape tools: :func:`evaluate_line` gives the loss and accuracy of
M such networks at every point of the lines between two parameter sets in one C call
(:func:`supports_evaluation` says when; ``docs/landscape.md``, Speed).
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

__all__ = ["supports", "loss_and_grad", "fd_laplacian_sums", "FDRecorder", "gradient_fn",
           "autograd_loss_and_grad",
           "supports_evaluation", "evaluate_line", "evaluate_members"]

_SOURCE = Path(__file__).with_name("_mlp.c")
_LIB: ctypes.CDLL | None | bool = False
_ACT = {"relu": 0, "tanh": 1}
#: networks with more weights per member than this keep autograd (its GEMMs win there)
MAX_WEIGHTS = 20_000


def _declare(lib: ctypes.CDLL) -> None:
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    for name in ("tt_mlp_grad_f32", "tt_mlp_grad_f64"):
        fn = getattr(lib, name)
        fn.argtypes = [i64, i64, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ctypes.c_double, ptr, ptr,
                       i64, ptr, i64, ctypes.c_int, ptr,
                       ptr, i64, ptr, ctypes.c_double, ctypes.c_int, ptr, i64, ptr]
        fn.restype = ctypes.c_int
    for name in ("tt_mlp_line_f32", "tt_mlp_line_f64"):
        fn = getattr(lib, name)
        fn.argtypes = [i64, i64, ptr, ptr, ptr, ptr, ptr, ptr, i64, ptr, ptr, ptr, i64,
                       ctypes.c_int, ptr, ptr, ptr, ptr]
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
    # (the registered tensors themselves: a layer's weight and bias can only be replaced by
    # other Parameters, and `_parameters` is where they are)
    ts = [t for m in model._modules["layers"]
          for t in (m._parameters["weight"], m._parameters["bias"])]
    grads = [t.grad for t in ts]
    return (tuple(model.widths), model.activation, *[t.data_ptr() for t in ts],
            *[0 if g is None else g.data_ptr() for g in grads],
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
        self.params = [t for wb in params for t in wb]  # W1, b1, W2, ... (pointer order)
        self.widths = (ctypes.c_int64 * (n + 1))(*model.widths)
        self.ptrs = [(ctypes.c_void_p * n)(*[t.data_ptr() for t in ts]) for ts in
                     ([w for w, _ in params], [b for _, b in params],
                      [g for g, _ in grads], [g for _, g in grads])]
        self.key = _key(model, x, y)
        self._cached: dict[tuple, tuple] = {}  # pointers() by the tensors given

    def pointers(self, shift: dict) -> list:
        """The pointer arrays of a call with directions ``shift[p]`` (none for parameters
        not given). Cached with references to the tensors (their ids stay theirs) and their
        addresses checked at every call; each direction is validated once: a contiguous
        tensor of its parameter's shape, dtype and device."""
        key = tuple((id(p), id(v)) for p, v in shift.items())
        hit = self._cached.get(key)
        if hit is not None:
            refs, addresses, arrays = hit
            if tuple(t.data_ptr() for t in refs) == addresses:
                return arrays
        ts = [shift.get(t, None) for t in self.params]
        if len(shift) != sum(v is not None for v in ts):
            raise ValueError("shift has directions for tensors that are not the model's "
                             "parameters")
        for t, v in zip(self.params, ts, strict=True):
            if v is not None and (not isinstance(v, Tensor) or v.shape != t.shape
                                  or v.dtype != t.dtype or v.device != t.device
                                  or not v.is_contiguous()):
                got = f"{v.dtype} {tuple(v.shape)}" if isinstance(v, Tensor) else type(v).__name__
                raise ValueError(f"shift: the direction of a parameter of shape "
                                 f"{tuple(t.shape)} ({t.dtype}) must be a contiguous tensor "
                                 f"of that shape and dtype, got {got}")
        n = len(self.params) // 2
        arrays = [*self.ptrs, *((ctypes.c_void_p * n)(*[None if v is None else v.data_ptr()
                                                         for v in ts[i::2]]) for i in (0, 1))]
        refs = [v for v in ts if v is not None]
        if len(self._cached) > 256:
            self._cached.clear()
        self._cached[key] = (refs, tuple(t.data_ptr() for t in refs), arrays)
        return arrays


_PREPARED: dict[int, _Prepared] = {}
#: the kernel's record arguments when it computes a plain gradient (fd_laplacian_sums)
_NO_RECORD = (None, 0, None, 0.0, 0, None, 0, None)


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


def _rows(model: MLP, prep: _Prepared, idx: Tensor) -> Tensor:
    """``idx`` as the kernel's contiguous int64 ``(K, B)`` rows (``(B,)`` for a plain
    model), or a ValueError."""
    k = prep.members
    rows = idx.reshape(1, -1) if model.ensemble_size is None and idx.dim() == 1 else idx
    if rows.dim() != 2 or rows.shape[0] != k or rows.dtype != torch.int64:
        raise ValueError(f"idx must be int64 of shape (K={k}, B), got {idx.dtype} "
                         f"{tuple(idx.shape)}")
    return rows.contiguous()


def _check_status(status: int, prep: _Prepared, rows: Tensor, what: str) -> None:
    """The kernel's status as the error it stands for (-3: rows outside the data)."""
    if status == -3:
        raise ValueError(f"idx must index the {prep.n} rows of x, got values in "
                         f"[{int(rows.min())}, {int(rows.max())}]")
    if status != 0:
        raise MemoryError(f"{what} could not allocate its work space")


def loss_and_grad(model: MLP, x: Tensor, y: Tensor, idx: Tensor, *,
                  shift: tuple[dict[Tensor, Tensor], float] | None = None) -> Tensor:
    """Member k's mean loss on the rows ``idx[k]`` of ``(x, y)`` and its gradient, written
    into the parameters' ``.grad`` (overwriting them, as after ``zero_grad()``).

    Args:
        model: an :class:`MLP` (plain, or an ensemble of K).
        x, y: the data ``(N, d_in)`` and targets ``(N,)`` (0/1 for a binary head, class
            indices for a softmax head).
        idx: int64 ``(K, B)`` row indices (``(B,)`` for a plain model).
        shift: ``({parameter: v}, alpha)``: take the loss and gradient at θ + alpha·v
            instead (v = 0 for parameters not given), θ itself unchanged — e.g. a finite
            difference without perturbing and restoring θ. The shifted parameters are made
            in the kernel's work space as ``θ + alpha·v`` per entry (rounded once in the
            model's dtype, or fused into one multiply-add: not necessarily the bits of
            torch's ``θ.add(v, alpha=alpha)``). Each direction must be contiguous, of
            its parameter's shape and dtype (a ValueError otherwise: the kernel reads it by
            address); the checks are made once per set of tensors (held by a cache, their
            addresses checked at each call).

    Returns:
        The ``(K,)`` member losses (``()`` for a plain model), without autograd history.
    """
    prep = _prepare(model, x, y)
    k = prep.members
    rows = _rows(model, prep, idx)
    loss = torch.empty(k, dtype=prep.dtype)
    lib = _library()
    fn = lib.tt_mlp_grad_f32 if prep.dtype == torch.float32 else lib.tt_mlp_grad_f64
    if shift is None:
        ptrs, alpha = [*prep.ptrs, None, None], 0.0
    else:
        if not (isinstance(shift, tuple) and len(shift) == 2 and isinstance(shift[0], dict)
                and isinstance(shift[1], (int, float)) and not isinstance(shift[1], bool)):
            raise TypeError("loss_and_grad: shift must be a tuple ({parameter: direction}, "
                            f"alpha), got {type(shift).__name__}")
        ptrs, alpha = prep.pointers(shift[0]), shift[1]
    status = fn(k, len(model.layers), prep.widths, *ptrs, float(alpha), prep.x.data_ptr(),
                prep.y.data_ptr(), prep.n, rows.data_ptr(), rows.shape[1],
                _ACT[model.activation], loss.data_ptr(), *_NO_RECORD)
    _check_status(status, prep, rows, "the fused MLP gradient")
    return loss[0] if model.ensemble_size is None else loss


def fd_laplacian_sums(model: MLP, x: Tensor, y: Tensor, idx: Tensor, probe_bytes: Tensor,
                      row: int, columns: dict[Tensor, int], groups: dict[Tensor, int],
                      scale: float, alpha: float, out: Tensor, *, central: bool = False
                      ) -> Tensor:
    r"""A finite-difference Hutchinson record in one C call (the configurational
    temperature's, :mod:`thermotrain.thermo.monitors`): per member k and group g, with
    :math:`g_0` the gradient in the parameters' ``.grad`` (the loop's, at θ) and u the probe,

    * ``out[0, k, g]`` = :math:`\sum_{i\in g} g_{0,i}^2`;
    * ``out[1, k, g]`` = :math:`\sum_{i\in g} u_i\,[\nabla L_k(\theta + \alpha u) -
      g_0]_i` (forward) or :math:`\sum_{i\in g} u_i\,[\nabla L_k(\theta + \alpha u) -
      \nabla L_k(\theta - \alpha u)]_i` (``central``),

    on the rows ``idx`` (as :func:`loss_and_grad`), summed in double; θ and ``.grad`` are not
    changed, the shifted gradients never leave the kernel's work space.

    The probe is given as random bytes (:class:`thermotrain.thermo.probes.RecordLayout`'s):
    entry f of the member-major probe rows (member k's row has ``row`` entries, parameter p's
    at ``columns[p]`` on) is ``-scale`` if bit f mod 8 of ``probe_bytes[f // 8]`` is set,
    else ``scale``.

    Args:
        probe_bytes: int64 values in [0, 256), contiguous, at least K·row/8 of them.
        columns, groups: ``{parameter: first column}`` and ``{parameter: g}`` (g in
            ``[0, G)``) for the same parameters; the others are in no group, not shifted.
        out: ``(2, K, G)`` contiguous, the model's dtype (K = 1 for a plain model).
    """
    return FDRecorder(model, x, y, row, columns, groups, scale, alpha,
                      central=central)(idx, probe_bytes, out)


class FDRecorder:
    """:func:`fd_laplacian_sums` bound to a model, its data and one probe layout (``row``,
    ``columns``, ``groups``, ``scale``, ``alpha``, ``central``, checked once): a call
    ``recorder(idx, probe_bytes, out)`` checks only what each call must — the model's
    prepared state (its parameters' and gradients' addresses, as :func:`loss_and_grad`), the
    rows, and the probe bytes and output (validated once per tensor object, held here, their
    addresses checked at each call) — and makes the C call. For a monitor recording
    thousands of times: the Python around the C call is most of its cost on small nets."""

    def __init__(self, model: MLP, x: Tensor, y: Tensor, row: int, columns: dict[Tensor, int],
                 groups: dict[Tensor, int], scale: float, alpha: float, *,
                 central: bool = False):
        if not isinstance(groups, dict) or not isinstance(columns, dict):
            raise TypeError("fd_laplacian_sums: columns and groups must be dicts keyed by the "
                            "model's parameters")
        if isinstance(row, bool) or not isinstance(row, int) or row < 1:
            raise ValueError(f"fd_laplacian_sums: row must be an int >= 1, got {row!r}")
        self.model, self.x, self.y, self.row = model, x, y, row
        self.columns, self.groups = dict(columns), dict(groups)
        self.scale, self.alpha, self.central = float(scale), float(alpha), int(bool(central))
        self._seen: dict[int, tuple[Tensor, int]] = {}
        self._prep: _Prepared | None = None
        self._bind(_prepare(model, x, y))

    def _bind(self, prep: _Prepared) -> None:
        """The group and column arrays in the kernel's tensor order, and the call's fixed
        arguments, for this prepared state of the model."""
        k, row, groups, columns = prep.members, self.row, self.groups, self.columns
        if not groups or not all(isinstance(g, int) and not isinstance(g, bool) and 0 <= g < 32
                                 for g in groups.values()):
            raise ValueError("fd_laplacian_sums: groups must map parameters to ints in "
                             f"[0, 32), got {sorted(set(groups.values()), key=str)}")
        if len(columns) != len(groups) or any(p not in groups for p in columns):
            raise ValueError("fd_laplacian_sums: columns must be given for exactly the "
                             "grouped parameters")
        own = {id(t) for t in prep.params}
        for p, c in columns.items():
            if id(p) not in own:
                raise ValueError("fd_laplacian_sums: groups has entries for tensors that are "
                                 "not the model's parameters")
            if isinstance(c, bool) or not isinstance(c, int) or c < 0 \
                    or c + p.numel() // k > row:
                raise ValueError(f"fd_laplacian_sums: the column of a parameter of shape "
                                 f"{tuple(p.shape)} must be an int in [0, row - "
                                 f"{p.numel() // k}] (row={row}), got {c!r}")
        gid = {id(p): g for p, g in groups.items()}
        cid = {id(p): c for p, c in columns.items()}
        n = len(prep.params)
        group = (ctypes.c_int64 * n)(*[gid.get(id(t), -1) for t in prep.params])
        column = (ctypes.c_int64 * n)(*[cid.get(id(t), -1) for t in prep.params])
        self.g_count = max(groups.values()) + 1
        lib = _library()
        self._fn = lib.tt_mlp_grad_f32 if prep.dtype == torch.float32 else lib.tt_mlp_grad_f64
        self._head = (k, len(self.model.layers), prep.widths, *prep.ptrs, None, None,
                      self.alpha, prep.x.data_ptr(), prep.y.data_ptr(), prep.n)
        self._mid = (row, column, self.scale, self.central, group, self.g_count)
        self._act = _ACT[self.model.activation]
        self._seen.clear()
        self._prep = prep

    def _address(self, t: Tensor, what: str) -> int:
        hit = self._seen.get(id(t))
        if hit is not None and hit[0] is t and hit[1] == t.data_ptr():
            return hit[1]
        prep, k = self._prep, self._prep.members
        if what == "probe_bytes":
            if (not isinstance(t, Tensor) or t.dtype != torch.int64 or t.device.type != "cpu"
                    or not t.is_contiguous() or t.dim() != 1
                    or t.numel() * 8 < k * self.row):
                got = f"{t.dtype} {tuple(t.shape)}" if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(f"fd_laplacian_sums: probe_bytes must be a contiguous CPU "
                                 f"int64 vector of at least {(k * self.row + 7) // 8} bytes, "
                                 f"got {got}")
        elif (not isinstance(t, Tensor) or t.shape != (2, k, self.g_count)
              or t.dtype != prep.dtype or t.device.type != "cpu" or not t.is_contiguous()):
            got = f"{t.dtype} {tuple(t.shape)}" if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"fd_laplacian_sums: out must be a contiguous {prep.dtype} tensor "
                             f"of shape (2, {k}, {self.g_count}), got {got}")
        if len(self._seen) > 256:
            self._seen.clear()
        self._seen[id(t)] = (t, t.data_ptr())
        return t.data_ptr()

    def __call__(self, idx: Tensor, probe_bytes: Tensor, out: Tensor) -> Tensor:
        prep = _prepare(self.model, self.x, self.y)
        if prep is not self._prep:
            self._bind(prep)
        rows = _rows(self.model, prep, idx)
        status = self._fn(*self._head, rows.data_ptr(), rows.shape[1], self._act, None,
                          self._address(probe_bytes, "probe_bytes"), *self._mid,
                          self._address(out, "out"))
        _check_status(status, prep, rows, "the fused MLP Laplacian record")
        return out


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


# --- forward only: loss and accuracy along lines through weight space -----------------------

#: the first layer is computed once per block of rows for all α (the line kernel's trick),
#: so it may be larger than the rest; the layers after it keep :data:`MAX_WEIGHTS`
MAX_FIRST_LAYER = 1 << 20


def supports_evaluation(model: torch.nn.Module, x: Tensor, y: Tensor, *,
                        batchnorm: bool = False) -> bool:
    """Whether :func:`evaluate_line` evaluates networks of ``model``'s architecture on
    ``(x, y)`` exactly as ``ensemble_loss`` / ``ensemble_accuracy`` of torch's logits would:
    a CPU float32/float64 :class:`MLP` without batch norm, ReLU or tanh, at most 16 layers,
    a first layer of at most :data:`MAX_FIRST_LAYER` and later layers of at most
    :data:`MAX_WEIGHTS` weights per member; ``x`` ``(N, d_in)`` on the CPU in the parameters'
    dtype (a mixed-dtype forward is torch's error, and stays one); ``y`` ``(N,)``, integer
    class indices in range for a softmax head (anything else keeps torch's own error); the
    compiled kernel. A batch-norm model only with ``batchnorm=True``: the caller passes its
    per-α scale and shift (:func:`evaluate_line`'s ``batchnorm``)."""
    if not isinstance(model, MLP) or model.activation not in _ACT:
        return False
    if model.batchnorm and not batchnorm:
        return False
    if type(model).forward is not MLP.forward:  # a subclass computing something else
        return False
    params = list(model.parameters())
    dtype = params[0].dtype
    widths = model.widths
    sizes = [a * b for a, b in zip(widths[:-1], widths[1:], strict=True)]
    if (dtype not in (torch.float32, torch.float64) or len(sizes) > 16
            or sizes[0] > MAX_FIRST_LAYER or sum(sizes[1:]) > MAX_WEIGHTS):
        return False
    if not all(p.device.type == "cpu" and p.dtype == dtype for p in params):
        return False
    if (x.dim() != 2 or x.shape[1] != widths[0] or x.device.type != "cpu" or x.dtype != dtype
            or y.dim() != 1 or y.shape[0] != x.shape[0] or y.device.type != "cpu"
            or y.dtype.is_complex):
        return False
    if widths[-1] >= 2:
        if y.dtype.is_floating_point or y.dtype == torch.bool:
            return False
        if not bool(((y >= 0) & (y < widths[-1])).all()):
            return False
    return _library() is not None


def _check_layers(what: str, weights: list[Tensor], biases: list[Tensor], x: Tensor
                  ) -> tuple[int, list[int], torch.dtype]:
    if not weights or len(weights) != len(biases) or len(weights) > 16:
        raise ValueError(f"{what}: weights and biases must be two lists of 1 to 16 layers of "
                         f"the same length, got {len(weights)} and {len(biases)}")
    m, dtype = weights[0].shape[0], weights[0].dtype
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{what}: weights must be float32 or float64, got {dtype}")
    widths: list[int] = []
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        if w.dim() != 3 or w.shape[0] != m or b.shape != (m, w.shape[1]):
            raise ValueError(f"{what} layer {i}: weight must be (M, out, in) and bias (M, out) "
                             f"with M = {m}, got {tuple(w.shape)} and {tuple(b.shape)}")
        if widths and w.shape[2] != widths[-1]:
            raise ValueError(f"{what} layer {i}: weight takes {w.shape[2]} inputs, the previous "
                             f"layer gives {widths[-1]}")
        for t in (w, b):
            if t.dtype != dtype or t.device.type != "cpu" or not t.is_contiguous():
                raise ValueError(f"{what} layer {i}: weights and biases must be contiguous CPU "
                                 f"{dtype} tensors, got {t.dtype} on {t.device}, contiguous "
                                 f"{t.is_contiguous()}")
        widths += [w.shape[2], w.shape[1]] if not widths else [w.shape[1]]
    if x.dim() != 2 or x.shape[1] != widths[0] or x.dtype != dtype or x.device.type != "cpu":
        raise ValueError(f"x must be a CPU {dtype} tensor (N, {widths[0]}), got {x.dtype} "
                         f"{tuple(x.shape)} on {x.device}")
    return m, widths, dtype


@torch.no_grad()
def evaluate_line(start: tuple[list[Tensor], list[Tensor]],
                  end: tuple[list[Tensor], list[Tensor]], alphas: Tensor, activation: str,
                  x: Tensor, y: Tensor, batchnorm: tuple[Tensor, Tensor] | None = None
                  ) -> tuple[Tensor, Tensor]:
    r"""Mean loss and accuracy over all of ``(x, y)`` of M MLPs at every point of the lines
    :math:`\theta_m(\alpha) = (1-\alpha)\,\theta_{0,m} + \alpha\,\theta_{1,m}`.

    Member m at α is :class:`MLP`'s forward
    :math:`z = W_L \phi(\cdots \phi(W_1 x + b_1) \cdots) + b_L` with the interpolated
    parameters (``torch.lerp``'s formula), and the result is what ``ensemble_loss(z, y)`` and
    ``ensemble_accuracy(z, y)`` give (binary cross-entropy and ``z > 0`` for one output,
    softmax cross-entropy and the argmax for C ≥ 2; docs/science.md §6), in one C call
    (``tt_mlp_line`` in ``_mlp.c``): rows in blocks that stay in cache, loss sums in double.
    The first layer is affine in its parameters, so its pre-activations along the line are
    :math:`z_1(\alpha) = z_1(\theta_0) + \alpha\,(z_1(\theta_1) - z_1(\theta_0))`, computed
    once per block for all α (docs/landscape.md, Speed). Equal to the torch path to rounding.

    Args:
        start, end: ``(weights, biases)`` at :math:`\theta_0` and :math:`\theta_1`: per layer
            ``(M, out, in)`` and ``(M, out)``, contiguous CPU float32/float64 (one dtype).
        alphas: ``(A,)`` the α values (any real numbers).
        activation: ``"relu"`` or ``"tanh"``.
        x: ``(N, in)`` in the weights' dtype; y: ``(N,)`` (0/1 or soft targets for one
            output, class indices for C ≥ 2).
        batchnorm: ``(scale, shift)``, each ``(A, M, H)`` with H the hidden units of all
            layers: batch norm in eval mode after each hidden affine map, before
            :math:`\phi`, as :class:`MLP` places it —
            :math:`\gamma (z - \mu) / \sqrt{\sigma^2 + \epsilon} + \beta` =
            ``z * scale + shift`` at each α (``None``: no batch norm).

    Returns:
        ``(loss, accuracy)``, float64 ``(A, M)`` each.

    Raises:
        ValueError/TypeError on shapes, dtypes, devices or class indices outside ``[0, C)``;
        RuntimeError if the kernel is unavailable (check :func:`supports_evaluation`).

    .. note:: The kernel is compiled with ``-ffast-math``: parameters and inputs must be
       finite (NaN/inf are not propagated as torch does; ``landscape.interpolate`` checks
       and takes the torch path otherwise).
    """
    if activation not in _ACT:
        raise ValueError(f"activation must be one of {tuple(_ACT)}, got {activation!r}")
    m, widths, dtype = _check_layers("start", *start, x)
    if _check_layers("end", *end, x)[:2] != (m, widths) or end[0][0].dtype != dtype:
        raise ValueError("start and end must have the same layers (shapes and dtype)")
    if (not isinstance(alphas, Tensor) or alphas.dim() != 1 or alphas.numel() < 1
            or not bool(torch.isfinite(alphas).all())):
        raise ValueError(f"alphas must be a 1-D tensor of at least one finite value, got "
                         f"{alphas!r}")
    if x.shape[0] == 0 or y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"x must have at least one row and y the shape ({x.shape[0]},), got "
                         f"{tuple(y.shape)}")
    n, a = x.shape[0], alphas.numel()
    bn = (None, None)
    if batchnorm is not None:
        shape = (a, m, sum(widths[1:-1]))
        if not all(isinstance(t, Tensor) and t.shape == shape and t.dtype == dtype
                   and t.device.type == "cpu" for t in batchnorm):
            raise ValueError(f"batchnorm must be (scale, shift), CPU {dtype} tensors of shape "
                             f"(A, M, hidden units) = {shape}")
        bn = tuple(t.contiguous() for t in batchnorm)
    lib = _library()
    if lib is None:
        raise RuntimeError("the fused MLP kernel is not available (no C compiler, or "
                           "THERMOTRAIN_NO_KERNEL set); use the torch path")
    if widths[-1] == 1:
        truth = y > 0.5 if y.dtype.is_floating_point else y != 0  # models.losses._correct
        label = truth.to(torch.int64).contiguous()
        target = y.to(dtype).contiguous()
    else:
        if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
            raise TypeError(f"multi-class targets must be integer class indices, got dtype "
                            f"{y.dtype}")
        label = y.to(torch.int64).contiguous()
        target = label  # not read by the softmax head
    x = x.contiguous()
    al = alphas.detach().to("cpu", dtype).contiguous()
    loss = torch.empty(a * m, dtype=torch.float64)
    correct = torch.empty(a * m, dtype=torch.int64)
    nl = len(widths) - 1

    def ptrs(ts: list[Tensor]) -> ctypes.Array:
        return (ctypes.c_void_p * nl)(*[t.data_ptr() for t in ts])

    fn = lib.tt_mlp_line_f32 if dtype == torch.float32 else lib.tt_mlp_line_f64
    status = fn(m, nl, (ctypes.c_int64 * (nl + 1))(*widths), ptrs(start[0]), ptrs(start[1]),
                ptrs(end[0]), ptrs(end[1]), al.data_ptr(), a, x.data_ptr(), target.data_ptr(),
                label.data_ptr(), n, _ACT[activation],
                *(None if t is None else t.data_ptr() for t in bn),
                loss.data_ptr(), correct.data_ptr())
    if status == -3:
        raise ValueError(f"targets must be class indices in [0, {widths[-1]}), got values in "
                         f"[{int(label.min())}, {int(label.max())}]")
    if status != 0:
        raise MemoryError("the fused MLP evaluation could not allocate its work space")
    return (loss / n).reshape(a, m), (correct.to(torch.float64) / n).reshape(a, m)


def evaluate_members(weights: list[Tensor], biases: list[Tensor], activation: str, x: Tensor,
                     y: Tensor) -> tuple[Tensor, Tensor]:
    """Mean loss and accuracy ``(M,)`` (float64) of M MLPs given by their parameters
    (per layer ``(M, out, in)`` and ``(M, out)``): :func:`evaluate_line` at α = 0 (where
    the first layer's pre-activations are exactly those of ``weights``)."""
    zero = torch.zeros(1, dtype=weights[0].dtype if weights else torch.float64)
    loss, acc = evaluate_line((weights, biases), (weights, biases), zero, activation, x, y)
    return loss[0], acc[0]
