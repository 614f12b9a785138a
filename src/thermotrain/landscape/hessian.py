r"""Curvature from Hessian-vector products: top eigenvalues, trace, spectral density
(docs/science.md §8).

The Hessian :math:`H = \nabla^2_\theta L(\theta)` of the mean loss over a data set is never
formed; every tool uses products :math:`Hv` — by default reverse-over-reverse on a gradient
graph built once (``backend="autograd"``), or forward-over-reverse with :mod:`torch.func`
(``jvp`` of ``grad``, ``backend="func"``, no stored graph) — on whatever device the model
lives (PyHessian's three functions, which assume CUDA and a plain model):

* :func:`hessian_eigenvalues` — the k largest eigenvalues by Lanczos with full
  reorthogonalization (default), or by power iteration with deflation (the k largest in
  magnitude, PyHessian's method);
* :func:`hessian_trace` — Hutchinson's estimator :math:`\operatorname{tr} H \approx
  \frac1n\sum_s v_s^\top H v_s`, :math:`v_s` Rademacher from a seeded ``torch.Generator``;
* :func:`hessian_density` — stochastic Lanczos quadrature (SLQ): m-step Lanczos from n random
  unit vectors gives nodes :math:`\lambda_i` (Ritz values) and weights :math:`w_i = (e_1^\top
  y_i)^2`, and :math:`\frac1P \operatorname{tr} f(H) \approx \frac1n \sum_{runs} \sum_i w_i
  f(\lambda_i)` (Ubaru, Chen, Saad 2017; Ghorbani et al. 2019).

**Ensembles.** For a K-member ensemble the loss is the sum of the members' losses; member k's
parameters enter only :math:`L_k`, so the Hessian is block diagonal and one product with
stacked vectors :math:`(v_1, \dots, v_K)` gives every :math:`H_k v_k`. All K Lanczos (or
power, Hutchinson) runs therefore go in lockstep, one Hessian-vector product per iteration,
with per-member inner products; results have a leading axis K.

**Per layer.** ``per_layer=True`` returns the same quantity for each diagonal block
:math:`H_{\ell\ell}` (the parameters of one module, the others held fixed), as a dict keyed by
module name. The model is evaluated in eval mode (batch norm uses its running statistics).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vmap

from .._checks import check_int, check_seed
from . import _state
from ._state import LossFn

__all__ = ["hessian_vector_product", "hessian_eigenvalues", "hessian_trace",
           "hessian_density", "SpectralDensity", "layer_groups"]

Matvec = Callable[[Tensor], Tensor]


class _Flat:
    """The selected parameters as one ``(K, P)`` matrix (K = 1 for a plain model)."""

    def __init__(self, model: nn.Module, names: Sequence[str]):
        self.k = _state.members(model)
        params = dict(model.named_parameters())
        self.names = list(names)
        self.values = {n: params[n].detach() for n in self.names}
        lead = 1 if self.k is not None else 0
        self.shapes = [self.values[n].shape for n in self.names]
        self.sizes = [int(torch.Size(s[lead:]).numel()) for s in self.shapes]
        self.rows = self.k or 1
        self.size = sum(self.sizes)
        first = self.values[self.names[0]]
        self.dtype, self.device = first.dtype, first.device

    def unflatten(self, v: Tensor) -> dict[str, Tensor]:
        """``(..., R, P)`` → per-parameter tensors ``(..., *shape)``."""
        lead = v.shape[:-2]
        parts = torch.split(v, self.sizes, dim=-1)
        return {n: p.reshape(*lead, *s)
                for n, p, s in zip(self.names, parts, self.shapes, strict=True)}

    def flatten(self, tensors: Mapping[str, Tensor], lead: tuple[int, ...] = ()) -> Tensor:
        return torch.cat([tensors[n].reshape(*lead, self.rows, -1) for n in self.names], dim=-1)


def layer_groups(model: nn.Module) -> dict[str, list[str]]:
    """Parameter names grouped by the module that owns them (``"layers.0"`` → its weight,
    bias), in registration order."""
    groups: dict[str, list[str]] = {}
    for name, _ in model.named_parameters():
        groups.setdefault(name.rpartition(".")[0] or name, []).append(name)
    return groups


BACKENDS = ("autograd", "func")


def hessian_vector_product(model: nn.Module, loss: LossFn | None,
                           data: tuple[Tensor, Tensor], *, params: Sequence[str] | None = None,
                           batch_size: int | None = None, backend: str = "autograd"
                           ) -> tuple[Matvec, _Flat]:
    """``v ↦ Hv`` for the mean loss over ``data`` with respect to ``params`` (default all).

    ``v`` and ``Hv`` are ``(R, P)`` with R = K members (1 for a plain model) and P the
    selected parameters per member, or ``(n, R, P)`` for n vectors per member at once. With
    ``batch_size`` the data set is processed in chunks and the products combined with
    weights rows/N (exact for a batch-mean loss).

    Backends (both device-agnostic, equal to rounding): ``"autograd"`` (default) builds the
    gradient graph once (``create_graph=True``) and differentiates it again for every
    :math:`v` (reverse-over-reverse; n vectors in one call with ``is_grads_batched``), as
    PyHessian does; ``"func"`` recomputes forward-over-reverse
    (``torch.func.jvp`` of ``torch.func.grad``) per product, ``vmap`` over n vectors — no
    stored graph, so the least memory."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    x, y = _state.check_split("data", data)
    names = list(params) if params is not None else _state.parameter_names(model)
    flat = _Flat(model, names)
    loss_fn = loss if loss is not None else _state.default_loss(model)
    k = flat.k
    fixed = {n: t.detach() for n, t in model.state_dict().items() if n not in flat.values}
    n = x.shape[0]
    step = n if batch_size is None else check_int("batch_size", batch_size, minimum=1)
    chunks = [(x[lo:lo + step], y[lo:lo + step]) for lo in range(0, n, step)]

    def total(p: dict[str, Tensor], xb: Tensor, yb: Tensor) -> Tensor:
        logits = functional_call(model, {**fixed, **p}, (xb,))
        return _state.per_member(loss_fn(logits, yb), k).sum() * (xb.shape[0] / n)

    if backend == "autograd":
        leaves = {name: t.clone().requires_grad_(True) for name, t in flat.values.items()}
        order = list(leaves.values())
        graphs = []
        with torch.enable_grad(), _state.eval_mode(model):
            for xb, yb in chunks:
                graphs.append(torch.autograd.grad(total(leaves, xb, yb), order,
                                                  create_graph=True))

        def matvec(v: Tensor) -> Tensor:
            lead = tuple(v.shape[:-2])
            tangent = flat.unflatten(v.to(flat.dtype))
            outs = [tangent[name] for name in leaves]
            out: Tensor | None = None
            for g in graphs:
                hv = torch.autograd.grad(g, order, grad_outputs=outs, retain_graph=True,
                                         is_grads_batched=bool(lead))
                part = flat.flatten(dict(zip(leaves, hv, strict=True)), lead)
                out = part if out is None else out + part
            assert out is not None
            return out

        return matvec, flat

    def single(v: Tensor) -> Tensor:
        tangent = flat.unflatten(v.to(flat.dtype))
        out: Tensor | None = None
        with _state.eval_mode(model):
            for xb, yb in chunks:
                _, hv = jvp(lambda p, xb=xb, yb=yb: grad(total)(p, xb, yb),
                            (flat.values,), (tangent,))
                part = flat.flatten(hv)
                out = part if out is None else out + part  # not in place: vmap-safe
        assert out is not None
        return out

    def matvec_func(v: Tensor) -> Tensor:
        return single(v) if v.ndim == 2 else vmap(single)(v)

    return matvec_func, flat


