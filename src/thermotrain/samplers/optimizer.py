r"""The optimizer shell: :class:`PartitionedLangevin`, a :class:`torch.optim.Optimizer` whose
parameter groups each carry a scheme (SPEC §2–§3).

The class only gathers tensors, keeps lazily created per-parameter state (momenta ``p``,
thermostat ``ξ``, step counts), owns the random generators, and calls the functional core
(:mod:`.substeps`, :mod:`.schemes`).
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from . import fused
from .noise import CHUNK, CounterNoise, NoiseSource, member_view, normalize_seeds
from .schemes import GroupView, Scheme, get_scheme
from .substeps import kick, sum_squares

__all__ = ["PartitionedLangevin", "Hyperparameter"]

Hyperparameter = float | Callable[[int], float]

#: hyperparameters that must also be non-negative (every one must be finite)
NONNEGATIVE = ("lr", "friction", "temperature", "noise", "coupling")
NAN_POLICIES = ("raise", "warn", "ignore")


def _check_value(key: str, value: Any, where: str) -> float:
    if type(value) is float and math.isfinite(value) and (value >= 0 or key not in NONNEGATIVE):
        return value  # the common case, checked first: this runs every step
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where}: {key} must be a real number or a callable of the step, got "
                        f"{value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{where}: {key} must be finite, got {value}")
    if key in NONNEGATIVE and value < 0:
        raise ValueError(f"{where}: {key} must be >= 0, got {value}")
    return value


def _resolve(key: str, value: Any, step: int, where: str) -> float:
    if callable(value):
        value = value(step)
        where = f"{where} (schedule at step {step})"
    return _check_value(key, value, where)


@dataclass
class _Work:
    """One group's share of a step."""

    group: dict
    scheme: Scheme
    view: GroupView
    hp: dict
    offsets: list[list[int]]  # [draw][tensor] -> offset in a member's noise row
    chunked: bool = False


def _all_finite(tensors: list[Tensor]) -> bool:
    """Whether every entry is finite, screened by one sum per tensor (a NaN or inf makes the
    sum non-finite; the rare false alarm of a sum overflowing is ruled out by
    :meth:`PartitionedLangevin._report_non_finite`, which looks at the entries)."""
    if not tensors:
        return True
    return bool(torch.stack([t.sum() for t in tensors]).sum().isfinite())


#: entries per cache block when a worker applies a scheme to its noise chunk: the block's
#: θ, p, ∇L̃ and noise (4 × 1 MiB in float32) stay in cache across sub-steps
BLOCK = 1 << 18


class _ChunkPlan:
    """Which slices of which tensors each noise chunk covers, cut into cache blocks; ``run``
    is the noise source's per-chunk callback (executed on a worker thread)."""

    def __init__(self, chunks: int):
        # blocks[c] = list of blocks; a block = list of (work, tensor index, lo, hi, row)
        self.blocks: list[list[list[tuple[_Work, int, int, int, int]]]] = [
            [] for _ in range(chunks)
        ]
        self.finite = True

    def add(self, w: _Work, i: int, offset: int, numel: int) -> None:
        """Tensor ``i`` of ``w`` takes noise from row entries ``[offset, offset + numel)``."""
        start, end = offset, offset + numel
        while start < end:
            c, b = start // CHUNK, (start % CHUNK) // BLOCK
            stop = min(end, (c + 1) * CHUNK, c * CHUNK + (b + 1) * BLOCK)
            blocks = self.blocks[c]
            while len(blocks) <= b:
                blocks.append([])
            blocks[b].append((w, i, start - offset, stop - offset, start))
            start = stop

    @torch.no_grad()  # grad mode is per thread: the workers need their own
    def run(self, member: int, chunk: int, buf: Tensor) -> None:
        finite = True
        for block in self.blocks[chunk]:
            by_work: dict[int, tuple[_Work, GroupView, list[Tensor]]] = {}
            for w, i, lo, hi, row in block:
                if id(w) not in by_work:
                    by_work[id(w)] = (w, GroupView([], [], [], [], [], [], True, w.view.kick), [])
                _, sv, noise = by_work[id(w)]
                sv.params.append(w.view.params[i].view(-1)[lo:hi])
                sv.grads.append(w.view.grads[i].view(-1)[lo:hi])
                if w.scheme.momentum:
                    sv.momenta.append(w.view.momenta[i].view(-1)[lo:hi])
                noise.append(buf[member, row : row + hi - lo])
            for w, sv, noise in by_work.values():
                w.scheme.gradient_part(sv, w.hp)
                w.scheme.gradient_free_part(sv, w.hp, lambda noise=noise: noise)
                finite = finite and _all_finite(sv.params)
        if not finite:
            self.finite = False


