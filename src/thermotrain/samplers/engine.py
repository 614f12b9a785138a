r"""The one dispatch point of a sampler step: gather each group's tensors (checked), compile
its step program (:func:`.splittings.program`), screen the gradients (``nan_policy``), then run
every group through the fused C kernel (:mod:`.fused`) where it can take the group and through
the torch implementation (:mod:`.reference`) elsewhere, with the noise of the optimizer's
source laid out group by group, draw by draw, tensor by tensor (``docs/conventions.md``).
Functions of the optimizer shell :class:`~.optimizer.PartitionedLangevin` (``opt``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from . import fused
from .guard import finite_per_member, restore_members, save_members
from .noise import member_view
from .philox import philox_normal_
from .reference import GroupView, run_program
from .splittings import Scheme, get_scheme, program

__all__ = ["group_work", "step_program", "execute", "noise_layout"]


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
    prepared: Any = None  # the kernel's argument arrays (fused groups)
    screen: Any = None  # the kernel's screen arguments for this group's gradients


def _edims(view: GroupView) -> bool:
    return all(e in (None, 0) for e in view.ensemble_dims)


def noise_layout(opt) -> tuple[list[list[list[int]]], int]:
    """Offsets into a member's noise row: ``[group][draw][param] -> offset``."""
    key = tuple((g["scheme"], len(g["params"])) for g in opt.param_groups)
    if opt._layout_cache is not None and opt._layout_cache[0] == key:
        return opt._layout_cache[1], opt._layout_cache[2]
    layout, offset = [], 0
    for g in opt.param_groups:
        scheme = get_scheme(g["scheme"])
        per_draw = []
        for _ in range(scheme.draws):
            offs = []
            for p in g["params"]:
                offs.append(offset)
                offset += p.numel() // opt.members
            per_draw.append(offs)
        layout.append(per_draw)
    opt._layout_cache = (key, layout, offset)
    return layout, offset


def group_work(opt, gi: int, group: dict, scheme: Scheme, params: list[Tensor],
               states: list[dict], ops: list[tuple], hp: dict) -> _Work:
    """The group's share of the step: its tensors checked and gathered, its ops packed for
    the kernel. Everything but the gradients is cached while the step reuses the same
    parameters, storages and state tensors; the gradients (new tensors each step in the usual
    ``zero_grad()`` / ``backward()`` loop) are checked every step and only their addresses
    are written into the cached kernel arguments."""
    grads = [p.grad for p in params]
    key = (gi, scheme.name, *((id(p), p.data_ptr(), p.shape, id(st.get("momentum")),
                               id(st.get("xi"))) for p, st in zip(params, states, strict=True)))
    hit = opt._work_cache.get(gi)
    if hit is not None and hit[0] == key and _refresh_grads(opt, hit[1], grads):
        view, offsets, use_fused, prepared, screen, _ = hit[1]
    else:
        view, offsets = gather(opt, gi, group, scheme, params, grads, states)
        sig = fused.signature(view, opt.members)
        wanted = opt.foreach and opt._noise.rng == "philox"
        use_fused = wanted and fused.supports(view, opt.members, sig)
        # kept off the kernel by its gradients alone: try again when they fit
        retry = (wanted and not use_fused
                 and fused.supports(replace(view, grads=list(view.params)), opt.members))
        prepared = fused.prepare(view, offsets, opt.members, sig) if use_fused else None
        screen = fused.screen_of(prepared) if use_fused else None
        opt._work_cache[gi] = (key, (view, offsets, use_fused, prepared, screen, retry))
    packed = None
    if use_fused:
        pkey = ("packed", id(ops))
        phit = opt._program_cache.get(pkey)
        if phit is not None and phit[0] is ops:
            packed = phit[1]
        else:
            packed = fused.pack_program(ops, opt.members)
            if len(opt._program_cache) > 256:
                opt._program_cache.clear()
            opt._program_cache[pkey] = (ops, packed)
    return _Work(gi, group, scheme, view, hp, ops, packed, offsets, use_fused, prepared,
                 screen)


