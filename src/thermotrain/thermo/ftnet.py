r"""The fluctuation-theorem paper's test system (docs/science.md §5): the authors' data, their
minimum,
the 7-weight tanh network and its loss.

:math:`f(x; w) = w_5\tanh(w_1x + w_3) + w_6\tanh(w_2x + w_4) + w_7`, per-sample loss
:math:`\ell_i(w) = \frac{N}{2\sigma^2}[(y_i - f(x_i))^2 + \lambda\lVert w\rVert^2]`
(σ = 0.1, λ = 0.001, N = 200), plain SGD with B = 10, h = 1e-7. The data are the authors'
draw (``<data root>/ft-regression/``, see :func:`thermotrain.data.resolve_data_dir`).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ..data.errors import DatasetCorruptError, DatasetNotFoundError
from ..data.storage import resolve_data_dir

__all__ = ["FTRegression", "FTRegressionNet", "load_ft_regression", "NOISE_STD", "PRIOR",
           "BATCH_SIZE", "LR"]

NOISE_STD, PRIOR, BATCH_SIZE, LR = 0.1, 0.001, 10, 1e-7
FOLDER = "ft-regression"
FILES = ("x_train.txt", "y_train.txt", "wmin.txt")


class FTRegressionNet(nn.Module):
    r"""The 1-2-1 tanh network of docs/science.md §5 with its 7 weights in one parameter ``weight``.

    ``weight`` is ``(7,)`` — or ``(K, 7)`` with ``ensemble=K`` (output ``(K, B, 1)``).
    ``forward(x)`` takes ``(B,)`` or ``(B, 1)`` inputs and returns ``(B, 1)``.
    """

    def __init__(self, weight: Tensor | None = None, ensemble: int | None = None,
                 dtype: torch.dtype = torch.float64, device: torch.device | str | None = None):
        super().__init__()
        shape = (7,) if ensemble is None else (int(ensemble), 7)
        w = torch.zeros(shape, dtype=dtype, device=device) if weight is None else \
            weight.detach().to(dtype=dtype, device=device).expand(shape).clone()
        self.weight = nn.Parameter(w)

    def forward(self, x: Tensor) -> Tensor:
        x = x.reshape(-1)
        w = self.weight
        if w.ndim == 1:
            return predict(w, x).unsqueeze(-1)
        return predict(w, x.expand(w.shape[0], -1)).unsqueeze(-1)


def predict(w: Tensor, x: Tensor) -> Tensor:
    """f(x; w) for ``w (..., 7)`` and ``x (..., B)`` with matching leading shape."""
    w = w.unsqueeze(-1)
    return (w[..., 4, :] * torch.tanh(w[..., 0, :] * x + w[..., 2, :])
            + w[..., 5, :] * torch.tanh(w[..., 1, :] * x + w[..., 3, :]) + w[..., 6, :])


@dataclass(frozen=True)
class FTRegression:
    """The authors' data and minimum, float64, with the loss of docs/science.md §5.

    Attributes:
        x, y: ``(N,)`` inputs and targets; w_min: ``(7,)`` the authors' w*.
    """

    x: Tensor
    y: Tensor
    w_min: Tensor
    noise_std: float = NOISE_STD
    prior: float = PRIOR

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def scale(self) -> float:
        """N/(2σ²), the posterior scaling of the loss."""
        return self.n / (2 * self.noise_std**2)

    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        """Batch-mean data term N/(2σ²)·mean((y − f)²) (per member for ``(K, B, 1)``)."""
        r = (target.reshape(-1) - prediction.reshape(*prediction.shape[:-2], -1)).square()
        return self.scale * r.mean(-1)

    def penalty(self, params) -> Tensor:
        """The prior term N/(2σ²)·λ‖w‖² (per member for an ensemble)."""
        w = params["weight"]
        return self.scale * self.prior * w.square().sum(-1)

    def per_sample_loss(self, w: Tensor) -> Tensor:
        """ℓᵢ(w) for a flat ``w (7,)``: ``(N,)``."""
        return self.scale * ((self.y - predict(w, self.x)).square() + self.prior * w.square().sum())

    def batch_gradient(self, w: Tensor, idx: Tensor | None = None, data_only: bool = False
                       ) -> Tensor:
        r""":math:`\nabla L_B(w)` in closed form for chains ``w (K, 7)`` and batches ``idx (K,
        B)`` (``None``: all N points); ``data_only`` drops the prior's gradient."""
        x = self.x if idx is None else self.x[idx]
        y = self.y if idx is None else self.y[idx]
        if idx is None:
            x, y = x.expand(w.shape[0], -1), y.expand(w.shape[0], -1)
        w1, w2, w3, w4, w5, w6, w7 = (w[:, i:i + 1] for i in range(7))
        t1, t2 = torch.tanh(w1 * x + w3), torch.tanh(w2 * x + w4)
        r = w5 * t1 + w6 * t2 + w7 - y  # (K, B)
        s1, s2 = r * w5 * (1 - t1 * t1), r * w6 * (1 - t2 * t2)
        g = torch.stack([(s1 * x).mean(1), (s2 * x).mean(1), s1.mean(1), s2.mean(1),
                         (r * t1).mean(1), (r * t2).mean(1), r.mean(1)], dim=1)
        g = 2 * self.scale * g
        return g if data_only else g + 2 * self.scale * self.prior * w


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_ft_regression(data_dir: str | os.PathLike[str] | None = None,
                       device: torch.device | str | None = None) -> FTRegression:
    """Read ``<root>/ft-regression/{x_train,y_train,wmin}.txt`` (float64), checking them
    against the folder's ``SHA256SUMS`` when it is there.

    Raises:
        DatasetNotFoundError: a file is missing (the message names the folder).
        DatasetCorruptError: a digest does not match or a file does not parse.
    """
    folder = resolve_data_dir(data_dir) / FOLDER
    missing = [folder / f for f in FILES if not (folder / f).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"ft-regression data not found: {', '.join(str(p) for p in missing)} (pass "
            "--data-dir DIR or set THERMOTRAIN_DATA to the folder that holds ft-regression/)",
            paths=missing)
    sums = folder / "SHA256SUMS"
    if sums.is_file():
        for line in sums.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1] in FILES and _sha256(folder / parts[1]) != parts[0]:
                raise DatasetCorruptError(f"{folder / parts[1]} does not match its SHA-256 in "
                                          f"{sums}", path=folder / parts[1])
    arrays = []
    for name in FILES:
        try:
            values = [float(v) for v in (folder / name).read_text().split()]
        except ValueError as exc:
            raise DatasetCorruptError(f"{folder / name}: {exc}", path=folder / name) from None
        arrays.append(torch.tensor(values, dtype=torch.float64, device=device))
    x, y, w = arrays
    if x.shape != y.shape or w.shape != (7,):
        raise DatasetCorruptError(f"{folder}: expected N inputs, N targets and 7 weights, got "
                                  f"{x.numel()}, {y.numel()}, {w.numel()}", path=folder)
    return FTRegression(x=x, y=y, w_min=w)
