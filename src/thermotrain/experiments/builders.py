"""From a validated study to tensors, ensemble models and optimizers (library calls only).

* :func:`load_data` — the training and test sets of a :class:`~.config.DataConfig`;
* :func:`build_model` — a K-member ensemble (:class:`thermotrain.models.MLP` or
  :class:`~thermotrain.models.CNN`), member k initialised with its run seed;
* :func:`build_optimizer` — the method's optimizer over the stacked parameters: the
  thermotrain samplers with ``ensemble_dim=0`` and per-member noise seeds, or
  ``torch.optim.SGD`` / ``Adam``, which act elementwise and are therefore exactly K
  independent optimizers on stacked parameters.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .. import samplers
from ..data import load_fashion_mnist, load_mnist, planar_trig, spirals
from ..models import CNN, MLP, StackableModel
from .config import DataConfig, MethodConfig, StudyConfig, stream_seeds

__all__ = ["Dataset", "load_data", "build_model", "build_optimizer"]


@dataclass(frozen=True)
class Dataset:
    """Training and test tensors. ``y`` is float 0/1 (binary) or int64 class indices."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    n_classes: int

    @property
    def input_dim(self) -> int:
        """Number of input features (flattened)."""
        return int(self.x_train[0].numel())

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Shape of one input."""
        return tuple(self.x_train.shape[1:])


def load_data(config: DataConfig, data_dir: str | os.PathLike[str] | None = None) -> Dataset:
    """Generate or load the data set of a study (SPEC §6)."""
    if config.kind == "spirals":
        kw = dict(turns=config.turns, a=config.a, p=config.p, noise=config.noise)
        xtr, ytr = spirals(config.n_train, seed=config.seed, **kw)
        xte, yte = spirals(config.n_test, seed=config.resolved_test_seed, **kw)
        return Dataset(xtr, ytr, xte, yte, 2)
    if config.kind == "planar_trig":
        kw = dict(frequency=config.frequency, b=config.b, noise=config.noise)
        xtr, ytr = planar_trig(config.n_train, seed=config.seed, **kw)
        xte, yte = planar_trig(config.n_test, seed=config.resolved_test_seed, **kw)
        return Dataset(xtr, ytr, xte, yte, 2)
    loader = load_mnist if config.kind == "mnist" else load_fashion_mnist
    xtr, ytr = loader("train", data_dir, normalize=config.normalize)
    xte, yte = loader("test", data_dir, normalize=config.normalize)
    xtr, ytr = xtr[: config.n_train], ytr[: config.n_train]
    xte, yte = xte[: config.n_test], yte[: config.n_test]
    if config.flatten:
        xtr, xte = xtr.flatten(1), xte.flatten(1)
    return Dataset(xtr.contiguous(), ytr, xte.contiguous(), yte, 10)


def build_model(study: StudyConfig, method: MethodConfig, data: Dataset,
                seeds: Sequence[int]) -> StackableModel:
    """The K = ``len(seeds)`` member ensemble of the study's network for ``method``."""
    m = study.model
    init = m.init_spec(method.init, method.init_std)
    out = 1 if data.n_classes == 2 else data.n_classes
    init_seeds = stream_seeds(seeds, "init")
    if m.kind == "cnn":
        return CNN(data.image_shape, out, channels=m.channels, activation=m.activation,
                   ensemble=len(seeds), init=init, seed=init_seeds)
    widths = [data.input_dim, *m.hidden, out]
    return MLP(widths, activation=m.activation, ensemble=len(seeds), init=init, seed=init_seeds)


def build_optimizer(method: MethodConfig, model: StackableModel, seeds: Sequence[int],
                    rng: str = "torch") -> torch.optim.Optimizer:
    """The optimizer of ``method`` over the stacked parameters of ``model`` (samplers draw
    their noise from ``rng``)."""
    hp = dict(method.hyperparameters)
    kind = method.optimizer
    noise = {"ensemble_dim": 0, "seed": stream_seeds(seeds, "noise"), "rng": rng}
    for key in ("temperature", "friction"):
        if isinstance(hp.get(key), list):
            hp[key] = tuple(hp[key]) if kind in ("adlala", "lol") else list(hp[key])
    if kind == "adlala":
        return samplers.AdLaLa(model, **hp, **noise)
    if kind == "lol":
        return samplers.LOL(model, **hp, **noise)
    if kind == "lala":
        return samplers.LaLa(model, **hp, **noise)
    if kind == "baoab":
        return samplers.BAOAB(model.parameters(), **hp, **noise)
    if kind == "sgld":
        return samplers.SGLD(model.parameters(), **hp, **noise)
    if kind == "sgd":
        return torch.optim.SGD(model.parameters(), lr=hp["lr"], momentum=hp["momentum"])
    if kind == "adam":
        return torch.optim.Adam(model.parameters(), lr=hp["lr"], betas=tuple(hp["betas"]),
                                eps=hp["eps"])
    raise ValueError(f"unknown optimizer {kind!r}")  # pragma: no cover - validated earlier
