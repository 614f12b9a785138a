r"""The optimizer shell: :class:`PartitionedLangevin`, a :class:`torch.optim.Optimizer` whose
parameter groups each carry a scheme (SPEC §2–§3).

The class only gathers tensors, keeps lazily created per-parameter state (momenta ``p``,
thermostat ``ξ``, step counts, the pending closing sub-steps), owns the noise source, and
runs each group's step program (:func:`.splittings.program`) through one dispatch point
(:meth:`PartitionedLangevin._execute`): the fused C kernel (:mod:`.fused`) where it can take
the group, else the torch implementation (:mod:`.reference`).
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
from .noise import NoiseSource, member_view, normalize_seeds
from .philox import philox_normal_
from .reference import GroupView, run_program, sum_squares
from .splittings import Scheme, closing_program, get_scheme, program

__all__ = ["PartitionedLangevin", "Hyperparameter"]

Hyperparameter = float | Tensor | Callable[[int], float | Tensor]

#: hyperparameters that must also be non-negative (every one must be finite)
NONNEGATIVE = ("lr", "friction", "temperature", "noise", "coupling")
NAN_POLICIES = ("raise", "warn", "ignore", "mask")


def _check_value(key: str, value: Any, where: str, members: int | None) -> float | list[float]:
    """A float, or (a tensor with one value per ensemble member) a list of K floats."""
    if type(value) is float and math.isfinite(value) and (value >= 0 or key not in NONNEGATIVE):
        return value  # the common case, checked first: this runs every step
    if isinstance(value, Tensor):
        if value.numel() == 1:
            value = value.item()
        elif value.dim() == 1 and members is not None and value.numel() == members:
            return [_check_value(key, float(v), f"{where} (member {k})", members)
                    for k, v in enumerate(value.tolist())]
        else:
            raise ValueError(
                f"{where}: {key} as a tensor must hold one value per ensemble member, shape "
                f"({members or 1},){'' if members else ' (no ensemble axis declared)'}, got "
                f"shape {tuple(value.shape)}")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where}: {key} must be a real number, a tensor of one value per "
                        f"ensemble member or a callable of the step, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{where}: {key} must be finite, got {value}")
    if key in NONNEGATIVE and value < 0:
        raise ValueError(f"{where}: {key} must be >= 0, got {value}")
    return value


def _resolve(key: str, value: Any, step: int, where: str, members: int | None):
    if callable(value):
        value = value(step)
        where = f"{where} (schedule at step {step})"
    return _check_value(key, value, where, members)


def _frozen_key(v):
    return tuple(v) if isinstance(v, list) else v


@dataclass
class _Work:
    """One group's share of a step."""

    index: int
    group: dict
    scheme: Scheme
    view: GroupView
    hp: dict
    ops: list[tuple]
    packed: Any  # the ops packed for C, or None
    offsets: list[list[int]]  # [draw][tensor] -> offset in a member's noise row
    fused: bool


def _edims(view: GroupView) -> bool:
    return all(e in (None, 0) for e in view.ensemble_dims)


