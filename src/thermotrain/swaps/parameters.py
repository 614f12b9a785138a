r"""Parameter swaps: Monte Carlo moves that permute network weights (docs/science.md §9,
docs/swaps.md).

A move exchanges entries of a layer's weights (or of two layers) for every ensemble member
at once, each member drawing its own positions. With :math:`v_k` member k's concatenated
entries of the touched tensors, a move is a permutation :math:`v_k \leftarrow v_k[\pi_k]`,
applied with the same :math:`\pi_k` to every per-entry optimizer state tensor (momenta,
Adam's moments): the pair (θ, p) moves together, so the sampler's dynamics continue from the
swapped configuration.

Kinds (per member, the weight :math:`W` of a layer seen as ``(out, m)``, conv filters
flattened):

============== ===========================================================================
``rows``        two rows :math:`W_{i\cdot} \leftrightarrow W_{j\cdot}` (the poster's
                "all-column swap")
``columns``     two columns :math:`W_{\cdot a} \leftrightarrow W_{\cdot b}`
``in-row``      two entries of one row, :math:`W_{ia} \leftrightarrow W_{ib}`
``in-column``   two entries of one column, :math:`W_{ia} \leftrightarrow W_{ja}`
``mixed``       random entries of :math:`W` (``pairs`` disjoint transpositions)
``units``       hidden units whole: row :math:`i` of :math:`W_\ell`, :math:`b_{\ell,i}` and the
                inputs of unit :math:`i` in layer :math:`\ell+1` with those of unit :math:`j` —
                an exact symmetry of the network (the loss does not change) [ours, docs/science.md
                §9]
``bias``        two bias entries of the layer
``bias-weight`` a bias entry with a weight entry of the same layer (mixing biases and weights)
``inter-layer`` a weight entry of layer ``a`` with one of layer ``b`` (``layer=(a, b)``)
============== ===========================================================================

Acceptance (docs/science.md §9, our rules): ``"always"`` (the poster), ``"greedy"`` (keep a member's
move only if its energy does not rise: :math:`\Delta E_k \le 0`, the T = 0 limit), or
``"metropolis"``: keep it with probability :math:`\min(1, e^{-\Delta E_k/\tau_k})` at the
sampler's temperature, with the energy the sampler samples — the full-batch mean loss or a
fixed, named subset (``subset=n``), never a fresh minibatch. Rejected members get the
inverse permutation, which restores them bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..training.hooks import Hook
from ._state import (
    check_choice,
    flat,
    make_generator,
    member_count,
    model_layers,
    permute_entries,
    permute_optimizer_state,
    set_generator_state,
)

__all__ = ["ParameterSwap", "Permutation", "KINDS", "ACCEPTANCES"]

KINDS = ("rows", "columns", "in-row", "in-column", "mixed", "units", "bias", "bias-weight",
         "inter-layer")
ACCEPTANCES = ("always", "greedy", "metropolis")
Energy = Callable[[], Tensor]


@dataclass
class Permutation:
    """A proposed move: member k's concatenated entries of ``tensors`` become
    ``v_k[perm[k]]``. :meth:`apply` does it (with the optimizer state), :meth:`inverse` is the
    move that undoes it exactly."""

    tensors: list[Tensor]
    perm: Tensor
    members: int

    def apply(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        permute_entries(self.tensors, self.perm, self.members)
        permute_optimizer_state(optimizer, self.tensors, self.perm, self.members)

    def inverse(self) -> Permutation:
        return Permutation(self.tensors, self.perm.argsort(dim=1), self.members)

    def only(self, members: Tensor) -> Permutation:
        """The same move for the members where ``members`` (K,) is true, identity elsewhere."""
        ident = torch.arange(self.perm.shape[1], device=self.perm.device).expand_as(self.perm)
        return Permutation(self.tensors, torch.where(members[:, None].to(self.perm.device),
                                                     self.perm, ident), self.members)


def _transpositions(n: int, a: Tensor, b: Tensor) -> Tensor:
    """``(K, n)`` permutation exchanging positions ``a[k, i]`` ↔ ``b[k, i]`` (all distinct)."""
    k = a.shape[0]
    perm = torch.arange(n, device=a.device).repeat(k, 1)
    a, b = a.reshape(k, -1), b.reshape(k, -1)
    perm.scatter_(1, a, b)
    perm.scatter_(1, b, a)
    return perm


class ParameterSwap(Hook):
    r"""Swap moves on a model's parameters, in a user's loop (:meth:`apply`) or as a loop hook
    (every ``every`` steps, after the optimizer step).

    Args:
        model: a thermotrain model (ensemble: parameters ``(K, ...)``) or any ``nn.Module``
            (one member).
        kind: one of :data:`KINDS` (module docstring).
        layer: index into the model's layers (:meth:`~thermotrain.models.MLP.layer_modules`,
            negative from the end); ``(a, b)`` for ``"inter-layer"``. ``"units"`` needs a
            following layer.
        every: steps between moves when used as a hook.
        acceptance: ``"always"``, ``"greedy"`` or ``"metropolis"``.
        temperature: τ of the Metropolis test: a float or a ``(K,)`` tensor; ``None`` takes the
            sampler's (the ``temperature`` of the optimizer's group holding the weight).
        energy: ``energy() -> (K,)`` per-member energies of the current parameters (full
            batch or a fixed subset). As a hook it defaults to the loop's
            ``state.energy`` on ``subset`` training points.
        subset: as a hook without ``energy``: size of the fixed random subset of the training
            set the energy is computed on (drawn once with ``seed``); ``None`` = full set.
        pairs: transpositions per move (rows, columns, units: distinct pairs of rows/…).
        seed: seed of the move's own generator (member k's draws are row k of each draw).
        name: hook name (checkpoint key, metric prefix).

    Example:
        >>> import torch, thermotrain as tt
        >>> from thermotrain.models import MLP, ensemble_loss
        >>> net = MLP([2, 16, 1], ensemble=4, seed=0)
        >>> x, y = torch.randn(64, 2), torch.randint(0, 2, (64,))
        >>> move = tt.swaps.ParameterSwap(net, kind="rows", layer=0, acceptance="metropolis",
        ...     temperature=1e-3, energy=lambda: ensemble_loss(net(x), y), seed=0)
        >>> accepted = move.apply()          # (4,) bool, one entry per member
    """

    def __init__(self, model: nn.Module, kind: str = "rows", layer: int | Sequence[int] = 0,
                 *, every: int = 1, acceptance: str = "always",
                 temperature: float | Tensor | None = None, energy: Energy | None = None,
                 subset: int | None = None, pairs: int = 1, seed: int = 0,
                 name: str | None = None):
        self.model = model
        self.kind = check_choice("kind", kind, KINDS)
        self.acceptance = check_choice("acceptance", acceptance, ACCEPTANCES)
        for key, value in (("every", every), ("pairs", pairs)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be an int >= 1, got {value!r}")
        if subset is not None and (isinstance(subset, bool) or not isinstance(subset, int)
                                   or subset < 1):
            raise ValueError(f"subset must be None (full set) or an int >= 1, got {subset!r}")
        if temperature is not None:
            t = torch.as_tensor(temperature, dtype=torch.float64)
            if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
                raise ValueError(f"temperature must be >= 0 and finite, got {temperature!r}")
        self.every, self.pairs, self.subset = every, pairs, subset
        self.temperature, self.energy = temperature, energy
        self.members = member_count(model)
        self._ensemble = getattr(model, "ensemble_size", None) is not None
        self._layers = model_layers(model)
        self.layer = self._check_layer(layer)
        self.name = name or f"swap_{self.kind}_{'_'.join(map(str, self.layer))}"
        self._tensors = self._touched()
        device = self._tensors[0].device
        self.generator = make_generator(seed, device)
        self.proposed = 0
        self.accepted = torch.zeros(self.members, dtype=torch.int64)
        self._subset_index: Tensor | None = None
        self.last_delta = torch.full((self.members,), float("nan"), dtype=torch.float64)

    # ------------------------------------------------------------------ set-up
    def _check_layer(self, layer: object) -> tuple[int, ...]:
        n = len(self._layers)
        want = 2 if self.kind == "inter-layer" else 1
        items = (layer,) if isinstance(layer, int) and not isinstance(layer, bool) else layer
        if not isinstance(items, Sequence) or len(items) != want or not all(
                isinstance(i, int) and not isinstance(i, bool) and -n <= i < n for i in items):
            shape = "a pair (a, b) of layer indices" if want == 2 else "a layer index"
            raise ValueError(f"layer for kind {self.kind!r} must be {shape} in [-{n}, {n}), "
                             f"got {layer!r}")
        out = tuple(i % n for i in items)
        if want == 2 and out[0] == out[1]:
            raise ValueError(f"inter-layer swaps need two different layers, got {layer!r}")
        if self.kind == "units" and out[0] == n - 1:
            raise ValueError(f"kind 'units' swaps hidden units: layer {layer!r} is the last "
                             "layer (no following layer)")
        return out

    def _weight(self, i: int) -> Tensor:
        w = getattr(self._layers[i], "weight", None)
        if not isinstance(w, Tensor):
            raise ValueError(f"layer {i} ({type(self._layers[i]).__name__}) has no weight")
        return w

    def _bias(self, i: int) -> Tensor:
        b = getattr(self._layers[i], "bias", None)
        if not isinstance(b, Tensor):
            raise ValueError(f"kind {self.kind!r} needs a bias; layer {i} has none")
        return b

    def _shape(self, w: Tensor) -> tuple[int, int]:
        """Per-member ``(out, m)`` of a weight."""
        per = w.shape[1:] if self._ensemble else w.shape
        out = int(per[0])
        return out, int(torch.Size(per[1:]).numel())

    def _touched(self) -> list[Tensor]:
        first = self.layer[0]
        if self.kind == "units":
            w, b, nxt = self._weight(first), self._bias(first), self._weight(first + 1)
            out, _ = self._shape(w)
            n_out, m_next = self._shape(nxt)
            if m_next % out:
                raise ValueError(f"layer {first + 1} takes {m_next} inputs per output, not a "
                                 f"multiple of layer {first}'s {out} units")
            return [w, b, nxt]
        if self.kind == "bias":
            return [self._bias(first)]
        if self.kind == "bias-weight":
            return [self._weight(first), self._bias(first)]
        if self.kind == "inter-layer":
            return [self._weight(first), self._weight(self.layer[1])]
        out, m = self._shape(self._weight(first))
        need = {"rows": (2 * self.pairs, 1), "columns": (1, 2 * self.pairs),
                "in-row": (self.pairs, 2), "in-column": (2, self.pairs),
                "mixed": (1, 1)}[self.kind]
        if out < need[0] or m < need[1] or (self.kind == "mixed" and out * m < 2 * self.pairs):
            raise ValueError(f"layer {first}'s weight ({out}x{m} per member) is too small for "
                             f"{self.pairs} {self.kind!r} pair(s)")
        return [self._weight(first)]

    # ------------------------------------------------------------------ proposals
    def _distinct(self, n: int, count: int, *lead: int) -> Tensor:
        """``(K, *lead, count)`` distinct indices in ``[0, n)`` per member (and lead index)."""
        u = torch.rand((self.members, *lead, n), generator=self.generator,
                       device=self.generator.device)
        return u.topk(count, dim=-1).indices

    def propose(self) -> Permutation:
        """Draw one move for every member (nothing is changed until ``.apply()``)."""
        k, p, ts = self.members, self.pairs, self._tensors
        sizes = [flat(t, k).shape[1] for t in ts]
        total = sum(sizes)
        if self.kind in ("rows", "columns", "in-row", "in-column", "mixed"):
            out, m = self._shape(ts[0])
            grid = torch.arange(out * m, device=self.generator.device).reshape(out, m)
            if self.kind == "rows":
                r = self._distinct(out, 2 * p)                        # (K, 2p)
                pos = grid[r]                                         # (K, 2p, m)
            elif self.kind == "columns":
                c = self._distinct(m, 2 * p)
                pos = grid.t()[c]                                     # (K, 2p, out)
            elif self.kind == "in-row":
                r = self._distinct(out, p)                            # (K, p)
                c = self._distinct(m, 2, p)                           # (K, p, 2)
                pos = (r[..., None] * m + c).transpose(1, 2)          # (K, 2, p)
                return Permutation(ts, _transpositions(total, pos[:, 0], pos[:, 1]), k)
            elif self.kind == "in-column":
                c = self._distinct(m, p)
                r = self._distinct(out, 2, p)
                pos = (r * m + c[..., None]).transpose(1, 2)
                return Permutation(ts, _transpositions(total, pos[:, 0], pos[:, 1]), k)
            else:
                e = self._distinct(out * m, 2 * p)
                return Permutation(ts, _transpositions(total, e[:, :p], e[:, p:]), k)
            return Permutation(ts, _transpositions(total, pos[:, :p], pos[:, p:]), k)
        if self.kind == "units":
            out, m = self._shape(ts[0])
            n_next, m_next = self._shape(ts[2])
            s = m_next // out
            u = self._distinct(out, 2 * p)                            # (K, 2p) units
            dev = u.device
            rows = u[..., None] * m + torch.arange(m, device=dev)     # (K, 2p, m)
            bias = sizes[0] + u[..., None]                            # (K, 2p, 1)
            o = torch.arange(n_next, device=dev)[:, None] * m_next
            inputs = (o + torch.arange(s, device=dev)).reshape(-1)    # (n_next*s,)
            nxt = sizes[0] + sizes[1] + u[..., None] * s + inputs     # (K, 2p, n_next*s)
            pos = torch.cat([rows, bias, nxt], dim=2)
            return Permutation(ts, _transpositions(total, pos[:, :p], pos[:, p:]), k)
        if self.kind == "bias":
            e = self._distinct(sizes[0], 2 * p)
            return Permutation(ts, _transpositions(total, e[:, :p], e[:, p:]), k)
        # bias-weight, inter-layer: p entries of the first tensor with p of the second
        a = self._distinct(sizes[0], p)
        b = sizes[0] + self._distinct(sizes[1], p)
        return Permutation(ts, _transpositions(total, a, b), k)

    # ------------------------------------------------------------------ the move
    def _temperature(self, optimizer: Any) -> Tensor:
        t = self.temperature
        if t is None:
            group = None
            if optimizer is not None:
                w = self._tensors[0]
                group = next((g for g in optimizer.param_groups
                              if any(q is w for q in g["params"])), None)
            if group is None or "temperature" not in group:
                raise ValueError("metropolis acceptance needs temperature= or an optimizer "
                                 "whose parameter group has a 'temperature'")
            t = group["temperature"]
            if callable(t):
                t = t(int(optimizer.state.get(self._tensors[0], {}).get("step", 0)))
        return torch.as_tensor(t, dtype=torch.float64).reshape(-1).expand(self.members)

    @torch.no_grad()
    def apply(self, optimizer: torch.optim.Optimizer | None = None,
              energy: Energy | None = None) -> Tensor:
        """Propose one move per member, accept it per member, and return the ``(K,)`` bool
        tensor of accepted members. The optimizer's per-entry state moves with the weights."""
        energy = energy or self.energy
        test = self.acceptance != "always"
        if test and energy is None:
            raise ValueError(f"acceptance={self.acceptance!r} needs an energy: pass energy=")
        before = energy().detach().double().reshape(-1) if test else None
        move = self.propose()
        u = torch.rand(self.members, generator=self.generator, device=self.generator.device)
        move.apply(optimizer)
        accept = torch.ones(self.members, dtype=torch.bool, device=u.device)
        if test:
            delta = energy().detach().double().reshape(-1) - before
            self.last_delta = delta
            accept = delta.to(u.device) <= 0
            if self.acceptance == "metropolis":
                temp = self._temperature(optimizer).to(u.device)
                hot = temp > 0
                ratio = torch.where(hot, -delta.to(u.device) / torch.where(hot, temp, 1.0), 0.0)
                accept = accept | (hot & (u.double().log() < ratio))
            if not bool(accept.all()):
                move.inverse().only(~accept).apply(optimizer)
        self.proposed += 1
        self.accepted += accept.to(self.accepted.device, torch.int64)
        return accept

    @property
    def acceptance_rate(self) -> Tensor:
        """``(K,)`` fraction of accepted moves so far (NaN before the first)."""
        if self.proposed == 0:
            return torch.full((self.members,), float("nan"))
        return self.accepted.double() / self.proposed

    # ------------------------------------------------------------------ as a hook
    def on_start(self, state: Any) -> None:
        if self.energy is None and self.acceptance != "always" and self.subset is not None \
                and self._subset_index is None:
            n = state.x_train.shape[0]
            if self.subset > n:
                raise ValueError(f"subset={self.subset} exceeds the {n} training points")
            self._subset_index = torch.randperm(n, generator=self.generator,
                                                device=self.generator.device)[:self.subset]

    def after_step(self, state: Any) -> None:
        if state.step % self.every:
            return
        energy = self.energy
        if energy is None and self.acceptance != "always":
            x, y = state.x_train, state.y_train
            if self._subset_index is not None:
                idx = self._subset_index.to(x.device)
                x, y = x[idx], y[idx]
            energy = lambda: state.energy(x, y)  # noqa: E731
        accept = self.apply(state.optimizer, energy)
        state.log(f"{self.name}/accepted", accept.double())
        if self.acceptance != "always":
            state.log(f"{self.name}/delta_energy", self.last_delta)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "proposed": self.proposed,
                "accepted": self.accepted.clone(), "subset": self._subset_index}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        set_generator_state(self.generator, state["generator"])
        self.proposed = int(state["proposed"])
        self.accepted = state["accepted"].clone()
        self._subset_index = state["subset"]
