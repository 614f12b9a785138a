r"""Hyperparameter values (docs/science.md §0): a float, a tensor with one value per ensemble member
(shape ``(K,)``), or a schedule ``step -> float | Tensor``; checked where they enter
(construction, and each step for schedules) with errors naming the value."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

from torch import Tensor

__all__ = ["Hyperparameter", "NONNEGATIVE", "check_value", "resolve"]

Hyperparameter = float | Tensor | Callable[[int], float | Tensor]

#: hyperparameters that must also be non-negative (every one must be finite)
NONNEGATIVE = ("lr", "friction", "temperature", "noise", "coupling")
def check_value(key: str, value: Any, where: str, members: int | None) -> float | list[float]:
    """A float, or (a tensor with one value per ensemble member) a list of K floats."""
    if type(value) is float and math.isfinite(value) and (value >= 0 or key not in NONNEGATIVE):
        return value  # the common case, checked first: this runs every step
    if isinstance(value, Tensor):
        if value.numel() == 1:
            value = value.item()
        elif value.dim() == 1 and members is not None and value.numel() == members:
            values = value.tolist()
            if all(math.isfinite(v) and (v >= 0 or key not in NONNEGATIVE) for v in values):
                return [float(v) for v in values]  # all valid (each step): no messages built
            return [check_value(key, float(v), f"{where} (member {k})", members)
                    for k, v in enumerate(value.tolist())]
        else:
            raise ValueError(
                f"{where}: {key} as a tensor must hold one value per ensemble member, shape "
                f"({members or 1},){'' if members else ' (no ensemble axis declared)'}, got "
                f"shape {tuple(value.shape)}")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where}: {key} must be a real number, a tensor of one value per "
                        f"ensemble member or a callable of the step, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{where}: {key} must be finite, got {value}")
    if key in NONNEGATIVE and value < 0:
        raise ValueError(f"{where}: {key} must be >= 0, got {value}")
    return value


def resolve(key: str, value: Any, step: int, where: str, members: int | None):
    if callable(value):
        value = value(step)
        where = f"{where} (schedule at step {step})"
    return check_value(key, value, where, members)
