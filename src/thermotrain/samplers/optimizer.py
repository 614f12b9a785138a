r"""The optimizer shell: :class:`PartitionedLangevin`, a :class:`torch.optim.Optimizer` whose
parameter groups each carry a scheme (docs/science.md §2–§3).

The class only gathers tensors, keeps lazily created per-parameter state (momenta ``p``,
thermostat ``ξ``, step counts, the pending closing sub-steps), owns the noise source, and
runs each group's step program (:func:`.splittings.program`) through one dispatch point
(:meth:`PartitionedLangevin._execute`): the fused C kernel (:mod:`.fused`) where it can take
the group, else the torch implementation (:mod:`.reference`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from . import engine
from .guard import permuted
from .hyper import Hyperparameter, check_value, resolve
from .noise import NoiseSource, normalize_seeds
from .persistence import check_loadable
from .reference import sum_squares
from .splittings import Scheme, closing_program, get_scheme

_INF = float("inf")

__all__ = ["PartitionedLangevin", "Hyperparameter"]

NAN_POLICIES = ("raise", "warn", "ignore", "mask")


class PartitionedLangevin(torch.optim.Optimizer):
    r"""Partitioned Langevin-type integrator: each parameter group has its own dynamics.

    Every group is advanced by the one-gradient loop of docs/science.md §2: its scheme's splitting
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
        self._work_cache: dict[int, tuple] = {}
        self._screen_cache: tuple | None = None
        self._frozen_cache: tuple | None = None
        self._names = {id(p): f"param {j} of group {i} (shape {tuple(p.shape)})"
                       for i, g in enumerate(self.param_groups) for j, p in enumerate(g["params"])}
        #: members frozen by ``nan_policy="mask"`` (bool, shape (K,))
        self.frozen_members = torch.zeros(self.members, dtype=torch.bool)
        self._no_bad = torch.zeros(self.members, dtype=torch.bool)
        self._nonfinite = self._no_bad
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
                checked = check_value(key, param_group[key], where,
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
                xi0 = resolve("xi_init", group["xi_init"], 0, "xi_init", self._members_of(group))
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
        for key, name in zip(scheme.step_keys, scheme.closing_keys, strict=True):
            v = st[name]
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
            states = [self.state[p] for p in params]
            closing = self._closing_hp(states[0], scheme)
            ops = closing_program(scheme, closing)
            work.append(engine.group_work(self, gi, group, scheme, params, states, ops, closing))
        if work:
            engine.execute(self, work)
        for w in work:
            for p in w.view.params:
                self.state[p]["pending"] = False

    @torch.no_grad()
    def boundary_positions(self) -> list[list[Tensor]]:
        r"""The splitting's step-boundary positions per group and parameter (new tensors).
        For every splitting but ABOBA they are the parameters themselves; ABOBA's parameters
        sit mid-drift (where its gradient is taken, docs/science.md §1) and its boundary positions
        are
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
                    row.append(p.detach() - back.to(p.dtype).to(p.device).reshape(shape)
                               * st["momentum"])
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
    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """One step of every group's scheme (see the class docstring)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work, all_states = [], []
        for gi, group in enumerate(self.param_groups):
            scheme = get_scheme(group["scheme"])
            params, states = [], []
            state = self.state
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                if g.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} param group {gi}: sparse "
                                       "gradients are not supported")
                st = state.get(p)
                states.append(st if st else self._state(p, group, scheme))
                params.append(p)
            if not params:
                continue
            st = states[0]
            hp = self._resolve_hp(group, gi, scheme, st["step"])
            ops = engine.step_program(self, scheme, self._closing_hp(st, scheme), hp)
            work.append(engine.group_work(self, gi, group, scheme, params, states, ops, hp))
            all_states.append(states)
        if not work:
            return loss
        engine.execute(self, work)
        for w, states in zip(work, all_states, strict=True):
            update = self._after_step(w)
            for st in states:
                st["step"] += 1
                st.update(update)
        return loss

    def _resolve_hp(self, group: dict, gi: int, scheme: Scheme, step: int) -> dict:
        """The group's hyperparameters at ``step``: floats, or lists of K floats (checked;
        plain non-negative finite floats, the common case, pass straight through)."""
        hp = {}
        where = None
        for key in scheme.step_keys:
            v = group[key]
            if type(v) is float and v >= 0 and v != _INF:  # NaN fails v >= 0
                hp[key] = v
                continue
            if where is None:
                where = f"{type(self).__name__} param group {gi}"
            hp[key] = resolve(key, v, step, where, self._members_of(group))
        return hp

    @staticmethod
    def _after_step(w) -> dict[str, Any]:
        """The state entries a step leaves for the next one: the closing sub-steps' values
        (forward splittings) or the trailing drift to the boundary positions (backward)."""
        s = w.scheme.splitting
        update: dict[str, Any] = {}
        if s.mode == "forward" and s.closing:
            update["pending"] = True
            for key, name in zip(w.scheme.step_keys, w.scheme.closing_keys, strict=True):
                v = w.hp[key]
                update[name] = torch.tensor(v, dtype=torch.float64) if isinstance(v, list) else v
        elif s.mode == "backward":
            t, h = float(s.trailing_drift), w.hp["lr"]
            update["boundary_drift"] = (torch.tensor([t * x for x in h], dtype=torch.float64)
                                        if isinstance(h, list) else t * h)
        return update

    # ------------------------------------------------------------------ the one dispatch point
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
        check_loadable(self, state_dict)
        super().load_state_dict(state_dict)
        if noise is not None:
            self._noise.load_state_dict(noise)
        if frozen is not None:
            self.frozen_members = frozen.clone().to(torch.bool)
        self._layout_cache = None
        self._view_cache.clear()
        self._kernel_cache.clear()
        self._work_cache.clear()
        self._screen_cache = None

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}(members={self.members}, seeds={self.seeds[:4]}"
                 f"{'...' if self.members > 4 else ''})"]
        for i, g in enumerate(self.param_groups):
            scheme = get_scheme(g["scheme"])
            hps = ", ".join(f"{k}={g[k]}" for k in ("lr", *scheme.hyperparameters))
            n = sum(p.numel() for p in g["params"])
            lines.append(f"  group {i}: {scheme.name} ({n} entries) {hps}")
        return "\n".join(lines)


