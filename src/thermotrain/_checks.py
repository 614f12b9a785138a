"""Argument checks shared by the subpackages (samplers, data, models).

Each check raises :class:`TypeError` (wrong kind of value) or :class:`ValueError` (right kind,
outside the allowed range) with a message naming the argument, the value received and what is
allowed.
"""

from __future__ import annotations

import math
import numbers

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
