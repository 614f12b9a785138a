"""From a validated study to tensors, ensemble models and optimizers (library calls only).

* :func:`load_data` — the training and test sets of a :class:`~.config.DataConfig`;
* :func:`build_model` — a K-member ensemble (:class:`thermotrain.models.MLP` or
  :class:`~thermotrain.models.CNN`), member k initialised with its run seed;
* :func:`build_optimizer` — the method's optimizer over the stacked parameters: the
  thermotrain samplers with ``ensemble_dim=0`` and per-member noise seeds, or
  ``torch.optim.SGD`` / ``Adam``, which act elementwise and are therefore exactly K
  independent optimizers on stacked parameters;
* :func:`sweep_packs`, :func:`build_packed_optimizer` — the cells of a hyperparameter sweep
  times the seeds as **one** ensemble with per-member hyperparameters (``(K,)`` tensors),
  where the optimizer takes them (otherwise the cells train one by one).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..data import load_fashion_mnist, load_mnist, planar_trig, spirals
from ..models import CNN, MLP, StackableModel
from .config import DataConfig, MethodConfig, StudyConfig, make_optimizer, stream_seeds

__all__ = ["Dataset", "load_data", "evaluator", "build_model", "build_optimizer",
           "build_packed_optimizer", "member_hyperparameters",
           "supports_member_hyperparameters", "sweep_packs"]


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
    """Generate or load the data set of a study (docs/science.md §6)."""
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


def evaluator(data: Dataset, chunk: int = 10_000
              ) -> Callable[[torch.nn.Module], dict[str, dict[str, Tensor]]]:
    """The runner's evaluation for :func:`thermotrain.training.train`: per-member mean loss
    and accuracy on the whole training and test sets, ``{split: {"loss", "accuracy"}}``."""
    from ..training.snapshots import evaluate

    def run(model: torch.nn.Module) -> dict[str, dict[str, Tensor]]:
        out = {}
        for split, xs, ys in (("train", data.x_train, data.y_train),
                              ("test", data.x_test, data.y_test)):
            loss, acc = evaluate(model, xs, ys, chunk)
            out[split] = {"loss": loss, "accuracy": acc}
        return out

    return run


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
                    rng: str = "philox", nan_policy: str = "raise") -> torch.optim.Optimizer:
    """The optimizer of ``method`` over the stacked parameters of ``model`` (samplers draw
    their noise from ``rng`` and treat non-finite values by ``nan_policy``; the runner
    passes ``"ignore"`` and leaves diverging members to its
    :class:`~thermotrain.training.DivergenceGuard`)."""
    return _make_optimizer(method.optimizer, dict(method.hyperparameters), model, seeds, rng,
                           nan_policy)


def _make_optimizer(kind: str, hp: dict[str, Any], model: StackableModel,
                    seeds: Sequence[int], rng: str, nan_policy: str) -> torch.optim.Optimizer:
    # one registry of study optimizers (config.methods): adding a method touches one place
    return make_optimizer(kind, hp, model, seeds=stream_seeds(seeds, "noise"), rng=rng,
                          nan_policy=nan_policy)


# --------------------------------------------------------------------------- sweeps packed
def member_hyperparameters(cells: Sequence[MethodConfig], repeat: int) -> dict[str, Any]:
    """The hyperparameters of one ensemble holding ``repeat`` members (seeds) of every cell
    of a sweep, cell-major: a value shared by all cells stays as it is; one that differs
    becomes a float64 ``(len(cells) * repeat,)`` tensor, member ``c * repeat + j`` holding
    cell c's value (per position for per-layer pairs/lists)."""
    keys = list(cells[0].hyperparameters)
    if any(list(c.hyperparameters) != keys for c in cells):
        raise ValueError("the cells of a packed sweep must have the same hyperparameters")

    def column(values: list[Any]) -> Any:
        if all(v == values[0] for v in values):
            return values[0]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64)
        return t.repeat_interleave(repeat)

    out: dict[str, Any] = {}
    for key in keys:
        values = [c.hyperparameters[key] for c in cells]
        if all(isinstance(v, (list, tuple)) for v in values) and \
                len({len(v) for v in values}) == 1:
            cols = [column([v[i] for v in values]) for i in range(len(values[0]))]
            out[key] = cols if any(torch.is_tensor(c) for c in cols) else list(values[0])
        else:
            out[key] = column(values)
    return out


_SUPPORT: dict[tuple[str, str], bool] = {}


def supports_member_hyperparameters(kind: str, rng: str = "philox") -> bool:
    """Whether optimizer ``kind`` takes a ``(K,)`` tensor hyperparameter (one value per
    member): probed once per kind with a two-member network and one step."""
    key = (kind, rng)
    if key not in _SUPPORT:
        defaults = {"adlala": {"lr": 0.1}, "lol": {"lr": 0.1}, "lala": {"lr": 0.1},
                    "baoab": {"lr": 0.1}, "sgld": {"lr": 0.1, "temperature": 1e-4},
                    "sgd": {"lr": 0.1, "momentum": 0.0},
                    "adam": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8}}[kind]
        hp = dict(defaults, lr=torch.tensor([0.1, 0.2], dtype=torch.float64))
        net = MLP([2, 3, 1], ensemble=2, seed=[0, 1])
        try:
            opt = _make_optimizer(kind, hp, net, [0, 1], rng, "ignore")
            for p in net.parameters():
                p.grad = torch.ones_like(p)
            opt.step()
            _SUPPORT[key] = True
        except (TypeError, ValueError, RuntimeError):
            _SUPPORT[key] = False
    return _SUPPORT[key]


def sweep_packs(methods: Sequence[MethodConfig], rng: str = "philox"
                ) -> list[list[MethodConfig]]:
    """The study's methods in training units: the consecutive cells of one swept method
    (same ``base``, optimizer and initialisation: the same model and scheme) form one pack
    when the optimizer takes per-member hyperparameters; every other method is alone."""
    units: list[list[MethodConfig]] = []
    for m in methods:
        last = units[-1] if units else None
        if (last is not None and m.sweep and last[0].sweep and m.base == last[0].base
                and m.optimizer == last[0].optimizer and m.init == last[0].init
                and m.init_std == last[0].init_std
                and supports_member_hyperparameters(m.optimizer, rng)):
            last.append(m)
        else:
            units.append([m])
    return units


def build_packed_optimizer(cells: Sequence[MethodConfig], model: StackableModel,
                           seeds: Sequence[int], rng: str = "philox",
                           nan_policy: str = "raise") -> torch.optim.Optimizer:
    """The optimizer of a packed sweep: ``model`` holds ``len(seeds)`` members per cell,
    cell-major (``seeds`` the run seeds of one cell); member ``c * len(seeds) + j`` follows
    cell c's hyperparameters with seed j's noise stream — as cell c's own run would."""
    hp = member_hyperparameters(cells, len(seeds))
    return _make_optimizer(cells[0].optimizer, hp, model, list(seeds) * len(cells), rng,
                           nan_policy)
