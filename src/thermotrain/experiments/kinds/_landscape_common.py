"""Shared pieces of the landscape studies (``mli``, ``landscape-spiral``): spec validation,
data, ensemble training through :func:`thermotrain.training.train`, run-folder I/O."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ... import samplers
from ...data import Minibatcher, load_fashion_mnist, load_mnist
from ...models import ensemble_accuracy, ensemble_loss
from ...training import train
from ..config import ConfigError
from ..run_folder import ReportError, atomic_write_text
from . import _common
from ._common import COMMON as COMMON
from ._common import figure_dir as figure_dir
from ._common import notes_section as notes_section
from ._common import pyplot as pyplot
from ._common import write_report as write_report

NUMBER = "number"
NUMBERS = "numbers"
BOOLS = "bools"


def _real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_CHECKS = {
    NUMBER: (lambda v: _real(v) and not v < 0, "a number >= 0"),
    NUMBERS: (lambda v: isinstance(v, list) and bool(v) and all(_real(x) and x >= 0 for x in v),
              "a non-empty list of numbers >= 0"),
    BOOLS: (lambda v: isinstance(v, list) and bool(v) and all(isinstance(x, bool) for x in v),
            "a non-empty list of true/false"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
          "an integer >= 1"),
}


def validate(spec: Mapping[str, Any], schema: Mapping[str, Any], file: str,
             prefix: str = "") -> None:
    """Reject unknown keys and ill-typed values with a message naming the file and key."""
    _common.validate(spec, schema, file, prefix, checks=_CHECKS)


def require(spec: Mapping[str, Any], file: str, *keys: str) -> None:
    for key in keys:
        node: Any = spec
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise ConfigError(f"{file}: missing key {key!r}")
            node = node[part]


# ---------------------------------------------------------------------- data
def image_data(dataset: str, n_train: int, n_test: int, data_dir: str | None
               ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The first ``n_train`` / ``n_test`` images, flattened, inputs in [0, 1] (docs/science.md
    §8)."""
    loader = {"mnist": load_mnist, "fashion-mnist": load_fashion_mnist}[dataset]
    xtr, ytr = loader("train", data_dir)
    xte, yte = loader("test", data_dir)
    return (xtr[:n_train].flatten(1), ytr[:n_train], xte[:n_test].flatten(1), yte[:n_test])


# ---------------------------------------------------------------------- training
def make_optimizer(kind: str, model: torch.nn.Module, lr: float, seeds: Sequence[int],
                   extra: Mapping[str, Any] | None = None) -> torch.optim.Optimizer:
    """SGD with momentum 0.9 and Adam(0.9, 0.999) as in the MLI code (docs/science.md §8); AdLaLa
    with
    the authors' defaults (docs/science.md §3) unless ``extra`` overrides them."""
    extra = dict(extra or {})
    if kind == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=extra.get("momentum", 0.9))
    if kind == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999))
    if kind == "adlala":
        for key in ("temperature",):
            if isinstance(extra.get(key), list):
                extra[key] = tuple(extra[key])
        return samplers.AdLaLa(model, lr=lr, ensemble_dim=0,
                               seed=[10_000 + s for s in seeds], **extra)
    raise ValueError(f"unknown optimizer {kind!r}")  # validated by the spec check


def train_ensemble(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: Tensor,
                   y: Tensor, *, steps: int, batch_size: int, seeds: Sequence[int],
                   reward: float = 0.0, study: str = "", method: str = "") -> None:
    """Train the K seeds of a cell as one ensemble with :func:`thermotrain.training.train`:
    epoch-wise reshuffled batches per member (seed ``s + 5000``), the sum of the members'
    mean losses — minus :math:`\\frac\\lambda2\\lVert\\theta_k-\\theta_{k,0}\\rVert^2` per member
    when ``reward`` λ > 0 (mli-far: a term rewarding distance from the initialization)."""
    batcher = Minibatcher(x.shape[0], batch_size, seeds=[s + 5000 for s in seeds])
    gradient = None
    if reward > 0 or any(m.__class__.__name__.startswith(("BatchNorm", "EnsembleBatchNorm"))
                         for m in model.modules()):
        start = [p.detach().clone() for p in model.parameters()]

        def gradient(idx: Tensor) -> Tensor:
            model.zero_grad(set_to_none=True)
            losses = ensemble_loss(model(x[idx]), y[idx])
            total = losses.sum()
            if reward > 0:
                total = total - 0.5 * reward * sum(
                    (p - p0).square().sum() for p, p0 in zip(model.parameters(), start,
                                                             strict=True))
            total.backward()
            return losses.detach()

    model.train()
    train(model, optimizer, batcher, steps=steps, x_train=x, y_train=y, gradient=gradient,
          seeds=list(seeds), study=study, method=method, handle_signals=False)
    model.eval()


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: Tensor, y: Tensor, chunk: int = 10_000
             ) -> tuple[Tensor, Tensor]:
    """Per-member mean loss and accuracy ``(K,)`` in eval mode."""
    model.eval()
    n = x.shape[0]
    loss = acc = None
    for lo in range(0, n, chunk):
        z = model(x[lo:lo + chunk])
        w = z.shape[1] / n
        li = ensemble_loss(z, y[lo:lo + chunk]).double() * w
        ai = ensemble_accuracy(z, y[lo:lo + chunk]).double() * w
        loss = li if loss is None else loss + li
        acc = ai if acc is None else acc + ai
    assert loss is not None and acc is not None
    return loss, acc


def clone_state(model: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------- run folder
def finite_mean(values: Sequence[float]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ReportError(f"{path} is missing: not a finished run folder") from None
    except (OSError, ValueError) as exc:
        raise ReportError(f"{path} is unreadable ({exc})") from None


def write_frame(path: Path, frame: Any) -> None:
    atomic_write_text(path, frame.to_csv(index=False))


def fmt(value: float | None, spec: str = ".3g") -> str:
    return "—" if value is None else format(value, spec)


def slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in text).lower()