def _refresh_grads(opt, cached: tuple, grads: list[Tensor]) -> bool:
    """Put this step's gradients into a cached group's view and kernel arguments. ``False``
    (rebuild the group) when one differs from its parameter in shape, or, for the kernel,
    in dtype, device or layout: :func:`gather` then names it."""
    view, use_fused, prepared, retry = cached[0], cached[2], cached[3], cached[5]
    fits = True
    for p, g in zip(view.params, grads, strict=True):
        if g.shape != p.shape:
            return False
        if use_fused or retry:
            fits = fits and (g.dtype == p.dtype and g.device == p.device
                             and g.is_contiguous())
    if use_fused and not fits or retry and fits:
        return False
    view.grads[:] = grads
    if use_fused:
        fused.set_gradients(prepared, grads)
    return True


def gather(opt, gi: int, group: dict, scheme: Scheme, params: list[Tensor],
           grads: list[Tensor], states: list[dict]) -> tuple[GroupView, list[list[int]]]:
    layout, _ = noise_layout(opt)
    edim = group["ensemble_dim"]
    view = GroupView([], [], [], [], [], [], [])
    offsets: list[list[int]] = [[] for _ in range(scheme.draws)]
    index = {id(p): i for i, p in enumerate(group["params"])}
    cls = type(opt).__name__
    for p, g, st in zip(params, grads, states, strict=True):
        name = opt._names.get(id(p), f"a parameter of shape {tuple(p.shape)}")
        if g.shape != p.shape:
            raise ValueError(f"{cls}: the gradient of {name} has shape {tuple(g.shape)}")
        view.params.append(p)
        view.grads.append(g)
        if scheme.momentum:
            m = st["momentum"]
            if m.shape != p.shape or m.dtype != p.dtype or m.device != p.device:
                raise ValueError(
                    f"{cls}: the momentum of {name} has shape {tuple(m.shape)} ({m.dtype}, "
                    f"{m.device}) but the parameter is {p.dtype} on {p.device}: was the "
                    "state loaded from another model or the parameter resized?")
            view.momenta.append(m)
        if scheme.thermostat:
            xi = st["xi"]
            if xi.numel() != (p.shape[edim] if edim is not None else 1):
                raise ValueError(f"{cls}: the thermostat of {name} has shape "
                                 f"{tuple(xi.shape)}")
            view.xis.append(xi)
        view.counts.append(p.numel() // opt.members)
        view.ensemble_dims.append(edim)
        view.names.append(name)
        for j in range(scheme.draws):
            offsets[j].append(layout[gi][j][index[id(p)]])
    return view, offsets


def step_program(opt, scheme: Scheme, closing: dict | None, hp: dict) -> list[tuple]:
    # the dicts' keys come in the scheme's fixed order: their values alone key the program
    try:
        key = (scheme.name, None if closing is None else tuple(closing.values()),
               tuple(hp.values()))
        hit = opt._program_cache.get(key)
    except TypeError:  # per-member lists
        key = (scheme.name, None if closing is None else
               tuple(_frozen_key(v) for v in closing.values()),
               tuple(_frozen_key(v) for v in hp.values()))
        hit = opt._program_cache.get(key)
    if hit is None:
        if len(opt._program_cache) > 256:
            opt._program_cache.clear()
        hit = opt._program_cache[key] = (program(scheme, closing, hp),)
    return hit[0]


def screen_gradients(opt, work: list[_Work]) -> Tensor | None:
    """Per member, whether every gradient the step reads is finite (``None``: all are)."""
    flags, ok = None, None
    by_layout: list[Tensor] = []
    for w in work:
        if _edims(w.view):
            by_layout += w.view.grads
        else:
            for g, e in zip(w.view.grads, w.view.ensemble_dims, strict=True):
                f = finite_per_member(g, e, opt.members)
                ok = f if ok is None else ok & f
    if by_layout:
        flags = fused.finite_members(by_layout, opt.members)
        if flags is None:
            for g in by_layout:
                f = finite_per_member(g, 0 if opt._members else None, opt.members)
                ok = f if ok is None else ok & f
        elif not all(flags):
            ok = torch.tensor(flags) if ok is None else ok & torch.tensor(flags)
    if ok is not None and bool(ok.all()):
        return None
    return ok


def _step_screen(opt, work: list[_Work]) -> tuple | None:
    """The screen arguments of every group's gradients (one pointer array over all groups,
    cached while the groups' prepared kernel arguments are the same objects; the entry holds
    them, so their ids stay theirs), with this step's gradient addresses copied in."""
    prepared = tuple(w.prepared for w in work)
    hit = opt._screen_cache
    if hit is None or len(hit[0]) != len(prepared) or not all(
            a is b for a, b in zip(hit[0], prepared, strict=True)):
        hit = opt._screen_cache = (prepared, fused.combined_screen(prepared))
    fused.refresh_combined_screen(hit[1], prepared)
    return hit[1]


def execute(opt, work: list[_Work]) -> None:
    """Run every group's program: check the gradients first (nothing is written when one
    is not finite and ``nan_policy="raise"``), then the fused kernel where it can take the
    group and the torch implementation elsewhere, then check the results."""
    policy = opt.nan_policy
    opt._nonfinite = opt._no_bad
    # every group fused: the first kernel call screens all gradients before writing anything
    screen = None
    if policy != "ignore" and all(w.fused for w in work):
        screen = work[0].screen if len(work) == 1 else _step_screen(opt, work)
    if policy != "ignore" and screen is None:
        ok = screen_gradients(opt, work)
        if ok is not None:
            bad = ~ok & ~opt.frozen_members
            if bad.any():
                gradient_failure(opt, work, bad)
    frozen = _frozen(opt)
    rng = opt._noise.rng
    noisy = any(_noisy(w.ops) for w in work)
    draw = opt._noise.peek() if rng == "philox" and noisy else None
    buf = None
    if rng == "torch" and noisy:
        _, size = noise_layout(opt)
        buf = opt._noise.draw(size, work[0].view.params[0].dtype).wait()
    after = None
    keys = opt._noise._keys  # noqa: SLF001 - the optimizer owns its noise source
    for w in work:
        if w.fused:
            status, rows = fused.run(w.view, w.ops, w.packed, w.offsets, keys, draw,
                                     opt.members, frozen, screen, prepared=w.prepared)
            screen = None  # screened once, before the first write
            if status == 2:  # nothing written
                gradient_failure(opt, work, ~torch.tensor(rows))
                frozen = _frozen(opt)
                status, rows = fused.run(w.view, w.ops, w.packed, w.offsets, keys, draw,
                                         opt.members, frozen, None, prepared=w.prepared)
            if status == 0:
                after = torch.tensor(rows) if after is None else after & torch.tensor(rows)
            opt.implementations[w.index] = "fused"
            continue
        saved = save_members(w.view, frozen)
        run_program(w.ops, w.view, noise_fn(opt, w, buf, draw), opt.foreach)
        restore_members(saved)
        if policy != "ignore":
            ok = finite_results(opt, w)
            if not bool(ok.all()):
                after = ok if after is None else after & ok
        opt.implementations[w.index] = "foreach" if opt.foreach else "reference"
    if draw is not None:
        opt._noise.advance()
    if policy != "ignore" and after is not None:
        bad = ~after
        if frozen is not None:
            bad &= ~frozen
        if bad.any():
            opt._nonfinite = opt._nonfinite | bad
            msg = message(opt, work, bad, "result") + (
                " although the gradient was finite (an overflow: the step size or the "
                "temperature is too large); the state is non-finite")
            if policy == "raise":
                raise FloatingPointError(msg)
            if policy == "warn":
                warnings.warn(msg, RuntimeWarning, stacklevel=3)
            if policy == "mask":
                opt.frozen_members |= bad


def _frozen(opt) -> Tensor | None:
    """``opt.frozen_members`` if a member is frozen, else ``None`` (the answer cached while
    the tensor is the same object at the same version)."""
    f = opt.frozen_members
    key = (id(f), f._version)
    hit = opt._frozen_cache
    if hit is None or hit[0] != key or hit[1] is not f:
        hit = opt._frozen_cache = (key, f, bool(f.any()))
    return f if hit[2] else None


_NOISY: dict[int, tuple] = {}


def _noisy(ops: list[tuple]) -> bool:
    """Whether a program draws noise (cached per op list; the entry keeps the list alive)."""
    hit = _NOISY.get(id(ops))
    if hit is None or hit[0] is not ops:
        if len(_NOISY) > 256:
            _NOISY.clear()
        hit = _NOISY[id(ops)] = (ops, any(op[3] >= 0 for op in ops))
    return hit[1]


def gradient_failure(opt, work: list[_Work], bad: Tensor) -> None:
    opt._nonfinite = bad
    msg = message(opt, work, bad, "gradient")
    if opt.nan_policy == "raise":
        raise FloatingPointError(msg + "; nothing was changed (skip the batch or lower the "
                                 "step size)")
    if opt.nan_policy == "warn":
        warnings.warn(msg, RuntimeWarning, stacklevel=4)
    if opt.nan_policy == "mask":
        opt.frozen_members |= bad


def message(opt, work: list[_Work], bad: Tensor, what: str) -> str:
    members = [i for i, b in enumerate(bad.tolist()) if b]
    name, scheme = "a parameter", "?"
    for w in work:
        for p, g in zip(w.view.params, w.view.grads, strict=True):
            t = g if what == "gradient" else p
            if not bool(torch.isfinite(t).all()):
                name, scheme = opt._names.get(id(p), name), w.scheme.name
                break
        else:
            continue
        break
    step = opt.state[work[0].view.params[0]]["step"]
    who = f" (ensemble members {members})" if opt._members else ""
    return (f"{type(opt).__name__}: step {step}: a non-finite {what} in {name}, "
            f"scheme {scheme!r}{who}")


def noise_fn(opt, w: _Work, buf: Tensor | None, draw: int | None):
    if buf is not None:
        views = noise_views(opt, buf, w)
        return lambda j: views[j]
    keys = opt._noise._keys  # noqa: SLF001 - the optimizer owns its noise source

    def noise(j: int) -> list[Tensor]:
        out = []
        for p, off, e in zip(w.view.params, w.offsets[j], w.view.ensemble_dims, strict=True):
            z = torch.empty(opt.members, p.numel() // opt.members, dtype=p.dtype,
                            device=p.device)
            philox_normal_(z, keys, draw, off)
            out.append(member_view(z, p.shape, e))
        return out
    return noise


def noise_views(opt, buf: Tensor, w: _Work) -> list[list[Tensor]]:
    """Views of ``buf`` holding each draw's noise for each tensor of ``w`` (cached: the
    buffer is reused step after step)."""
    key = (id(buf), tuple(id(p) for p in w.view.params), tuple(map(tuple, w.offsets)))
    hit = opt._view_cache.get(key)
    if hit is not None and hit[0] is buf:
        return hit[1]
    if len(opt._view_cache) > 64:
        opt._view_cache.clear()
    views = [[member_view(buf[:, off : off + p.numel() // opt.members], p.shape, e)
              for off, p, e in zip(offs, w.view.params, w.view.ensemble_dims, strict=True)]
             for offs in w.offsets]
    opt._view_cache[key] = (buf, views)
    return views


def finite_results(opt, w: _Work) -> Tensor:
    ok = torch.ones(opt.members, dtype=torch.bool)
    for t, e in zip([*w.view.params, *w.view.momenta, *w.view.xis],
                    [*w.view.ensemble_dims] * 3, strict=False):
        ok &= finite_per_member(t, e, opt.members)
    return ok
