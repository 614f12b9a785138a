r"""Replica exchange (parallel tempering) over the ensemble axis (docs/science.md §9,
docs/swaps.md).

K ensemble members are laid out as L independent ladders of R rungs at temperatures
:math:`\tau_{l,1} < \dots < \tau_{l,R}`; member k always runs at its own temperature
:math:`\tau_k` (a per-member hyperparameter of the sampler). Every ``every`` steps
neighbouring rungs :math:`(i, i+1)` of each ladder propose to exchange their
*configurations* — parameters and every per-member optimizer state tensor (momenta, the
thermostat ξ, Adam's moments; the samplers' momenta rescaled by √(τ_new/τ_old), Sugita &
Okamoto 1999, so they are thermal at their new temperature) — accepted with

.. math::
    \alpha = \min\Bigl(1, \exp\bigl[(\tfrac1{\tau_i} - \tfrac1{\tau_{i+1}})
             (U_i - U_{i+1})\bigr]\Bigr),

U the energy the sampler samples (the full-batch mean loss, or a fixed subset). Pairs
alternate between even (1-2, 3-4, …) and odd (2-3, 4-5, …) rungs (deterministic even-odd
scheme), so one round touches each member at most once. This keeps the product measure
:math:`\prod_k e^{-U(\theta_k)/\tau_k}` invariant: with an exact sampler at each rung every
rung samples its Boltzmann distribution exactly (tested on the 1-D double well).

With minibatch energies :math:`\tilde U` of variance :math:`\sigma^2` the test is biased;
``correction="deng"`` uses Deng et al.'s (ICML 2020, reSGHMC) unbiased version,
:math:`\exp[(\tfrac1{\tau_i} - \tfrac1{\tau_{i+1}})(\tilde U_i - \tilde U_{i+1}
- (\tfrac1{\tau_i} - \tfrac1{\tau_{i+1}})\sigma^2)]` (the energy then returns
``(U, σ²)``, σ² per member; the pair uses the mean of its two).

Diagnostics: acceptance per ladder and pair, and round trips — a configuration that goes
from the coldest rung to the hottest and back counts one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from ..samplers import permute_optimizer_state
from ..training.hooks import Hook
from ._state import check_choice, make_generator, permute_members, set_generator_state

__all__ = ["ReplicaExchange"]


class ReplicaExchange(Hook):
    r"""Replica exchange between the members of an ensemble.

    Args:
        optimizer: the ensemble's optimizer (its parameters and per-member state are
            exchanged), or an iterable of parameter tensors (no optimizer state).
        temperatures: ``(K,)`` (one ladder) or ``(L, R)``: ladder l's rungs, strictly
            increasing. Member ``members[l, r]`` runs at ``temperatures[l, r]``.
        energy: ``energy() -> (K,)`` per-member energies of the current parameters (with
            ``correction="deng"``: ``-> ((K,), (K,) variances)``). As a hook ``None`` means
            ``state.energy`` on the full training set.
        every: steps between exchange rounds (as a hook).
        seed: seed of the acceptance draws' own generator.
        correction: ``None`` or ``"deng"`` (see the module docstring).
        members: ``(L, R)`` member indices of the ladders (default ``arange(K)`` row-major).
        ensemble_dim: the ensemble axis of the parameters (thermotrain ensembles: 0).
        rescale_momenta: multiply the samplers' momenta a member receives by
            :math:`\sqrt{\tau_k/\tau_{\text{from}}}` (Sugita & Okamoto 1999), so the kinetic
            energy is thermal at the new temperature and the potential-only acceptance stays
            exact for the joint (θ, p) law. (The stored momenta lag by the pending half kick,
            docs/science.md §2, an O(h) difference.) Other state (ξ, Adam's moments) is moved as is.
        name: hook name.

    Example:
        >>> import torch, thermotrain as tt
        >>> theta = torch.zeros(8, 1)                  # 2 ladders x 4 rungs, one weight each
        >>> rex = tt.swaps.ReplicaExchange([theta], torch.tensor([[.1, .2, .4, .8]] * 2),
        ...                                energy=lambda: ((theta[:, 0]**2 - 1)**2), seed=0)
        >>> accepted = rex.step()                      # (2, 3) bool per ladder and pair
    """

    def __init__(self, optimizer: torch.optim.Optimizer | Iterable[Tensor],
                 temperatures: Tensor | Iterable[float], energy: Callable[[], Any] | None = None,
                 *, every: int = 1, seed: int = 0, correction: str | None = None,
                 members: Tensor | None = None, ensemble_dim: int = 0,
                 rescale_momenta: bool = True, name: str = "replica_exchange"):
        temps = torch.as_tensor(temperatures, dtype=torch.float64)
        if temps.dim() == 1:
            temps = temps[None]
        if temps.dim() != 2 or temps.shape[1] < 2:
            raise ValueError(f"temperatures must be (K,) or (L, R) with R >= 2 rungs, got shape "
                             f"{tuple(temps.shape)}")
        if not bool(torch.isfinite(temps).all()) or bool((temps <= 0).any()):
            raise ValueError("temperatures must be finite and > 0")
        if bool((temps.diff(dim=1) <= 0).any()):
            raise ValueError(f"each ladder's temperatures must be strictly increasing, got "
                             f"{temps.tolist()}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an int >= 1, got {every!r}")
        self.correction = None if correction is None else check_choice(
            "correction", correction, ("deng",))
        self.temperatures = temps
        n_lad, rungs = temps.shape
        k = n_lad * rungs
        if members is None:
            members = torch.arange(k).reshape(n_lad, rungs)
        members = torch.as_tensor(members, dtype=torch.int64)
        if members.shape != temps.shape or sorted(members.reshape(-1).tolist()) != list(range(k)):
            raise ValueError(f"members must be an (L, R) = {tuple(temps.shape)} arrangement of "
                             f"0..{k - 1}")
        self.members = members
        if isinstance(optimizer, torch.optim.Optimizer):
            self.optimizer: torch.optim.Optimizer | None = optimizer
            params = [p for g in optimizer.param_groups for p in g["params"]]
        else:
            self.optimizer, params = None, list(optimizer)
        for p in params:
            if not isinstance(p, Tensor) or p.dim() <= ensemble_dim or \
                    p.shape[ensemble_dim] != k:
                shape = tuple(p.shape) if isinstance(p, Tensor) else type(p).__name__
                raise ValueError(f"every parameter needs K = {k} members on axis "
                                 f"{ensemble_dim} (the ladder size), got {shape}")
        self.params, self.dim, self.size = params, ensemble_dim, k
        self.energy, self.every, self.name = energy, every, name
        self.rescale_momenta = bool(rescale_momenta)
        self.generator = make_generator(seed)
        self.rounds = 0
        self.attempts = torch.zeros(n_lad, rungs - 1, dtype=torch.int64)
        self.accepts = torch.zeros(n_lad, rungs - 1, dtype=torch.int64)
        self.walker = torch.arange(k)            # configuration id held by member k
        self.last_end = torch.full((k,), -1)     # per configuration: 0 coldest, 1 hottest
        self.round_trips = torch.zeros(n_lad, dtype=torch.int64)
        self._mark_ends()

    def _mark_ends(self) -> None:
        cold = self.walker[self.members[:, 0]]
        hot = self.walker[self.members[:, -1]]
        trip = self.last_end[cold] == 1
        self.round_trips += trip.to(torch.int64)
        self.last_end[cold] = 0
        self.last_end[hot] = torch.where(self.last_end[hot] == 0, 1, self.last_end[hot])

    def _rescale(self, order: Tensor) -> None:
        """p_k ← p_k·√(τ_k/τ_from) for the samplers' momenta (Sugita–Okamoto): the momenta a
        member receives are thermal at the sender's temperature."""
        temps = self.member_temperatures
        scale = (temps / temps[order]).sqrt()
        for p in self.params:
            m = self.optimizer.state.get(p, {}).get("momentum") if self.optimizer else None
            if isinstance(m, Tensor) and m.shape == p.shape:
                shape = [1] * m.dim()
                shape[self.dim] = self.size
                m.mul_(scale.to(m.device, m.dtype).reshape(shape))

    @property
    def member_temperatures(self) -> Tensor:
        """``(K,)``: member k's temperature (pass it to the sampler as its temperature)."""
        out = torch.empty(self.size, dtype=torch.float64)
        out[self.members.reshape(-1)] = self.temperatures.reshape(-1)
        return out

    @property
    def acceptance(self) -> Tensor:
        """``(L, R-1)`` acceptance rate of each neighbour pair (NaN before an attempt)."""
        return self.accepts.double() / self.attempts.double()

    @torch.no_grad()
    def step(self, energy: Callable[[], Any] | None = None) -> Tensor:
        """One exchange round; returns the ``(L, R-1)`` bool tensor of accepted exchanges
        (pairs not attempted this round are ``False``)."""
        energy = energy or self.energy
        if energy is None:
            raise ValueError("replica exchange needs an energy: pass energy=")
        out = energy()
        if self.correction == "deng":
            if not (isinstance(out, tuple) and len(out) == 2):
                raise ValueError("correction='deng' needs energy() -> (energies, variances)")
            u, var = (torch.as_tensor(t).detach().double().reshape(-1).cpu() for t in out)
        else:
            u, var = torch.as_tensor(out).detach().double().reshape(-1).cpu(), None
        if u.shape[0] != self.size:
            raise ValueError(f"energy() returned {u.shape[0]} values for {self.size} members")
        rungs = self.temperatures.shape[1]
        first = torch.arange(self.rounds % 2, rungs - 1, 2)     # lower rung of each pair
        lo, hi = self.members[:, first], self.members[:, first + 1]
        dbeta = 1 / self.temperatures[:, first] - 1 / self.temperatures[:, first + 1]
        log_alpha = dbeta * (u[lo] - u[hi])
        if var is not None:
            log_alpha = log_alpha - dbeta**2 * 0.5 * (var[lo] + var[hi])
        draw = torch.rand(log_alpha.shape, generator=self.generator, dtype=torch.float64)
        accept = draw.log() < log_alpha
        order = torch.arange(self.size)
        order[lo[accept]] = hi[accept]
        order[hi[accept]] = lo[accept]
        if bool(accept.any()):
            permute_members(self.params, order, self.dim)
            if self.optimizer is not None:
                for p in self.params:   # momenta, thermostats ξ, Adam's moments
                    permute_optimizer_state(self.optimizer, p, order.to(p.device), self.dim,
                                            ensemble_dim=self.dim)
                if self.rescale_momenta:
                    self._rescale(order)
            self.walker = self.walker[order]
        self.attempts[:, first] += 1
        self.accepts[:, first] += accept.to(torch.int64)
        self.rounds += 1
        self._mark_ends()
        result = torch.zeros(self.attempts.shape, dtype=torch.bool)
        result[:, first] = accept
        return result

    # ------------------------------------------------------------------ as a hook
    def after_step(self, state: Any) -> None:
        if state.step % self.every:
            return
        energy = self.energy or (lambda: state.energy(state.x_train, state.y_train))
        self.step(energy)
        state.log(f"{self.name}/round_trips", float(self.round_trips.sum()))

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "rounds": self.rounds,
                "attempts": self.attempts.clone(), "accepts": self.accepts.clone(),
                "walker": self.walker.clone(), "last_end": self.last_end.clone(),
                "round_trips": self.round_trips.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        set_generator_state(self.generator, state["generator"])
        self.rounds = int(state["rounds"])
        for key in ("attempts", "accepts", "walker", "last_end", "round_trips"):
            setattr(self, key, state[key].clone())
