r"""The layout of a configurational-temperature record (:mod:`.monitors`, SPEC §11): every
coordinate of an ensemble as one ``(K, P)`` matrix, Hutchinson's Rademacher probes in it
(drawn a bank of records at a time), and the per-group sums.

Member k's coordinates are row k (parameters with their ensemble axis ``edim`` moved first,
flattened, concatenated in group order, so group g owns the consecutive columns
``bounds[g]``). A record fills the work matrices :math:`W_0 = g\odot g` and
:math:`W_1 = v\odot\delta g` (``(2, K, P)``), and :meth:`RecordLayout.group_sums` gives
:math:`(\lVert\nabla_g L\rVert^2, \Delta_g L)` per group and member: a few tensor
operations per record whatever the number of parameters, groups and members. The fused
kernel's records (:func:`thermotrain.models.fused.fd_laplacian_sums`) skip the matrices and
return those sums directly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["RecordLayout", "optimizer_groups", "restore_grads"]

Groups = list[tuple[list[Tensor], int | None]]
#: probe draws are made for up to this many records at once (bounded by BANK_ELEMENTS)
BANK_RECORDS, BANK_ELEMENTS = 16, 2**18


class RecordLayout:
    r"""Buffers and views of one record (rebuilt when the parameters change: :meth:`key`).

    The probes are Rademacher vectors times ``scale`` (the estimator's 1/(2ε·probes) or
    1/(ε·probes), so :math:`W_1` needs no rescaling), drawn ``slots`` at a time (a bank of
    up to :data:`BANK_RECORDS` records), each bank from its own generator seeded by
    ``(seed, bank number)``: probe number r depends only on the seed, r and the bank size,
    and a run resumes from the count ``drawn``.

    Attributes:
        params, edims: the parameters in order and their ensemble axes.
        probe, views: the current probe ``(K, P)`` and its per-parameter copies (shaped like
            ``params``, contiguous; ``direction``: as a ``{parameter: copy}`` map), made
            from the bank's random ``bytes`` when first read (:meth:`slot_bytes`: the
            current probe's, as the fused kernel reads them); :meth:`next` moves on.
        row, columns: the length of a member's row, each parameter's first column.
        work: the work matrices ``W`` ``(2, K, P)`` of a record finished at once.
        result: ``[‖∇_g L‖², Δ_g L]`` ``(2, K, G)`` of a fused kernel's record finished
            at once; group_of: ``{parameter: g}``.
        bounds: group g's columns ``[a, b)``; groups: their number.
        theta: buffers θ is saved in while it is perturbed.
    """

    def __init__(self, groups: Groups, members: int, *, seed: int, probes: int = 1,
                 scale: float = 1.0, name: str = "configurational_temperature"):
        params = [p for ps, _ in groups for p in ps]
        edims = [e for ps, e in groups for _ in ps]
        k = members
        for p, e in zip(params, edims, strict=True):
            if (e is None and k != 1) or (e is not None and p.shape[e] != k):
                raise ValueError(f"{name}: a parameter of shape {tuple(p.shape)} with "
                                 f"ensemble_dim={e} does not hold the run's {k} members")
        sizes = [p.numel() // k for p in params]
        n, like = sum(sizes), params[0]
        opts = {"dtype": like.dtype, "device": like.device}
        records = max(1, min(BANK_RECORDS, BANK_ELEMENTS // (k * n * probes)))
        self.slots, self.seed = records * probes, int(seed)
        nbytes = (k * n + 7) // 8  # one random byte gives 8 signs (see refill)
        self.row = n  # a member's row of the probe
        self._bytes = torch.empty(self.slots, nbytes, 8, **opts)
        bits = (torch.arange(256).unsqueeze(1) >> torch.arange(8)) & 1
        self._signs = ((1 - 2 * bits) * scale).to(**opts)  # row b: byte b's 8 signs
        # member-major probes (K, P) per slot, for the work matrices; and per parameter a
        # contiguous copy of every slot's probe, for the perturbation θ + εv (foreach ops on
        # contiguous tensors take the fast path), refilled with the bank
        rows = self._bytes.view(self.slots, -1)[:, :k * n].view(self.slots, k, n)
        self._probes = list(rows.unbind(0))
        self._member_bank, self._param_bank, col = [], [], 0
        self.columns = {}  # a parameter's first column in a member's row
        for p, e, m in zip(params, edims, sizes, strict=True):
            self.columns[p] = col
            piece = rows[:, :, col:col + m]
            col += m
            if e is None:
                piece = piece.view(self.slots, *p.shape)
            else:
                rest = [d for i, d in enumerate(p.shape) if i != e]
                piece = piece.view(self.slots, k, *rest).movedim(1, 1 + e)
            self._member_bank.append(piece)
            self._param_bank.append(torch.empty(self.slots, *p.shape, **opts))
        self._views = [[b[s] for b in self._param_bank] for s in range(self.slots)]
        # the same as {parameter: copy} maps, for the fused kernel (fixed objects: its checks
        # of them are made once, see models.fused.loss_and_grad)
        self.directions = [dict(zip(params, v, strict=True)) for v in self._views]
        self.bounds, col = [], 0  # group g: columns [a, b) of a member's row
        for ps, _ in groups:
            m = sum(p.numel() // k for p in ps)
            self.bounds.append((col, col + m))
            col += m
        self.groups = len(groups)
        self.params, self.edims, self.members = params, edims, k
        self.work = torch.empty(2, k, n, **opts)  # a record finished at once
        # [‖∇_g L‖², Δ_g L] (2, K, G) of a fused kernel's record finished at once
        self.result = torch.empty(2, k, len(groups), **opts)
        self.group_of = {p: g for g, (ps, _) in enumerate(groups) for p in ps}
        self.probes = probes
        self.theta = [torch.empty_like(p) for p in params]
        self.bank, self.drawn, self.slot = -1, 0, 0  # the bank drawn; probes drawn so far
        self.bytes = torch.zeros(self.slots * nbytes, dtype=torch.int64)  # the bank's
        self._slot_bytes = list(self.bytes.view(self.slots, nbytes).unbind(0))
        self._expanded = False  # the float probes of the bank made (see _expand)

    @staticmethod
    def key(groups: Groups) -> tuple:
        """What the layout depends on: the parameters' identities and shapes, the axes."""
        return (tuple((id(p), p.shape) for ps, _ in groups for p in ps),
                tuple(e for ps, e in groups for _ in ps))

    def flat(self, ts: list[Tensor], out: Tensor | None = None) -> Tensor:
        """Tensors shaped like ``params`` as one ``(K, P)`` copy (into ``out`` if given)."""
        k = self.members
        return torch.cat([(t if e in (0, None) else t.movedim(e, 0)).reshape(k, -1)
                          for t, e in zip(ts, self.edims, strict=True)], 1, out=out)

    def group_sums(self, w: Tensor) -> Tensor:
        """Per group, the sum of ``w`` ``(..., P)`` over its columns: ``(..., G)``. Each row
        is reduced alone, in the same order whatever the leading shape, so a bank of records
        gives the bits of its records one at a time."""
        return torch.stack([w[..., a:b].sum(-1) for a, b in self.bounds], -1)

    def refill(self, bank: int) -> None:
        """Draw bank ``bank``: uniform random bytes from a generator seeded by (seed, bank),
        each the ±1 signs of its 8 bits (times ``scale``; looked up in a table when the
        float probes are read) — i.i.d. fair signs from one small ``randint`` for all its
        records."""
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + bank) % 2**63)
        torch.randint(0, 256, self.bytes.shape, generator=gen, out=self.bytes)
        self.bank, self._expanded = bank, False

    def _expand(self) -> None:
        """The bank's float probes, when first needed (the fused kernel reads the bytes)."""
        if self.bank < 0:
            raise RuntimeError("RecordLayout: call next() before reading a probe")
        if not self._expanded:
            out = self._bytes.view(-1, 8)
            torch.index_select(self._signs, 0, self.bytes.to(out.device), out=out)
            torch._foreach_copy_(self._param_bank, self._member_bank)
            self._expanded = True

    @property
    def probe(self) -> Tensor:
        """The current probe, member-major ``(K, P)``."""
        self._expand()
        return self._probes[self.slot]

    @property
    def views(self) -> list[Tensor]:
        """The current probe per parameter (shaped like ``params``, contiguous)."""
        self._expand()
        return self._views[self.slot]

    @property
    def direction(self) -> dict[Tensor, Tensor]:
        """:attr:`views` as a ``{parameter: probe}`` map (for the fused kernel's shift)."""
        self._expand()
        return self.directions[self.slot]

    def slot_bytes(self) -> Tensor:
        """The current probe's random bytes (entry f of its member-major rows: bit f mod 8
        of byte f // 8, set for −scale)."""
        return self._slot_bytes[self.slot]

    def next(self) -> None:
        """Move to the next probe (number ``drawn``: slot ``drawn mod slots`` of bank
        ``drawn // slots``, drawn when first needed). Setting ``drawn`` back replays probes
        (resume, re-measuring a record)."""
        bank, slot = divmod(self.drawn, self.slots)
        if bank != self.bank:
            self.refill(bank)
        self.slot = slot
        self.drawn += 1


def optimizer_groups(optimizer: Any, members: int) -> Groups:
    """``(trainable parameters, ensemble_dim)`` of each parameter group (axis 0 by default
    for an ensemble, none for one member)."""
    default = 0 if members > 1 else None
    return [([p for p in g["params"] if p.requires_grad], g.get("ensemble_dim", default))
            for g in optimizer.param_groups]


def restore_grads(params: list[Tensor], saved: list[Tensor | None]) -> None:
    """Put saved ``.grad`` tensors back: in place when the shapes match (a fused kernel's
    prepared call, keyed on the gradients' storage, stays valid), else by assignment."""
    if all(p.grad is not None and g is not None and p.grad.shape == g.shape
           for p, g in zip(params, saved, strict=True)):
        torch._foreach_copy_([p.grad for p in params], saved)
    else:
        for p, g in zip(params, saved, strict=True):
            p.grad = g
