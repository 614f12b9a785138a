"""Argument validation shared by the model constructors (private).

Every check raises ``TypeError`` for a value of the wrong kind and ``ValueError`` for a value
of the right kind outside the allowed range, and the message names the argument, the value
received and what is allowed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_device, check_float_dtype, check_int, is_int

__all__ = [
    "ACTIVATIONS",
    "check_activation",
    "check_device",
    "check_dtype",
    "check_ensemble",
    "check_positive_int",
    "check_widths",
    "is_int",
]

#: Hidden-layer nonlinearities by name (a name, not a callable, so that a model's configuration
#: is plain data that can be written to a run's config file and rebuilt).
ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "tanh": torch.tanh,
}


def check_positive_int(name: str, value: object) -> int:
    """Return ``int(value)`` if it is an integer ≥ 1, else raise naming ``name``."""
    return check_int(name, value, minimum=1)


def check_ensemble(ensemble: object) -> int | None:
    """``None`` (a plain model) or the number K ≥ 1 of ensemble members."""
    if ensemble is None:
        return None
    return check_positive_int("ensemble", ensemble)


def check_widths(widths: object) -> tuple[int, ...]:
    """Layer widths ``[d_in, h_1, ..., d_out]``: a sequence of at least two ints ≥ 1."""
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence):
        raise TypeError(
            f"widths must be a sequence of ints such as [2, 100, 1], got {widths!r} "
            f"of type {type(widths).__name__}"
        )
    if len(widths) < 2:
        raise ValueError(
            f"widths must have at least two entries [d_in, ..., d_out], got {list(widths)!r}"
        )
    out = []
    for i, w in enumerate(widths):
        if not is_int(w):
            raise TypeError(
                f"widths[{i}] must be an int >= 1, got {w!r} of type {type(w).__name__} "
                f"(widths={list(widths)!r})"
            )
        if int(w) < 1:
            raise ValueError(f"widths[{i}] must be >= 1, got {w!r} (widths={list(widths)!r})")
        out.append(int(w))
    return tuple(out)


def check_activation(activation: object) -> str:
    """The name of a hidden nonlinearity, one of :data:`ACTIVATIONS`."""
    if not isinstance(activation, str):
        raise TypeError(
            f"activation must be one of {sorted(ACTIVATIONS)} (a string), got {activation!r} "
            f"of type {type(activation).__name__}"
        )
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    return activation


#: a floating-point ``torch.dtype`` (shared check)
check_dtype = check_float_dtype