def _stacked(matvec: Matvec, rows: int) -> Matvec:
    """``matvec`` on ``(n·R, P)``: n vectors per member as one batched product."""

    def many(v: Tensor) -> Tensor:
        return matvec(v.reshape(-1, rows, v.shape[-1])).reshape(v.shape)

    return many


#: vectors per vmapped Hessian-vector product in Hutchinson's estimator (memory ∝ this)
SAMPLE_BLOCK = 16


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum(-1)


def _random_unit(rows: int, size: int, gen: torch.Generator, like: Tensor) -> Tensor:
    """Gaussian directions normalized per row (drawn in float64 on the CPU, then moved)."""
    v = torch.randn(rows, size, generator=gen, dtype=torch.float64)
    return (v / v.norm(dim=-1, keepdim=True)).to(like)


def _rademacher(rows: int, size: int, gen: torch.Generator, like: Tensor) -> Tensor:
    """Entries ±1 with probability 1/2 each."""
    return (torch.randint(0, 2, (rows, size), generator=gen) * 2 - 1).to(like)


def _lanczos(matvec: Matvec, v0: Tensor, steps: int, gen: torch.Generator
             ) -> tuple[Tensor, Tensor]:
    """``steps`` Lanczos iterations with full reorthogonalization from unit rows ``v0``
    ``(R, P)``; returns the tridiagonal matrices' eigenvalues ``(R, m)`` (ascending) and
    eigenvectors ``(R, m, m)``. An exhausted Krylov space restarts from a random vector
    orthogonal to the basis (β = 0 there), so m may reach P."""
    rows, size = v0.shape
    basis = torch.zeros(rows, steps, size, dtype=v0.dtype, device=v0.device)
    alphas = torch.zeros(rows, steps, dtype=v0.dtype, device=v0.device)
    betas = torch.zeros(rows, max(steps - 1, 0), dtype=v0.dtype, device=v0.device)
    v = v0
    scale = None
    for j in range(steps):
        basis[:, j] = v
        w = matvec(v)
        alphas[:, j] = _dot(w, v)
        if scale is None:
            scale = w.norm(dim=-1).clamp_min(torch.finfo(v.dtype).tiny)
        q = basis[:, : j + 1]
        for _ in range(2):  # full reorthogonalization, twice is enough (Parlett)
            w = w - torch.einsum("rj,rjp->rp", torch.einsum("rjp,rp->rj", q, w), q)
        if j == steps - 1:
            break
        beta = w.norm(dim=-1)
        done = beta <= 1e-10 * scale
        if bool(done.any()):
            fresh = _random_unit(rows, size, gen, v)
            for _ in range(2):
                fresh = fresh - torch.einsum("rj,rjp->rp",
                                             torch.einsum("rjp,rp->rj", q, fresh), q)
            fresh = fresh / fresh.norm(dim=-1, keepdim=True)
            w = torch.where(done[:, None], fresh, w / beta.clamp_min(1e-300)[:, None])
            beta = torch.where(done, torch.zeros_like(beta), beta)
        else:
            w = w / beta[:, None]
        betas[:, j] = beta
        v = w
    tri = torch.diag_embed(alphas) + torch.diag_embed(betas, 1) + torch.diag_embed(betas, -1)
    return torch.linalg.eigh(tri)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(check_seed("seed", seed))