class PartitionedLangevin(torch.optim.Optimizer):
    r"""Partitioned Langevin-type integrator: each parameter group has its own dynamics.

    Every group is advanced by the one-gradient loop of SPEC §2: its scheme's splitting
    (a word of sub-steps, :mod:`thermotrain.samplers.splittings`) rotated to start at the
    gradient, e.g. for BAOAB the merged kick
    :math:`p \leftarrow p - k\,\nabla\tilde L(\theta_n)` (:math:`k = h/2` first, then
    :math:`h_{n-1}/2 + h_n/2`) followed by :math:`A_{h/2} O_h A_{h/2}`:

    * ``"langevin"`` — BAOAB with friction :math:`\gamma` and temperature :math:`\tau`
      (``"langevin-ABOBA"``, ``"langevin-OBABO"``, ``"langevin-BAOA"``: the other
      splittings, see :class:`~thermotrain.samplers.Langevin`);
    * ``"overdamped"`` — the :math:`\gamma\to\infty` limit, :math:`p \leftarrow \sqrt{\tau}R`;
    * ``"adaptive"`` — :math:`B A_{h/2} C_{h/2} D_{h/2} E_h D_{h/2} C_{h/2} A_{h/2} B`, with
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
        rng: the noise source: ``"philox"`` (default: a counter-based stream made inside the
            fused pass over θ, p and the gradient; see :mod:`thermotrain.samplers.philox`) or
            ``"torch"`` (torch generators). Both are reproducible and resumable.
        foreach: ``True`` (default): the fused kernel where it can take a group, else the
            ``torch._foreach_*`` path; ``False``: the readable torch reference loop.
        nan_policy: a step whose gradient (or result) is not finite: ``"raise"`` a
            :class:`FloatingPointError` before anything is written (default), ``"warn"`` and
            apply it, ``"ignore"`` (no check), or ``"mask"``: the members concerned are frozen
            at their pre-step values from then on (:attr:`frozen_members`).

    Every hyperparameter may be a float, a tensor of shape ``(K,)`` with one value per
    ensemble member, or a callable ``step -> float | Tensor`` (step counts from 0). ``lr``
    may also be driven by any :mod:`torch.optim.lr_scheduler`.

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
        rng: str = "philox",
    ):
        if nan_policy not in NAN_POLICIES:
            raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
        defaults = dict(lr=lr, scheme=scheme, temperature=temperature, friction=friction,
                        noise=noise, coupling=coupling, xi_init=xi_init,
                        ensemble_dim=ensemble_dim)
        self._members: int | None = None
        self.foreach = True if foreach is None else bool(foreach)
        self.nan_policy = nan_policy
        super().__init__(params, defaults)
        device = next(p.device for g in self.param_groups for p in g["params"])
        self._noise = NoiseSource(normalize_seeds(seed, self.members), device=device, rng=rng)
        self._layout_cache: tuple[Any, list[list[list[int]]], int] | None = None
        self._view_cache: dict[tuple, tuple[Tensor, list[list[Tensor]]]] = {}
        self._program_cache: dict[tuple, tuple] = {}
        self._kernel_cache: dict[tuple, tuple] = {}
        self._names = {id(p): f"param {j} of group {i} (shape {tuple(p.shape)})"
                       for i, g in enumerate(self.param_groups) for j, p in enumerate(g["params"])}
        #: members frozen by ``nan_policy="mask"`` (bool, shape (K,))
        self.frozen_members = torch.zeros(self.members, dtype=torch.bool)
        self._nonfinite = torch.zeros(self.members, dtype=torch.bool)
        #: which implementation ran each group's last step: "fused", "foreach" or "reference"
        self.implementations: list[str | None] = [None] * len(self.param_groups)

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
        for key in ("lr", *scheme.hyperparameters):
            if not callable(param_group[key]):
                checked = _check_value(key, param_group[key], where,
                                       self._members if edim is not None else None)
                if not isinstance(param_group[key], Tensor):
                    param_group[key] = checked
        super().add_param_group(param_group)
        self._layout_cache = None
        if hasattr(self, "_names"):
            for j, p in enumerate(params):
                self._names[id(p)] = f"param {j} of group {index} (shape {tuple(p.shape)})"
            self.implementations.append(None)

    def _members_of(self, group: dict) -> int | None:
        return self._members if group["ensemble_dim"] is not None else None

    # ------------------------------------------------------------------ state access
    def _state(self, p: Tensor, group: dict, scheme: Scheme) -> dict:
        st = self.state[p]
        if not st:
            st["step"] = 0
            st["pending"] = False  # closing sub-steps of the last step not yet applied
            if scheme.momentum:
                st["momentum"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if scheme.thermostat:
                edim = group["ensemble_dim"]
                shape = [1] * p.dim()
                if edim is not None:
                    shape[edim] = p.shape[edim]
                xi0 = _resolve("xi_init", group["xi_init"], 0, "xi_init", self._members_of(group))
                values = torch.tensor(xi0 if isinstance(xi0, list) else [xi0], dtype=p.dtype)
                xi = torch.empty(shape if edim is not None else [], dtype=p.dtype,
                                 device=p.device)
                xi.copy_(values.reshape(xi.shape) if xi.numel() == values.numel()
                         else values.expand(xi.numel()).reshape(xi.shape))
                st["xi"] = xi
        return st

    def momenta(self) -> list[list[Tensor | None]]:
        """Momenta per group and parameter (``None`` before the first step or for SGLD).

        These are the stored momenta, which lag the splitting's boundary momenta by the
        closing sub-steps (BAOAB: the closing half kick); call :meth:`finalize` first when
        true momenta are needed (e.g. kinetic temperature).
        """
        return [[self.state[p].get("momentum") for p in g["params"]] for g in self.param_groups]

    def thermostats(self) -> list[list[Tensor | None]]:
        """Thermostat variables ξ per group and parameter (``None`` for non-adaptive groups);
        shape ``[]`` or, with an ensemble axis, K along it."""
        return [[self.state[p].get("xi") for p in g["params"]] for g in self.param_groups]

    def nonfinite_members(self) -> Tensor:
        """Bool ``(K,)``: the members whose gradient or result was not finite in the last
        step (all ``False`` with ``nan_policy="ignore"``)."""
        return self._nonfinite.clone()

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

    def _closing_hp(self, st: dict, scheme: Scheme) -> dict | None:
        if not st.get("pending"):
            return None
        out = {}
        for key in ("lr", *scheme.hyperparameters):
            v = st[f"closing_{key}"]
            out[key] = v.tolist() if isinstance(v, Tensor) else v
        return out

    @torch.no_grad()
    def finalize(self) -> None:
        """Apply the pending closing sub-steps (BAOAB: the closing half kick; OBABO: the
        closing :math:`B_{h/2}O_{h/2}`) with the current gradients, so the stored momenta
        become the splitting's boundary momenta. The next :meth:`step` then runs only the
        opening sub-steps, so positions are unaffected. Call it after computing the gradient
        at the current θ. (ABOBA keeps no closing sub-steps: its boundary lies half a drift
        back, see :meth:`boundary_positions`.)"""
        work = []
        for gi, group in enumerate(self.param_groups):
            scheme = get_scheme(group["scheme"])
            params = [p for p in group["params"]
                      if p.grad is not None and self.state[p].get("pending")]
            if not params or not scheme.splitting.closing:
                continue
            closing = self._closing_hp(self.state[params[0]], scheme)
            ops = closing_program(scheme, closing)
            w = self._work(gi, group, scheme, params, ops, closing)
            work.append(w)
        if work:
            self._execute(work)
        for w in work:
            for p in w.view.params:
                self.state[p]["pending"] = False

    @torch.no_grad()
    def boundary_positions(self) -> list[list[Tensor]]:
        r"""The splitting's step-boundary positions per group and parameter (new tensors).
        For every splitting but ABOBA they are the parameters themselves; ABOBA's parameters
        sit mid-drift (where its gradient is taken, SPEC §1) and its boundary positions are
        :math:`\theta - \tfrac h2 p`."""
        out = []
        for group in self.param_groups:
            row = []
            for p in group["params"]:
                st = self.state[p]
                back = st.get("boundary_drift")
                if back is None or "momentum" not in st:
                    row.append(p.detach().clone())
                    continue
                if isinstance(back, Tensor):
                    shape = [1] * p.dim()
                    shape[group["ensemble_dim"]] = back.numel()
                    row.append(p.detach() - back.to(p.dtype).reshape(shape) * st["momentum"])
                else:
                    row.append(p.detach() - back * st["momentum"])
            out.append(row)
        return out

    @torch.no_grad()
    def permute_state(self, param: Tensor, index: Tensor, dim: int) -> None:
        """Reorder every per-entry state of ``param`` (its momentum) along ``dim`` with
        ``index``, and, when ``dim`` is the ensemble axis, the per-member thermostat ξ too
        (one scalar per tensor and member) — call it together with the same permutation of
        the parameter itself (swap moves, replica exchange). ``index`` may also have the
        ensemble axis (shape ``(K, n)``) to permute each member differently when ``dim`` is
        not the ensemble axis."""
        group = next((g for g in self.param_groups if any(p is param for p in g["params"])),
                     None)
        if group is None:
            raise ValueError(f"permute_state: a parameter of shape {tuple(param.shape)} is "
                             "not in this optimizer")
        if param not in self.state:
            return
        edim = group["ensemble_dim"]
        for key, value in self.state[param].items():
            if not isinstance(value, Tensor):
                continue
            if value.shape == param.shape:
                value.copy_(permuted(value, index, dim, edim))
            elif key == "xi" and edim is not None and dim % param.dim() == edim:
                value.copy_(permuted(value, index, dim, edim))

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

    def _work(self, gi: int, group: dict, scheme: Scheme, params: list[Tensor],
              ops: list[tuple], hp: dict) -> _Work:
        layout, _ = self._layout()
        edim = group["ensemble_dim"]
        view = GroupView([], [], [], [], [], [], [])
        offsets: list[list[int]] = [[] for _ in range(scheme.draws)]
        index = {id(p): i for i, p in enumerate(group["params"])}
        for p in params:
            st = self.state[p]
            name = self._names.get(id(p), f"a parameter of shape {tuple(p.shape)}")
            if p.grad.shape != p.shape:
                raise ValueError(f"{type(self).__name__}: the gradient of {name} has shape "
                                 f"{tuple(p.grad.shape)}")
            view.params.append(p)
            view.grads.append(p.grad)
            if scheme.momentum:
                m = st["momentum"]
                if m.shape != p.shape or m.dtype != p.dtype or m.device != p.device:
                    raise ValueError(
                        f"{type(self).__name__}: the momentum of {name} has shape "
                        f"{tuple(m.shape)} ({m.dtype}, {m.device}) but the parameter is "
                        f"{p.dtype} on {p.device}: was the state loaded from another model "
                        "or the parameter resized?")
                view.momenta.append(m)
            if scheme.thermostat:
                xi = st["xi"]
                if xi.numel() != (p.shape[edim] if edim is not None else 1):
                    raise ValueError(f"{type(self).__name__}: the thermostat of {name} has "
                                     f"shape {tuple(xi.shape)}")
                view.xis.append(xi)
            view.counts.append(p.numel() // self.members)
            view.ensemble_dims.append(edim)
            view.names.append(name)
            for j in range(scheme.draws):
                offsets[j].append(layout[gi][j][index[id(p)]])
        use_fused = (self.foreach and self._noise.rng == "philox"
                     and fused.supports(view, self.members))
        packed = None
        if use_fused:
            key = ("packed", id(ops))
            hit = self._program_cache.get(key)
            if hit is not None and hit[0] is ops:
                packed = hit[1]
            else:
                packed = fused.pack_program(ops, self.members)
                if len(self._program_cache) > 256:
                    self._program_cache.clear()
                self._program_cache[key] = (ops, packed)
        return _Work(gi, group, scheme, view, hp, ops, packed, offsets, use_fused)

    def _program(self, scheme: Scheme, closing: dict | None, hp: dict) -> list[tuple]:
        key = (scheme.name, None if closing is None else
               tuple((k, _frozen_key(v)) for k, v in closing.items()),
               tuple((k, _frozen_key(v)) for k, v in hp.items()))
        hit = self._program_cache.get(key)
        if hit is None:
            if len(self._program_cache) > 256:
                self._program_cache.clear()
            hit = self._program_cache[key] = (program(scheme, closing, hp),)
        return hit[0]

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """One step of every group's scheme (see the class docstring)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = []
        for gi, group in enumerate(self.param_groups):
            scheme = get_scheme(group["scheme"])
            where = f"{type(self).__name__} param group {gi}"
            params = []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"{where}: sparse gradients are not supported")
                self._state(p, group, scheme)
                params.append(p)
            if not params:
                continue
            st = self.state[params[0]]
            members = self._members_of(group)
            hp = {"lr": _resolve("lr", group["lr"], st["step"], where, members)}
            for key in scheme.hyperparameters:
                hp[key] = _resolve(key, group[key], st["step"], where, members)
            ops = self._program(scheme, self._closing_hp(st, scheme), hp)
            work.append(self._work(gi, group, scheme, params, ops, hp))
        if not work:
            return loss
        self._execute(work)
        for w in work:
            s = w.scheme.splitting
            for p in w.view.params:
                st = self.state[p]
                st["step"] += 1
                if s.mode == "forward" and s.closing:
                    st["pending"] = True
                    for key, v in w.hp.items():
                        st[f"closing_{key}"] = torch.tensor(v, dtype=torch.float64) \
                            if isinstance(v, list) else v
                elif s.mode == "backward":
                    t = float(s.trailing_drift)
                    h = w.hp["lr"]
                    st["boundary_drift"] = (torch.tensor([t * x for x in h], dtype=torch.float64)
                                            if isinstance(h, list) else t * h)
        return loss

    # ------------------------------------------------------------------ the one dispatch point
    def _screen(self, work: list[_Work]) -> Tensor:
        """Per member, whether every gradient the step reads is finite."""
        ok = torch.ones(self.members, dtype=torch.bool)
        by_layout: list[Tensor] = []
        for w in work:
            if _edims(w.view):
                by_layout += w.view.grads
            else:
                for g, e in zip(w.view.grads, w.view.ensemble_dims, strict=True):
                    ok &= _finite_per_member(g, e, self.members)
        if by_layout:
            flags = fused.finite_members(by_layout, self.members)
            if flags is not None:
                ok &= torch.tensor(flags)
            else:
                for g in by_layout:
                    ok &= _finite_per_member(g, 0 if self._members else None, self.members)
        return ok

    def _execute(self, work: list[_Work]) -> None:
        """Run every group's program: check the gradients first (nothing is written when one
        is not finite and ``nan_policy="raise"``), then the fused kernel where it can take the
        group and the torch implementation elsewhere, then check the results."""
        policy = self.nan_policy
        self._nonfinite = torch.zeros(self.members, dtype=torch.bool)
        if policy != "ignore":
            bad = ~self._screen(work)
            if bad.any():
                self._nonfinite = bad
                if policy == "raise":
                    raise FloatingPointError(self._message(work, bad, "gradient") +
                                             "; nothing was changed (skip the batch or lower "
                                             "the step size)")
                if policy == "warn":
                    warnings.warn(self._message(work, bad, "gradient"), RuntimeWarning,
                                  stacklevel=3)
                if policy == "mask":
                    self.frozen_members |= bad
        frozen = self.frozen_members if bool(self.frozen_members.any()) else None
        rng = self._noise.rng
        noisy = any(op[3] >= 0 for w in work for op in w.ops)
        draw = self._noise.advance() if rng == "philox" and noisy else None
        buf = None
        if rng == "torch" and noisy:
            _, size = self._layout()
            buf = self._noise.draw(size, work[0].view.params[0].dtype).wait()
        after = torch.ones(self.members, dtype=torch.bool)
        for w in work:
            if w.fused:
                status, rows = fused.run(w.view, w.ops, w.packed, w.offsets, self._noise._keys,  # noqa: SLF001
                                         draw, self.members, frozen, False, self._kernel_cache)
                if status == 0:
                    after &= torch.tensor(rows)
                self.implementations[w.index] = "fused"
                continue
            saved = self._save_members(w, frozen)
            noise = self._noise_fn(w, buf, draw)
            run_program(w.ops, w.view, noise, self.foreach)
            self._restore_members(w, frozen, saved)
            if policy != "ignore":
                after &= self._finite_results(w)
            self.implementations[w.index] = "foreach" if self.foreach else "reference"
        if policy != "ignore" and not bool(after.all()):
            bad = ~after
            if frozen is not None:
                bad &= ~frozen
            if bad.any():
                self._nonfinite |= bad
                msg = self._message(work, bad, "result") + (
                    " although the gradient was finite (an overflow: the step size or the "
                    "temperature is too large); the state is non-finite")
                if policy == "raise":
                    raise FloatingPointError(msg)
                if policy == "warn":
                    warnings.warn(msg, RuntimeWarning, stacklevel=3)
                if policy == "mask":
                    self.frozen_members |= bad

    def _message(self, work: list[_Work], bad: Tensor, what: str) -> str:
        members = [i for i, b in enumerate(bad.tolist()) if b]
        name, scheme = "a parameter", "?"
        for w in work:
            for p, g, e in zip(w.view.params, w.view.grads, w.view.ensemble_dims, strict=True):
                t = g if what == "gradient" else p
                if not bool(torch.isfinite(t).all()):
                    name, scheme = self._names.get(id(p), name), w.scheme.name
                    break
            else:
                continue
            break
        step = self.state[work[0].view.params[0]]["step"]
        who = f" (ensemble members {members})" if self._members else ""
        return (f"{type(self).__name__}: step {step}: a non-finite {what} in {name}, "
                f"scheme {scheme!r}{who}")

    def _noise_fn(self, w: _Work, buf: Tensor | None, draw: int | None):
        if buf is not None:
            views = self._noise_views(buf, w)
            return lambda j: views[j]
        keys = self._noise._keys  # noqa: SLF001 - the optimizer owns its noise source

        def noise(j: int) -> list[Tensor]:
            out = []
            for p, off, e in zip(w.view.params, w.offsets[j], w.view.ensemble_dims, strict=True):
                z = torch.empty(self.members, p.numel() // self.members, dtype=p.dtype,
                                device=p.device)
                philox_normal_(z, keys, draw, off)
                out.append(member_view(z, p.shape, e))
            return out
        return noise

    def _noise_views(self, buf: Tensor, w: _Work) -> list[list[Tensor]]:
        """Views of ``buf`` holding each draw's noise for each tensor of ``w`` (cached: the
        buffer is reused step after step)."""
        key = (id(buf), tuple(id(p) for p in w.view.params), tuple(map(tuple, w.offsets)))
        hit = self._view_cache.get(key)
        if hit is not None and hit[0] is buf:
            return hit[1]
        if len(self._view_cache) > 64:
            self._view_cache.clear()
        views = [[member_view(buf[:, off : off + p.numel() // self.members], p.shape, e)
                  for off, p, e in zip(offs, w.view.params, w.view.ensemble_dims, strict=True)]
                 for offs in w.offsets]
        self._view_cache[key] = (buf, views)
        return views

    def _save_members(self, w: _Work, frozen: Tensor | None) -> list | None:
        """Copies of the frozen members' slices of the group's state (restored after the
        torch implementation ran over the whole tensors)."""
        if frozen is None:
            return None
        idx = frozen.nonzero().flatten()
        edims = w.view.ensemble_dims
        tensors = [*zip(w.view.params, edims), *zip(w.view.momenta, edims),
                   *zip(w.view.xis, edims)]
        out = []
        for t, e in tensors:
            if e is None:
                out.append((t, None, None, t.clone()))
            else:
                i = idx.to(t.device)
                out.append((t, e, i, t.index_select(e, i)))
        return out

    @staticmethod
    def _restore_members(w: _Work, frozen: Tensor | None, saved: list | None) -> None:
        for t, e, i, values in saved or ():
            if e is None:
                t.copy_(values)
            else:
                t.index_copy_(e, i, values)

    def _finite_results(self, w: _Work) -> Tensor:
        ok = torch.ones(self.members, dtype=torch.bool)
        for t, e in zip([*w.view.params, *w.view.momenta, *w.view.xis],
                        [*w.view.ensemble_dims] * 3, strict=False):
            ok &= _finite_per_member(t, e, self.members)
        return ok

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["noise"] = self._noise.state_dict()
        sd["frozen_members"] = self.frozen_members.clone()
        sd["implementation"] = list(self.implementations)
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state saved by an optimizer of the same schemes and shapes (ValueError
        naming the group or parameter otherwise)."""
        state_dict = dict(state_dict)
        noise = state_dict.pop("noise", None)
        frozen = state_dict.pop("frozen_members", None)
        state_dict.pop("implementation", None)
        self._check_loadable(state_dict)
        super().load_state_dict(state_dict)
        if noise is not None:
            self._noise.load_state_dict(noise)
        if frozen is not None:
            self.frozen_members = frozen.clone().to(torch.bool)
        self._layout_cache = None
        self._view_cache.clear()
        self._kernel_cache.clear()

    def _check_loadable(self, sd: dict) -> None:
        name = type(self).__name__
        groups = sd.get("param_groups", [])
        if len(groups) != len(self.param_groups):
            raise ValueError(f"{name}: the state has {len(groups)} parameter groups, this "
                             f"optimizer {len(self.param_groups)}")
        for gi, (saved, ours) in enumerate(zip(groups, self.param_groups, strict=True)):
            if saved.get("scheme", "langevin") != ours["scheme"]:
                raise ValueError(
                    f"{name}: param group {gi} runs scheme {ours['scheme']!r} but the state was "
                    f"saved by scheme {saved.get('scheme')!r}: build the optimizer the state "
                    "came from")
            if len(saved["params"]) != len(ours["params"]):
                raise ValueError(f"{name}: param group {gi} has {len(ours['params'])} "
                                 f"parameters, the state {len(saved['params'])}")
            scheme = get_scheme(ours["scheme"])
            for pid, p in zip(saved["params"], ours["params"], strict=True):
                st = sd["state"].get(pid)
                if not st:
                    continue
                where = self._names.get(id(p), f"a parameter of shape {tuple(p.shape)}")
                if scheme.momentum and "momentum" not in st:
                    raise ValueError(f"{name}: the state of {where} has no momentum")
                if "pending" not in st:
                    raise ValueError(f"{name}: the state of {where} was saved by an older "
                                     "thermotrain (no 'pending' entry)")
                m = st.get("momentum")
                if m is not None and tuple(m.shape) != tuple(p.shape):
                    raise ValueError(f"{name}: the saved momentum of {where} has shape "
                                     f"{tuple(m.shape)}")
                xi = st.get("xi")
                edim = ours["ensemble_dim"]
                if scheme.thermostat and (xi is None or xi.numel() != (
                        p.shape[edim] if edim is not None else 1)):
                    raise ValueError(f"{name}: the saved thermostat of {where} does not fit")

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}(members={self.members}, seeds={self.seeds[:4]}"
                 f"{'...' if self.members > 4 else ''})"]
        for i, g in enumerate(self.param_groups):
            scheme = get_scheme(g["scheme"])
            hps = ", ".join(f"{k}={g[k]}" for k in ("lr", *scheme.hyperparameters))
            n = sum(p.numel() for p in g["params"])
            lines.append(f"  group {i}: {scheme.name} ({n} entries) {hps}")
        return "\n".join(lines)


def _finite_per_member(t: Tensor, edim: int | None, members: int) -> Tensor:
    """Bool ``(K,)``: whether member k's entries of ``t`` are all finite (a sum per member
    screens; a non-finite sum is confirmed entry by entry, since a sum can overflow)."""
    if edim is None or t.dim() == 0:
        s = t.sum()
        ok = bool(torch.isfinite(s)) or bool(torch.isfinite(t).all())
        return torch.full((members,), ok, dtype=torch.bool)
    dims = [i for i in range(t.dim()) if i != edim]
    s = t.sum(dim=dims) if dims else t
    ok = torch.isfinite(s).cpu()
    if not bool(ok.all()):
        ok = torch.isfinite(t).all(dim=dims).cpu() if dims else torch.isfinite(t).cpu()
    return ok.reshape(-1)


def permuted(t: Tensor, index: Tensor, dim: int, ensemble_dim: int | None) -> Tensor:
    """``t`` reordered along ``dim`` by ``index`` (1-D), or by a per-member ``(K, n)`` index
    when ``dim`` is not ``ensemble_dim``."""
    index = index.to(t.device)
    if index.dim() == 1:
        return t.index_select(dim, index)
    if ensemble_dim is None:
        raise ValueError("a 2-D index (one permutation per member) needs a tensor with an "
                         "ensemble axis")
    if index.dim() != 2 or index.shape[0] != t.shape[ensemble_dim]:
        raise ValueError(f"a per-member index must have shape (K={t.shape[ensemble_dim]}, n), "
                         f"got {tuple(index.shape)}")
    shape = [1] * t.dim()
    shape[ensemble_dim] = t.shape[ensemble_dim]
    shape[dim] = index.shape[1]
    idx = index.reshape(shape).expand(
        [t.shape[i] if i != dim else index.shape[1] for i in range(t.dim())])
    return torch.gather(t, dim, idx)
