r"""Checks before a sampler loads a state (``load_state_dict``): the same schemes, the same
number of parameters per group, momenta and thermostats shaped like the parameters they
belong to — ValueError naming the group or parameter, before anything is changed."""

from __future__ import annotations

from .splittings import get_scheme

__all__ = ["check_loadable"]


def check_loadable(opt, sd: dict) -> None:
    name = type(opt).__name__
    groups = sd.get("param_groups", [])
    if len(groups) != len(opt.param_groups):
        raise ValueError(f"{name}: the state has {len(groups)} parameter groups, this "
                         f"optimizer {len(opt.param_groups)}")
    for gi, (saved, ours) in enumerate(zip(groups, opt.param_groups, strict=True)):
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
            where = opt._names.get(id(p), f"a parameter of shape {tuple(p.shape)}")
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