def _per_layer(fn: Callable[[Sequence[str] | None], object], model: nn.Module,
               per_layer: bool) -> object:
    if not isinstance(per_layer, bool):
        raise TypeError(f"per_layer must be True or False, got {per_layer!r}")
    if not per_layer:
        return fn(None)
    return {layer: fn(names) for layer, names in layer_groups(model).items()}


def _shape(values: Tensor, model: nn.Module) -> Tensor:
    """Drop the member axis of a plain model's results."""
    return values[0] if _state.members(model) is None else values


def hessian_eigenvalues(model: nn.Module, loss: LossFn | None, data: tuple[Tensor, Tensor],
                        k: int = 1, *, method: str = "lanczos", iterations: int = 100,
                        tol: float = 1e-6, seed: int = 0, per_layer: bool = False,
                        batch_size: int | None = None, backend: str = "autograd"
                        ) -> Tensor | dict[str, Tensor]:
    r"""The ``k`` top Hessian eigenvalues of the mean loss over ``data``, per member.

    Args:
        model, loss, data: the model (plain or ensemble), ``loss(logits, y)`` batch mean
            (``None``: classification loss) and an ``(x, y)`` pair.
        k: how many eigenvalues (≤ P, the parameters per member or per layer).
        method: ``"lanczos"`` — the k largest (algebraic) Ritz values after
            ``min(P, iterations)`` Lanczos steps with full reorthogonalization (exact when the
            steps reach P); ``"power"`` — power iteration with deflation: eigenvalue i is the
            dominant one of :math:`H - \sum_{j<i} \lambda_j u_j u_j^\top`, i.e. the k largest
            in *magnitude* (PyHessian), each stopped when its relative change is below
            ``tol`` or after ``iterations`` products.
        seed: of the start vectors (an explicit ``torch.Generator``).
        per_layer: a dict ``{module name: eigenvalues of its diagonal block}``.
        batch_size: process the data in chunks of this many rows.
        backend: ``"autograd"`` or ``"func"`` (:func:`hessian_vector_product`).

    Returns:
        ``(K, k)`` descending (``(k,)`` for a plain model), or a dict of them.
    """
    if method not in ("lanczos", "power"):
        raise ValueError(f"method must be 'lanczos' or 'power', got {method!r}")
    k = check_int("k", k, minimum=1)
    iterations = check_int("iterations", iterations, minimum=1)
    gen = _generator(seed)

    def one(names: Sequence[str] | None) -> Tensor:
        matvec, flat = hessian_vector_product(model, loss, data, params=names,
                                              batch_size=batch_size, backend=backend)
        if k > flat.size:
            raise ValueError(f"k must be <= the number of parameters ({flat.size}), got {k}")
        like = torch.empty((), dtype=flat.dtype, device=flat.device)
        v0 = _random_unit(flat.rows, flat.size, gen, like)
        if method == "lanczos":
            steps = min(flat.size, max(iterations, k))
            values, _ = _lanczos(matvec, v0, steps, gen)
            out = values.flip(-1)[:, :k]
        else:
            out = _power(matvec, v0, k, iterations, tol, gen)
        return _shape(out, model)

    return _per_layer(one, model, per_layer)  # type: ignore[return-value]