class PartitionedLangevin(torch.optim.Optimizer):
    r"""Partitioned Langevin-type integrator: each parameter group has its own dynamics.

    Every group is advanced by the loop of SPEC §2 — a merged kick
    :math:`p \leftarrow p - k\,\nabla\tilde L(\theta_n)` (:math:`k = h/2` first, then :math:`h`),
    followed by the gradient-free part of its scheme (see :mod:`thermotrain.samplers.schemes`):

    * ``"langevin"`` — :math:`A_{h/2} O_h A_{h/2}` with friction :math:`\gamma` and temperature
      :math:`\tau` (BAOAB);
    * ``"overdamped"`` — the :math:`\gamma\to\infty` limit, :math:`p \leftarrow \sqrt{\tau}R`;
    * ``"adaptive"`` — :math:`A_{h/2} C_{h/2} D_{h/2} E_h D_{h/2} C_{h/2} A_{h/2}`, with
      :math:`\sigma_A` (``noise``), :math:`\varepsilon` (``coupling``), :math:`\xi_0`
      (``xi_init``), one thermostat :math:`\xi` per tensor and ensemble member;
    * ``"sgld"`` — :math:`\theta \leftarrow \theta - h\nabla\tilde L + \sqrt{2\tau h}R`.

    Args:
        params: tensors or param-group dicts (each may set any of the keys below and
            ``"scheme"``).
        lr: step size :math:`h` (same number as SGD's ``lr``).
        scheme: default scheme of groups that do not name one.
        temperature: :math:`\tau \ge 0`; 0 gives the deterministic limit.
        friction: :math:`\gamma \ge 0` (langevin groups).
        noise: :math:`\sigma_A \ge 0` (adaptive groups).
        coupling: :math:`\varepsilon \ge 0` (adaptive groups).
        xi_init: :math:`\xi_0` (adaptive groups).
        ensemble_dim: axis of the tensors that stacks K independent replicas (or ``None``);
            reductions and thermostats are then per replica, and replica k draws the noise a
            single run seeded ``seed[k]`` would draw.
        seed: int (replica k gets ``seed + k``), list of one seed per replica, or ``None``
            for fresh entropy (recorded in ``state_dict``).
        rng: the noise source: ``"torch"`` (default: torch generators, SPEC §0) or
            ``"philox"`` (a counter-based stream made inside one fused pass over θ, p and
            the gradient: on the CPU a step costs 2–3× less; see
            :mod:`thermotrain.samplers.philox` and :mod:`thermotrain.samplers.fused`). Both
            are reproducible and resumable.
        foreach: use the ``torch._foreach_*`` fast path (default: yes).
        nan_policy: what a step producing NaN/inf does: ``"raise"`` a
            :class:`FloatingPointError` (default), ``"warn"``, or ``"ignore"``.

    Every hyperparameter may be a float or a callable ``step -> float`` (step counts from 0).
    ``lr`` may also be driven by any :mod:`torch.optim.lr_scheduler`.

    Example:
        >>> import torch, thermotrain as tt
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(),
        ...                             torch.nn.Linear(8, 1))
        >>> opt = tt.PartitionedLangevin([
        ...     {"params": model[0].parameters(), "scheme": "adaptive", "temperature": 1e-4},
        ...     {"params": model[2].parameters(), "scheme": "langevin", "temperature": 1e-4,
        ...      "friction": 0.1}], lr=0.25, seed=0)
        >>> loss = model(torch.randn(16, 2)).square().mean()
        >>> loss.backward(); opt.step(); opt.zero_grad()
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: Hyperparameter = 0.1,
        *,
        scheme: str = "langevin",
        temperature: Hyperparameter = 0.0,
        friction: Hyperparameter = 1.0,
        noise: Hyperparameter = 0.01,
        coupling: Hyperparameter = 0.05,
        xi_init: Hyperparameter = 0.1,
        ensemble_dim: int | None = None,
        seed: int | Sequence[int] | None = None,
        foreach: bool | None = None,
        nan_policy: str = "raise",
        rng: str = "torch",
    ):
        if nan_policy not in NAN_POLICIES:
            raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
        defaults = dict(
            lr=lr,
            scheme=scheme,
            temperature=temperature,
            friction=friction,
            noise=noise,
            coupling=coupling,
            xi_init=xi_init,
            ensemble_dim=ensemble_dim,
        )
        self._members: int | None = None
        self.foreach = True if foreach is None else bool(foreach)
        self.nan_policy = nan_policy
        super().__init__(params, defaults)
        device = next(p.device for g in self.param_groups for p in g["params"])
        self._noise = NoiseSource(normalize_seeds(seed, self.members), device=device, rng=rng)
        self._layout_cache: tuple[Any, list[list[list[int]]], int] | None = None
        self._view_cache: dict[tuple, tuple[Tensor, list[list[Tensor]]]] = {}

    # ------------------------------------------------------------------ construction
    @property
    def members(self) -> int:
        """Ensemble size K (1 without an ensemble axis)."""
        return self._members or 1

    @property
    def seeds(self) -> list[int]:
        """The seed of each ensemble member."""
        return list(self._noise.seeds)

    def add_param_group(self, param_group: dict) -> None:
        index = len(self.param_groups)
        where = f"{type(self).__name__} param group {index}"
        for key, value in self.defaults.items():
            param_group.setdefault(key, value)
        scheme = get_scheme(param_group["scheme"])
        for key in ("lr", *scheme.hyperparameters):
            if not callable(param_group[key]):
                param_group[key] = _check_value(key, param_group[key], where)
        params = param_group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        if not params:
            raise ValueError(f"{where} is empty")
        param_group["params"] = params
        edim = param_group["ensemble_dim"]
        if edim is not None and (isinstance(edim, bool) or not isinstance(edim, int)):
            raise TypeError(f"{where}: ensemble_dim must be an int or None, got {edim!r}")
        declared = [g["ensemble_dim"] is not None for g in self.param_groups]
        if declared and any(declared) != (edim is not None):
            raise ValueError(
                f"{where}: ensemble_dim={edim!r}, but earlier groups "
                f"{'do' if any(declared) else 'do not'} stack ensemble members: declare "
                "ensemble_dim on every group or on none"
            )
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"{where}: parameters must be tensors, got {type(p).__name__}")
            if edim is None:
                continue
            if not 0 <= edim < p.dim():
                raise ValueError(
                    f"{where}: ensemble_dim={edim} is out of range for a parameter of "
                    f"shape {tuple(p.shape)}"
                )
            members = p.shape[edim]
            if self._members is not None and members != self._members:
                raise ValueError(
                    f"{where}: a parameter of shape {tuple(p.shape)} has {members} ensemble "
                    f"members on axis {edim}, but this optimizer has {self._members}"
                )
            self._members = members
        super().add_param_group(param_group)
        self._layout_cache = None

    # ------------------------------------------------------------------ state access
    def _state(self, p: Tensor, group: dict, scheme: Scheme) -> dict:
        st = self.state[p]
        if not st:
            st["step"] = 0
            st["half_kick"] = 0.0
            if scheme.momentum:
                st["momentum"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if scheme.thermostat:
                edim = group["ensemble_dim"]
                shape = [1] * p.dim()
                if edim is not None:
                    shape[edim] = p.shape[edim]
                xi0 = _resolve("xi_init", group["xi_init"], 0, "xi_init")
                st["xi"] = torch.full(
                    shape if edim is not None else [], xi0, dtype=p.dtype, device=p.device
                )
        return st

    def momenta(self) -> list[list[Tensor | None]]:
        """Momenta per group and parameter (``None`` before the first step or for SGLD).

        These are the stored momenta, which lag the BAOAB momenta by the closing half kick;
        call :meth:`finalize` first when true momenta are needed (e.g. kinetic temperature).
        """
        return [[self.state[p].get("momentum") for p in g["params"]] for g in self.param_groups]

    def thermostats(self) -> list[list[Tensor | None]]:
        """Thermostat variables ξ per group and parameter (``None`` for non-adaptive groups);
        shape ``[]`` or, with an ensemble axis, K along it."""
        return [[self.state[p].get("xi") for p in g["params"]] for g in self.param_groups]

    @torch.no_grad()
    def kinetic_temperature(self) -> list[Tensor]:
        r"""Per group, :math:`\sum p^2 / N` over the group's momenta (per ensemble member: a
        tensor of shape ``(K,)``; otherwise a scalar). NaN for groups without momenta yet."""
        out = []
        for g in self.param_groups:
            total, count = None, 0
            for p in g["params"]:
                m = self.state[p].get("momentum")
                if m is None:
                    continue
                ss = sum_squares(m, g["ensemble_dim"]).reshape(-1)
                total = ss if total is None else total + ss
                count += m.numel() // self.members
            if total is None:
                out.append(torch.tensor(float("nan")))
            else:
                temp = total / count
                out.append(temp if g["ensemble_dim"] is not None else temp.squeeze(0))
        return out

    @torch.no_grad()
    def finalize(self) -> None:
        """Apply the pending closing half kick with the current gradients, so the stored
        momenta become BAOAB's full-step momenta. The next :meth:`step` then kicks by h/2 only,
        so positions are unaffected. Call it after computing the gradient at the current θ."""
        for group in self.param_groups:
            scheme = get_scheme(group["scheme"])
            if not scheme.momentum:
                continue
            for p in group["params"]:
                st = self.state[p]
                if not st or p.grad is None or st["half_kick"] == 0.0:
                    continue
                kick([st["momentum"]], [p.grad], st["half_kick"], False)
                st["half_kick"] = 0.0

    @torch.no_grad()
    def permute_state(self, param: Tensor, index: Tensor, dim: int) -> None:
        """Reorder the per-entry state of ``param`` (its momentum) along ``dim`` with
        ``index`` — call it together with the same permutation of the parameter itself (swap
        moves). ``index`` may also have the ensemble axis (shape ``(K, n)``) to permute each
        member differently when ``dim`` is not the ensemble axis."""
        if param not in self.state or "momentum" not in self.state[param]:
            return
        m = self.state[param]["momentum"]
        if index.dim() == 1:
            m.copy_(m.index_select(dim, index.to(m.device)))
            return
        group = next(g for g in self.param_groups if any(p is param for p in g["params"]))
        edim = group["ensemble_dim"]
        if edim is None:
            raise ValueError("a 2-D index needs a parameter with an ensemble axis")
        shape = [1] * m.dim()
        shape[edim] = m.shape[edim]
        shape[dim] = index.shape[1]
        idx = index.to(m.device).reshape(shape).expand(
            [m.shape[i] if i != dim else index.shape[1] for i in range(m.dim())]
        )
        m.copy_(torch.gather(m, dim, idx))

    # ------------------------------------------------------------------ the step
    def _layout(self) -> tuple[list[list[list[int]]], int]:
        """Offsets into a member's noise row: ``[group][draw][param] -> offset``."""
        key = tuple((g["scheme"], len(g["params"])) for g in self.param_groups)
        if self._layout_cache is not None and self._layout_cache[0] == key:
            return self._layout_cache[1], self._layout_cache[2]
        layout, offset = [], 0
        for g in self.param_groups:
            scheme = get_scheme(g["scheme"])
            per_draw = []
            for _ in range(scheme.draws):
                offs = []
                for p in g["params"]:
                    offs.append(offset)
                    offset += p.numel() // self.members
                per_draw.append(offs)
            layout.append(per_draw)
        self._layout_cache = (key, layout, offset)
        return layout, offset

    def _noise_view(self, buf: Tensor, offset: int, p: Tensor, edim: int | None) -> Tensor:
        return member_view(buf[:, offset : offset + p.numel() // self.members], p.shape, edim)

    def _noise_views(self, buf: Tensor, w: _Work) -> list[list[Tensor]]:
        """Views of ``buf`` holding each draw's noise for each tensor of ``w`` (cached: the
        buffer is reused step after step)."""
        # the entry holds ``buf`` itself, so its id cannot be reused while the entry exists
        key = (id(buf), tuple(id(p) for p in w.view.params), tuple(map(tuple, w.offsets)))
        hit = self._view_cache.get(key)
        if hit is not None and hit[0] is buf:
            return hit[1]
        if len(self._view_cache) > 64:
            self._view_cache.clear()
        edims = w.view.ensemble_dims
        views = [[self._noise_view(buf, off, p, e)
                  for off, p, e in zip(offs, w.view.params, edims, strict=True)]
                 for offs in w.offsets]
        self._view_cache[key] = (buf, views)
        return views

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """One step of every group's scheme (see the class docstring)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        layout, size = self._layout()
        dtype = self.param_groups[0]["params"][0].dtype

        work = []
        for gi, group in enumerate(self.param_groups):
            scheme = get_scheme(group["scheme"])
            where = f"{type(self).__name__} param group {gi}"
            edim = group["ensemble_dim"]
            view = GroupView([], [], [], [], [], [], self.foreach, 0.0)
            offsets: list[list[int]] = [[] for _ in range(scheme.draws)]
            step_count, half_kick = None, 0.0
            for pi, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"{where}: sparse gradients are not supported")
                st = self._state(p, group, scheme)
                if step_count is None:
                    step_count, half_kick = st["step"], st["half_kick"]
                view.params.append(p)
                view.grads.append(p.grad)
                if scheme.momentum:
                    view.momenta.append(st["momentum"])
                if scheme.thermostat:
                    view.xis.append(st["xi"])
                view.counts.append(p.numel() // self.members)
                view.ensemble_dims.append(edim)
                for j in range(scheme.draws):
                    offsets[j].append(layout[gi][j][pi])
            if not view.params:
                continue
            hp = {"lr": _resolve("lr", group["lr"], step_count, where)}
            for key in scheme.hyperparameters:
                hp[key] = _resolve(key, group[key], step_count, where)
            view.kick = half_kick + hp["lr"] / 2
            work.append(_Work(group, scheme, view, hp, offsets))

        fused_finite = True
        if self._noise.rng == "philox":
            # counter-based noise is made where it is used: a whole group's step in one fused
            # kernel pass where possible, else fused O/D sub-steps
            chunked, rest, draw = None, [], self._noise.advance()
            keys = self._noise._keys  # noqa: SLF001 - the optimizer owns its noise source
            for w in work:
                step = fused.FUSED.get(w.scheme.name) if self.foreach else None
                if step is not None and fused.supports(w.view, self.members):
                    fused_finite &= step(w.view, w.hp, w.offsets, keys, draw, self.members)
                    continue
                rest.append(w)
                w.scheme.gradient_part(w.view, w.hp)
                draws = iter([CounterNoise(self._noise, draw, offs, w.view.ensemble_dims)
                              for offs in w.offsets])
                w.scheme.gradient_free_part(w.view, w.hp, lambda draws=draws: next(draws))
        else:
            chunked = self._chunk_plan(work, size)
            pending = self._noise.draw(size, dtype, chunked.run if chunked else None)
            # the remaining groups: gradient parts first (they need no noise: with worker
            # threads drawing, they overlap the draw)
            rest = [w for w in work if not (chunked and w.chunked)]
            for w in rest:
                w.scheme.gradient_part(w.view, w.hp)
            buf = pending.wait()
            for w in rest:
                draws = iter(self._noise_views(buf, w))
                w.scheme.gradient_free_part(w.view, w.hp, lambda draws=draws: next(draws))
        for w in work:
            for p in w.view.params:
                st = self.state[p]
                st["step"] += 1
                st["half_kick"] = w.hp["lr"] / 2
        if self.nan_policy != "ignore":
            finite = fused_finite and (chunked.finite if chunked else True)
            finite = finite and _all_finite([p for w in rest for p in w.view.params])
            if not finite:
                self._report_non_finite(work)
        return loss

    def _chunk_plan(self, work: list[_Work], size: int) -> _ChunkPlan | None:
        """For large single-member draws on the CPU, hand elementwise groups (no reductions)
        to the noise workers: each applies the whole step to the slices of the tensors that
        its noise chunk covers, while the chunk is in cache, using both cores."""
        if not (self.foreach and self.members == 1 and self._noise.parallel(size)):
            return None
        plan = _ChunkPlan(self._noise.chunks(size))
        for w in work:
            tensors = w.view.params + w.view.grads + w.view.momenta
            if not w.scheme.elementwise or w.scheme.draws != 1:
                continue
            if not all(t.is_contiguous() for t in tensors):
                continue
            w.chunked = True
            for i, (p, off) in enumerate(zip(w.view.params, w.offsets[0], strict=True)):
                plan.add(w, i, off, p.numel())
        return plan if any(w.chunked for w in work) else None

    def _report_non_finite(self, work: list[_Work]) -> None:
        tensors = [t for w in work for t in (*w.view.params, *w.view.momenta, *w.view.xis)]
        if all(bool(torch.isfinite(t).all()) for t in tensors):
            return  # the screening sum overflowed; every entry is finite
        msg = f"{type(self).__name__}: a step produced a non-finite value"
        for gi, w in enumerate(work):
            bad = next((p for p in w.view.params if not bool(torch.isfinite(p).all())), None)
            if bad is not None:
                msg = (
                    f"{type(self).__name__}: step {self.state[bad]['step']} produced a "
                    f"non-finite value in a parameter of shape {tuple(bad.shape)} (group {gi}, "
                    f"scheme {w.scheme.name!r}); the gradient or the step size/temperature is "
                    "too large"
                )
                break
        if self.nan_policy == "raise":
            raise FloatingPointError(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["noise"] = self._noise.state_dict()
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        noise = state_dict.pop("noise", None)
        super().load_state_dict(state_dict)
        if noise is not None:
            self._noise.load_state_dict(noise)
        self._layout_cache = None
        self._view_cache.clear()

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}(members={self.members}, seeds={self.seeds[:4]}"
                 f"{'...' if self.members > 4 else ''})"]
        for i, g in enumerate(self.param_groups):
            scheme = get_scheme(g["scheme"])
            hps = ", ".join(f"{k}={g[k]}" for k in ("lr", *scheme.hyperparameters))
            n = sum(p.numel() for p in g["params"])
            lines.append(f"  group {i}: {scheme.name} ({n} entries) {hps}")
        return "\n".join(lines)
