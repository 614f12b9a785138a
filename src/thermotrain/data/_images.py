"""Conversions shared by the image loaders (:mod:`.mnist`, :mod:`.cifar`)."""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_device, check_float_dtype
from .errors import DatasetCorruptError
from .specs import DatasetSpec


def check_normalize(normalize: object) -> bool:
    """``normalize`` must be a bool."""
    if not isinstance(normalize, bool):
        raise TypeError(f"normalize must be True or False, got {normalize!r}")
    return normalize


def images_to_float(
    images: Tensor,
    spec: DatasetSpec,
    *,
    device: torch.device | str | None,
    dtype: torch.dtype,
    normalize: bool,
) -> Tensor:
    r"""uint8 images ``(N, C, H, W)`` -> ``dtype`` on ``device``: :math:`x = u/255 \in [0, 1]`,
    then :math:`(x - m_c)/s_c` per channel if ``normalize`` (``spec.mean``, ``spec.std``).

    Always returns a new tensor (the cached uint8 tensor is never modified).
    """
    dtype, device = check_float_dtype(dtype), check_device(device)
    normalize = check_normalize(normalize)
    out = images.to(device=device).to(dtype=dtype).div_(255.0)
    if normalize:
        if spec.mean is None or spec.std is None:
            raise ValueError(f"{spec.name} has no mean/std for normalize=True")
        shape = (1, -1) + (1,) * (images.ndim - 2)
        mean = torch.tensor(spec.mean, dtype=dtype, device=device).reshape(shape)
        std = torch.tensor(spec.std, dtype=dtype, device=device).reshape(shape)
        out.sub_(mean).div_(std)
    return out


def check_labels(labels: Tensor, spec: DatasetSpec, n_images: int, source: str) -> None:
    """Labels must be one per image and lie in ``0 .. spec.num_classes - 1``."""
    if labels.shape[0] != n_images:
        raise DatasetCorruptError(
            f"{source}: {labels.shape[0]} labels for {n_images} images; the files do not match"
        )
    if spec.num_classes is not None and labels.numel():
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= spec.num_classes:
            raise DatasetCorruptError(
                f"{source}: labels range over [{low}, {high}], expected 0..{spec.num_classes - 1}"
            )