def _power(matvec: Matvec, v0: Tensor, k: int, iterations: int, tol: float,
           gen: torch.Generator) -> Tensor:
    rows, size = v0.shape
    found_vals: list[Tensor] = []
    found_vecs: list[Tensor] = []
    for i in range(k):
        v = v0 if i == 0 else _random_unit(rows, size, gen, v0)
        lam = torch.zeros(rows, dtype=v0.dtype, device=v0.device)
        for it in range(iterations):
            w = matvec(v)
            for val, vec in zip(found_vals, found_vecs, strict=True):
                w = w - (val * _dot(vec, v))[:, None] * vec
            new = _dot(w, v)
            v = w / w.norm(dim=-1, keepdim=True).clamp_min(1e-300)
            change = (new - lam).abs() / (lam.abs() + 1e-6)
            lam = new
            if it > 0 and bool((change < tol).all()):
                break
        found_vals.append(lam)
        found_vecs.append(v)
    out = torch.stack(found_vals, dim=1)
    return out


def hessian_trace(model: nn.Module, loss: LossFn | None, data: tuple[Tensor, Tensor],
                  samples: int = 100, seed: int = 0, *, per_layer: bool = False,
                  batch_size: int | None = None, return_samples: bool = False,
                  backend: str = "autograd") -> Tensor | dict[str, Tensor]:
    r"""Hutchinson's estimate :math:`\frac1n\sum_{s=1}^n v_s^\top H v_s` of :math:`\operatorname
    {tr} H`, :math:`v_s \in \{\pm1\}^P` Rademacher from ``torch.Generator().manual_seed(seed)``.

    Unbiased, with variance :math:`\frac2n\sum_{i\ne j} H_{ij}^2` per member. Returns ``(K,)``
    (``()`` for a plain model) — or with ``return_samples`` the ``(n, K)`` values
    :math:`v_s^\top H v_s` (``(n,)`` plain) — or a dict per layer."""
    samples = check_int("samples", samples, minimum=1)
    gen = _generator(seed)

    def one(names: Sequence[str] | None) -> Tensor:
        matvec, flat = hessian_vector_product(model, loss, data, params=names,
                                              batch_size=batch_size, backend=backend)
        like = torch.empty((), dtype=flat.dtype, device=flat.device)
        many = _stacked(matvec, flat.rows)
        values = []
        for lo in range(0, samples, SAMPLE_BLOCK):
            block = min(SAMPLE_BLOCK, samples - lo)
            v = _rademacher(block * flat.rows, flat.size, gen, like)
            values.append(_dot(v, many(v)).reshape(block, flat.rows))
        stacked = torch.cat(values)  # (n, K)
        out = stacked if return_samples else stacked.mean(0)
        return out[..., 0] if _state.members(model) is None else out

    return _per_layer(one, model, per_layer)  # type: ignore[return-value]


