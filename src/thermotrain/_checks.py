"""Argument checks shared by the subpackages (samplers, data, models).

Each check raises :class:`TypeError` (wrong kind of value) or :class:`ValueError` (right kind,
outside the allowed range) with a message naming the argument, the value received and what is
allowed.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

#: Seeds we allow: 0 <= seed < 2**63 (the samplers' range, so one seed fits every component;
#: :meth:`torch.Generator.manual_seed` itself takes up to 2**64 - 1).
SEED_LIMIT = 2**63


def check_int(name: str, value: object, *, minimum: int | None = None) -> int:
    """Return ``value`` as ``int``; reject bools, floats and values below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return value


def check_float(
    name: str, value: object, *, minimum: float | None = None, strict: bool = False
) -> float:
    """Return ``value`` as a finite ``float``; ``minimum`` is exclusive when ``strict``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None:
        if strict and not value > minimum:
            raise ValueError(f"{name} must be > {minimum}, got {value}")
        if not strict and value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_float_dtype(dtype: object) -> torch.dtype:
    """Return ``dtype`` if it is a floating-point :class:`torch.dtype`."""
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype such as torch.float32, got {dtype!r}")
    if not dtype.is_floating_point:
        raise ValueError(
            f"dtype must be a floating-point torch.dtype (float16/bfloat16/float32/float64), "
            f"got {dtype}"
        )
    return dtype


def is_int(value: object) -> bool:
    """True for Python / NumPy integers, False for ``bool`` (a common silent mistake)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_device(device: object) -> torch.device:
    """Return ``device`` as :class:`torch.device`: ``None`` (the default device, normally the
    CPU), a string like ``"cpu"`` / ``"cuda:0"``, a device index or a ``torch.device``."""
    if device is None:
        return torch.empty(0).device
    if isinstance(device, torch.device):
        return device
    if isinstance(device, str) or is_int(device):
        try:
            return torch.device(device)  # type: ignore[arg-type]
        except (RuntimeError, ValueError) as exc:
            raise ValueError(f"device {device!r} is not a valid torch device: {exc}") from None
    raise TypeError(
        f"device must be None, a string like 'cpu' / 'cuda:0' or a torch.device, got {device!r}"
    )


def check_seed(name: str, value: object) -> int:
    """Return ``value`` if it is an int with 0 <= value < 2**63."""
    value = check_int(name, value, minimum=0)
    if value >= SEED_LIMIT:
        raise ValueError(f"{name} must be < 2**63, got {value}")
    return value


def member_seeds(seed: object, members: int, name: str = "seed") -> tuple[int, ...]:
    """The seeds of ``members`` ensemble members: an int ``s`` gives ``s, s + 1, …``; a
    sequence must hold exactly one seed per member. Every seed is checked."""
    if is_int(seed):
        first = check_seed(name, seed)
        if first + members > SEED_LIMIT:
            raise ValueError(
                f"{name} + ensemble - 1 = {first + members - 1} must be < 2**63 "
                f"({name}={first}, ensemble={members})"
            )
        return tuple(first + k for k in range(members))
    if isinstance(seed, (str, bytes)) or not isinstance(seed, Sequence):
        raise TypeError(
            f"{name} must be an int or a sequence of {members} ints (one per member), got "
            f"{seed!r} of type {type(seed).__name__}"
        )
    if len(seed) != members:
        raise ValueError(
            f"{name} must list one seed per ensemble member: ensemble={members} but "
            f"len({name})={len(seed)} ({name}={list(seed)!r})"
        )
    return tuple(check_seed(f"{name}[{k}]", s) for k, s in enumerate(seed))


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
