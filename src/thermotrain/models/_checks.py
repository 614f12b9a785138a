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

#: Hidden-layer nonlinearities by name (a name, not a callable, so that a model's configuration
#: is plain data that can be written to a run's config file and rebuilt).
ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "tanh": torch.tanh,
}


def is_int(value: object) -> bool:
    """True for Python / NumPy integers, False for ``bool`` (a common silent mistake)."""
    if isinstance(value, bool):
        return False
    try:
        import numpy as np

        if isinstance(value, np.integer):
            return True
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    return isinstance(value, int)


def check_positive_int(name: str, value: object) -> int:
    """Return ``int(value)`` if it is an integer ≥ 1, else raise naming ``name``."""
    if not is_int(value):
        raise TypeError(f"{name} must be an int >= 1, got {value!r} of type {type(value).__name__}")
    if int(value) < 1:  # type: ignore[call-overload]
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)  # type: ignore[call-overload]


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


def check_dtype(dtype: object) -> torch.dtype:
    """A floating-point ``torch.dtype``."""
    if not isinstance(dtype, torch.dtype):
        raise TypeError(
            f"dtype must be a floating-point torch.dtype such as torch.float32, got {dtype!r}"
        )
    if not dtype.is_floating_point:
        raise TypeError(
            f"dtype must be a floating-point torch.dtype such as torch.float32, got {dtype}"
        )
    return dtype


def check_device(device: object) -> torch.device:
    """``None`` (the default device, normally the CPU), a string or a ``torch.device``."""
    if device is None:
        return torch.empty(0).device
    if isinstance(device, (str, torch.device)) or is_int(device):
        try:
            return torch.device(device)  # type: ignore[arg-type]
        except (RuntimeError, ValueError) as err:
            raise ValueError(f"device {device!r} is not a valid torch device: {err}") from None
    raise TypeError(
        f"device must be None, a string like 'cpu' / 'cuda:0' or a torch.device, got {device!r}"
    )
