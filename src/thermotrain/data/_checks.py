"""Argument checks of :mod:`thermotrain.data`: the shared ones (:mod:`thermotrain._checks`)
plus the data sets' own generator helper."""

from __future__ import annotations

import torch

from .._checks import (
    SEED_LIMIT,
    check_device,
    check_float,
    check_float_dtype,
    check_int,
    check_seed,
)

__all__ = [
    "SEED_LIMIT",
    "check_device",
    "check_float",
    "check_float_dtype",
    "check_int",
    "check_seed",
    "make_generator",
]


def make_generator(seed: int | torch.Generator) -> torch.Generator:
    """A CPU :class:`torch.Generator` from an int seed, or ``seed`` itself if it is one.

    Passing a generator lets a caller draw several data sets from one stream; it is advanced
    in place. Generators must live on the CPU so that the numbers do not depend on the
    device the data is finally moved to.
    """
    if isinstance(seed, torch.Generator):
        if seed.device.type != "cpu":
            raise ValueError(
                f"seed generator must be a CPU torch.Generator, got one on {seed.device}; "
                "data are drawn on the CPU and then moved to `device`"
            )
        return seed
    return torch.Generator(device="cpu").manual_seed(check_seed("seed", seed))
