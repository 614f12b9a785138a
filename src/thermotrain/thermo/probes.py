r"""The layout of a configurational-temperature record (:mod:`.monitors`, SPEC §11): every
coordinate of an ensemble as one ``(K, P)`` matrix, Hutchinson's Rademacher probes in it
(drawn a bank of records at a time), and the per-group sums of a record as one matrix
product.

Member k's coordinates are row k (parameters with their ensemble axis ``edim`` moved first,
flattened, concatenated in group order, so group g owns consecutive columns). A record
fills the work matrices :math:`W_0 = g\odot g` and :math:`W_1 = v\odot\delta g`
(``(2, K, P)``), and one product with the ``(G, P)`` group indicator gives
:math:`(\lVert\nabla_g L\rVert^2, \Delta_g L)` per group and member, ``(G, 2K)``: a few
tensor operations per record whatever the number of parameters, groups and members (on a
small network each operation, not the arithmetic, is the cost).
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
            ``params``, contiguous); :meth:`next` moves to the next one.
        work: ``W`` ``(2, K, P)`` of the current record (``work_bank[slot // probes]``: the
            records of one bank can be reduced together, see ``probe_bank``);
            indicator: ``(G, P)``, 1 on group g's columns.
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
        self._bytes = torch.empty(self.slots, nbytes, 8, **opts)
        bits = (torch.arange(256).unsqueeze(1) >> torch.arange(8)) & 1
        self._signs = ((1 - 2 * bits) * scale).to(**opts)  # row b: byte b's 8 signs
        # member-major probes (K, P) per slot, for the work matrices; and per parameter a
        # contiguous copy of every slot's probe, for the perturbation θ + εv (foreach ops on
        # contiguous tensors take the fast path), refilled with the bank
        rows = self._bytes.view(self.slots, -1)[:, :k * n].view(self.slots, k, n)
        self._probes = list(rows.unbind(0))
        self._member_bank, self._param_bank, col = [], [], 0
        for p, e, m in zip(params, edims, sizes, strict=True):
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
        self.indicator = torch.zeros(len(groups), n, **opts)
        col = 0
        for g, (ps, _) in enumerate(groups):
            m = sum(p.numel() // k for p in ps)
            self.indicator[g, col:col + m] = 1
            col += m
        self.params, self.edims, self.members = params, edims, k
        # one work matrix per slot, so that records can wait to be reduced together
        self.work_bank = torch.empty(records, 2, k, n, **opts)
        # per record, parameter-shaped copies of ∇L(θ + εv) (minus ∇L(θ − εv)) and of
        # the loop's ∇L_B(θ): what a deferred record keeps until its bank is reduced
        self.shifted = [[torch.empty_like(p) for p in params] for _ in range(records)]
        self.loop_grad = [[torch.empty_like(p) for p in params] for _ in range(records)]
        self.probes = probes
        self.probe_bank = rows
        self.theta = [torch.empty_like(p) for p in params]
        self.bank, self.drawn = -1, 0  # the bank in the buffer; probes drawn so far
        self.probe, self.views, self.work, self.slot = (self._probes[0], self._views[0],
                                                        self.work_bank[0], 0)

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

    def refill(self, bank: int) -> None:
        """Draw bank ``bank``: uniform random bytes from a generator seeded by (seed, bank),
        each looked up as the ±1 signs of its 8 bits (times ``scale``) — i.i.d. fair signs
        from one small ``randint`` and one gather for all its records."""
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + bank) % 2**63)
        out = self._bytes.view(-1, 8)
        idx = torch.randint(0, 256, (out.shape[0],), generator=gen)
        torch.index_select(self._signs, 0, idx.to(out.device), out=out)
        torch._foreach_copy_(self._param_bank, self._member_bank)
        self.bank = bank

    def next(self) -> None:
        """Make ``probe``/``views`` the next probe (number ``drawn``: slot ``drawn mod
        slots`` of bank ``drawn // slots``, drawn when first needed). Setting ``drawn``
        back replays probes (resume, re-measuring a record)."""
        bank, slot = divmod(self.drawn, self.slots)
        if bank != self.bank:
            self.refill(bank)
        self.probe, self.views, self.work = (self._probes[slot], self._views[slot],
                                             self.work_bank[slot // self.probes])
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
