r"""The kinetic temperature of a thermotrain sampler's boundary momenta, without
``finalize()`` (SPEC §2, §11; ``docs/thermo.md``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..training.hooks import Hook

__all__ = ["KineticTemperature", "kinetic_temperatures"]


def _check_every(every: object) -> int:
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be an int >= 1, got {every!r}")
    return every


def _along(k: Tensor, dim: int, edim: int | None) -> Tensor:
    """``(K,)`` values shaped to broadcast along the ensemble axis of a ``dim``-d tensor."""
    shape = [1] * dim
    if edim is not None:
        shape[edim] = -1
    return k.reshape(shape)


def _members_norm2(ts: list[Tensor], edim: int | None) -> Tensor:
    r"""Per member :math:`\sum t^2` over several tensors, ``(K,)`` (one cat, one norm)."""
    if edim is None:
        return torch.linalg.vector_norm(torch.cat([t.reshape(-1) for t in ts])).square().reshape(1)
    k = ts[0].shape[edim]
    flat = [t.reshape(k, -1) if edim == 0 else t.movedim(edim, 0).reshape(k, -1) for t in ts]
    return torch.linalg.vector_norm(torch.cat(flat, 1), dim=1).square_()


class KineticTemperature(Hook):
    r"""Log :math:`T_\mathrm{kin} = \lVert p\rVert^2/N` per group and member every ``every``
    steps (SPEC §11), with BAOAB's full-step (boundary) momenta. Needs a
    :class:`~thermotrain.PartitionedLangevin` optimizer; groups without momenta (SGLD) are
    skipped.

    The stored momenta lag the boundary ones by the pending closing sub-steps (SPEC §2). When
    those are kicks only — BAOAB, BAOA and the adaptive scheme: the closing
    :math:`B_{h/2}`, :math:`p \leftarrow p - k\,g` with :math:`k` = the closing fraction times
    the previous step's h (per member if h is) — the hook computes
    :math:`\lVert p - k\,\nabla L(\theta_n)\rVert^2` directly from the stored momenta and the
    step's gradient (in ``.grad`` at ``after_gradient``), without touching the optimizer
    state. Frozen members (``nan_policy="mask"``) get k = 0, as in ``finalize()``. Splittings
    whose closing sub-steps include noise (OBABO: :math:`B_{h/2}O_{h/2}`) cannot be
    evaluated without drawing it, so for them the hook calls ``optimizer.finalize()`` (the
    next step then runs only the opening sub-steps; positions are unchanged, the noise stream
    is not the one of an unmonitored run). ABOBA keeps no closing sub-steps: its stored
    momenta are the boundary ones.
    """

    def __init__(self, every: int = 10, name: str = "kinetic_temperature"):
        self.every = _check_every(every)
        self.name = name
        self._fracs: dict[tuple, tuple] = {}  # (closing kicks, momenta?) per scheme names
        self._frozen_key: tuple | None = None
        self._any_frozen = False
        self._indicators: dict[tuple, Tensor] = {}

    def on_start(self, state: Any) -> None:
        opt = state.optimizer
        if not (hasattr(opt, "finalize") and hasattr(opt, "kinetic_temperature")):
            raise TypeError(f"{self.name}: the optimizer {type(opt).__name__} has no momenta "
                            "(use a thermotrain sampler such as tt.BAOAB or tt.AdLaLa)")

    def after_gradient(self, state: Any, losses: Tensor) -> None:
        if state.step == 0 or state.step % self.every:
            return  # before the first step the momenta do not exist yet
        fast = self._table(state.optimizer)
        if fast is None:  # noisy closing sub-steps, per-member h, frozen members, no axis 0
            for g, temp in enumerate(kinetic_temperatures(state.optimizer)):
                if temp is not None:
                    state.log(f"{self.name}/group{g}", temp.reshape(-1) if temp.dim() else temp)
            return
        groups, table = fast
        columns = {f"{self.name}/group{g}": j for j, g in enumerate(groups)}
        log_table = getattr(state, "log_table", None)
        if log_table is not None:
            log_table(columns, table)
        else:
            for metric, j in columns.items():
                state.log(metric, table[:, j])

    @torch.no_grad()
    def _table(self, opt: Any) -> tuple[list[int], Tensor] | None:
        r""":func:`kinetic_temperatures` of the common case — kick-only closing sub-steps,
        one h per group, no frozen member, ensemble axis 0 — as one ``(K, G')`` table of
        the groups with momenta, in a few tensor operations: the kicked momenta
        :math:`p - k\,g` of all groups as one ``(K, P)`` matrix, squared, times the
        ``(P, G')`` group indicator divided by the groups' sizes. ``None`` otherwise."""
        from ..samplers.splittings import get_scheme

        names = tuple(g["scheme"] for g in opt.param_groups)
        cached = self._fracs.get(names)
        if cached is None:
            schemes = [get_scheme(n) for n in names]
            cached = self._fracs[names] = ([_closing_kick(s) if s.momentum else None
                                            for s in schemes], [s.momentum for s in schemes])
        fracs, momentum = cached
        frozen = getattr(opt, "frozen_members", None)
        if frozen is not None:
            key = (id(frozen), frozen._version)
            if self._frozen_key != key:
                self._frozen_key, self._any_frozen = key, bool(frozen.any())
            if self._any_frozen:
                return None
        k, tensors, groups, counts = opt.members, [], [], []
        for gi, (group, frac, mom) in enumerate(zip(opt.param_groups, fracs, momentum,
                                                    strict=True)):
            if not mom:
                continue
            if frac is None or group["ensemble_dim"] != 0:
                return None
            ms, gs, count, h = [], [], 0, None
            for p in group["params"]:
                st = opt.state[p]
                m = st.get("momentum")
                if m is None:
                    continue
                count += m.numel() // k
                if frac and st.get("pending") and p.grad is not None:
                    ms.append(m)
                    gs.append(p.grad)
                    h = st["closing_lr"]
                else:
                    tensors.append(m)
            if not count:
                continue
            if ms:
                if isinstance(h, Tensor):
                    return None
                tensors.extend(torch._foreach_add(ms, gs, alpha=-frac * float(h)))
            groups.append(gi)
            counts.append(count)
        if not groups:
            return [], torch.empty(k, 0)
        flat = torch.cat([t.reshape(k, -1) for t in tensors], 1)
        # columns are grouped (group by group), so only the group sizes matter
        ind = self._indicators.get(tuple(counts))
        if ind is None or ind.dtype != flat.dtype or ind.device != flat.device:
            ind = torch.zeros(len(counts), sum(counts), dtype=flat.dtype, device=flat.device)
            col = 0
            for j, c in enumerate(counts):
                ind[j, col:col + c] = 1.0 / c
                col += c
            self._indicators[tuple(counts)] = ind
        return groups, torch.mm(ind, flat.square_().T).T


def _closing_kick(scheme: Any) -> float | None:
    """The closing sub-steps' total kick as a fraction of h when they are kicks only
    (0.0 when there are none), else ``None``."""
    closing = scheme.splitting.closing
    if any(c != "B" for c, _ in closing):
        return None
    return float(sum(f for _, f in closing))


@torch.no_grad()
def kinetic_temperatures(opt: Any) -> list[Tensor | None]:
    r"""Per group, the boundary-momentum kinetic temperature
    :math:`\lVert p - k\,g\rVert^2/N` (``(K,)`` with an ensemble axis, else a scalar;
    ``None`` for groups without momenta), with the pending closing kick k applied on the fly
    to the stored momenta p and the current gradients g (see :class:`KineticTemperature`);
    equals ``opt.kinetic_temperature()`` after ``opt.finalize()``, without changing ``opt``.
    Calls ``opt.finalize()`` first if a group's closing sub-steps are not kicks only."""
    from ..samplers.splittings import get_scheme

    schemes = [get_scheme(g["scheme"]) for g in opt.param_groups]
    fracs = [_closing_kick(s) if s.momentum else None for s in schemes]
    if any(s.momentum and f is None for s, f in zip(schemes, fracs, strict=True)):
        opt.finalize()  # noisy closing sub-steps (OBABO): no way round drawing them
    frozen = getattr(opt, "frozen_members", None)
    masked = frozen is not None and bool(frozen.any())
    out: list[Tensor | None] = []
    for group, frac in zip(opt.param_groups, fracs, strict=True):
        edim = group["ensemble_dim"]
        ms, gs, plain, count, h = [], [], [], 0, None
        for p in group["params"]:
            st = opt.state[p]
            m = st.get("momentum")
            if m is None:
                continue
            count += m.numel() // opt.members
            if frac and st.get("pending") and p.grad is not None:
                ms.append(m)
                gs.append(p.grad)
                h = st["closing_lr"]  # one value (or (K,) tensor) per group
            else:
                plain.append(m)
        if not count:
            out.append(None)
            continue
        if ms and (isinstance(h, Tensor) or masked):
            k = torch.as_tensor(h, dtype=torch.float64).expand(opt.members) * frac
            if masked:
                k = torch.where(frozen, 0.0, k)
            k = k.to(ms[0])
            ms = [m - _along(k, m.dim(), edim) * g for m, g in zip(ms, gs, strict=True)]
        elif ms:
            ms = torch._foreach_add(ms, gs, alpha=-frac * float(h))
        temp = _members_norm2([*ms, *plain], edim) / count
        out.append(temp if edim is not None else temp.squeeze(0))
    return out