@dataclass
class SpectralDensity:
    r"""SLQ quadrature of the Hessian's spectral measure :math:`\mu = \frac1P\sum_i
    \delta_{\lambda_i}`.

    Attributes:
        nodes: ``(n, K, m)`` Ritz values of each of the n runs (``(n, m)`` plain).
        weights: same shape, :math:`w_i = (e_1^\top y_i)^2`, summing to 1 per run.
    """

    nodes: Tensor
    weights: Tensor

    def expectation(self, f: Callable[[Tensor], Tensor]) -> Tensor:
        r""":math:`\frac1P\operatorname{tr} f(H) \approx \frac1n\sum_{runs}\sum_i w_i
        f(\lambda_i)`: ``(K,)`` (``()`` plain)."""
        return (self.weights * f(self.nodes)).sum(-1).mean(0)

    def density(self, grid: Tensor, sigma: float) -> Tensor:
        """The measure smoothed by a Gaussian of width ``sigma`` on ``grid`` ``(G,)``:
        ``(K, G)`` (``(G,)`` plain), integrating to ~1."""
        g = grid.to(self.nodes)
        z = (g[..., :] - self.nodes[..., None]) / sigma  # (n, [K,] m, G)
        kern = torch.exp(-0.5 * z.square()) / (sigma * (2 * torch.pi) ** 0.5)
        return (self.weights[..., None] * kern).sum(-2).mean(0)


def hessian_density(model: nn.Module, loss: LossFn | None, data: tuple[Tensor, Tensor],
                    steps: int = 50, runs: int = 5, seed: int = 0, *,
                    per_layer: bool = False, batch_size: int | None = None,
                    backend: str = "autograd") -> SpectralDensity | dict[str, SpectralDensity]:
    """Stochastic Lanczos quadrature: ``runs`` Lanczos runs of ``min(steps, P)`` steps from
    Gaussian unit start vectors (seeded generator). See :class:`SpectralDensity`."""
    steps = check_int("steps", steps, minimum=1)
    runs = check_int("runs", runs, minimum=1)
    gen = _generator(seed)

    def one(names: Sequence[str] | None) -> SpectralDensity:
        matvec, flat = hessian_vector_product(model, loss, data, params=names,
                                              batch_size=batch_size, backend=backend)
        like = torch.empty((), dtype=flat.dtype, device=flat.device)
        m = min(steps, flat.size)
        # all runs in lockstep: rows (run, member), one vmapped product per Lanczos step
        v0 = _random_unit(runs * flat.rows, flat.size, gen, like)
        values, vectors = _lanczos(_stacked(matvec, flat.rows), v0, m, gen)
        n = values.reshape(runs, flat.rows, m)
        w = vectors[:, 0, :].square().reshape(runs, flat.rows, m)
        if _state.members(model) is None:
            n, w = n[:, 0], w[:, 0]
        return SpectralDensity(n, w)

    return _per_layer(one, model, per_layer)  # type: ignore[return-value]
