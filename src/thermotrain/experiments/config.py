r"""Study configurations: one TOML file per study, validated into frozen dataclasses.

A study file (see ``studies/*.toml``) has the tables

* ``name``, ``description``, ``source`` — identification (``name`` defaults to the file stem);
* ``[data]`` — :class:`DataConfig` (spirals, planar trigonometric data, MNIST, Fashion-MNIST);
* ``[model]`` — :class:`ModelConfig` (an MLP/SHLP or a small CNN, its initialisation);
* ``[training]`` — :class:`TrainingConfig` (seeds, steps, batch size, evaluation, checkpoints);
* ``[[methods]]`` — one table per method (:class:`MethodConfig`): ``name``, ``optimizer``
  (``adlala``, ``lol``, ``lala``, ``baoab``, ``sgld``, ``sgd``, ``adam``), its
  hyperparameters, an optional ``init`` override and an optional ``[methods.sweep]`` whose
  lists are expanded (Cartesian product) into one method per combination;
* ``[paper.NAME]`` — the paper's reported numbers for method ``NAME`` (:class:`PaperResult`);
* ``notes`` — free text on the comparison with the paper (a string or a list of strings, one
  paragraph each: e.g. why our numbers differ); copied to the run's ``config.json`` and shown
  under "Notes" in ``report.md``;
* ``[quick]`` — overrides merged into the tables above by ``--quick`` (plus ``sweep_limit``:
  keep only the first n values of each sweep list).

Every key is checked: an unknown key or a bad value raises :class:`ConfigError` whose
one-line message names the file and the key (``studies/fig8.toml: [training] steps must be
an integer >= 1, got -3``).

**Seeds.** Member k of a study uses the run seed :math:`s_k` = ``training.seed + k``; it
initialises the network with :math:`s_k`, draws its minibatches with
:math:`s_k + 1\,000\,003` and its sampler noise with :math:`s_k + 2\,000\,006`
(:func:`stream_seeds`). Every method sees the same initialisation and batches for a given k
(paired comparisons, as the paper's "same initial conditions").

**SGLD's σ.** The paper quotes SGLD by its noise amplitude σ; our SGLD takes the temperature
τ with :math:`\sigma = \sqrt{2\tau}`. A method may give ``sigma`` instead of ``temperature``;
it is converted to :math:`\tau = \sigma^2/2`.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..samplers.noise import RNGS

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = [
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "TrainingConfig",
    "MethodConfig",
    "PaperResult",
    "StudyConfig",
    "OPTIMIZERS",
    "DATA_KINDS",
    "load_study",
    "parse_study",
    "apply_overrides",
    "stream_seeds",
    "slug",
]

#: data-set kinds and the optional keys each accepts (beyond the common ones)
DATA_KINDS: dict[str, tuple[str, ...]] = {
    "spirals": ("turns", "a", "p", "noise"),
    "planar_trig": ("frequency", "b", "noise"),
    "mnist": ("normalize", "flatten"),
    "fashion_mnist": ("normalize", "flatten"),
}

#: optimizer kinds and their hyperparameters: key -> (kind of value, default or None)
#: kinds: "float" (>= 0), "pair" (a float or [first layer, other layers]), "list" (a float or
#: one float per layer), "betas" (two floats in [0, 1)), "signed" (any finite float)
OPTIMIZERS: dict[str, dict[str, tuple[str, Any]]] = {
    "adlala": {
        "lr": ("float", 0.25),
        "friction": ("float", 0.1),
        "temperature": ("pair", 1e-4),
        "noise": ("float", 0.01),
        "coupling": ("float", 0.05),
        "xi_init": ("signed", 0.1),
    },
    "lol": {"lr": ("float", 0.1), "friction": ("float", 0.01), "temperature": ("pair", 1e-3)},
    "lala": {"lr": ("float", 0.1), "friction": ("list", 1.0), "temperature": ("list", 1e-4)},
    "baoab": {"lr": ("float", 0.1), "friction": ("float", 1.0), "temperature": ("float", 1e-4)},
    "sgld": {"lr": ("float", 0.1), "temperature": ("float", None), "sigma": ("float", None)},
    "sgd": {"lr": ("float", 0.1), "momentum": ("float", 0.0)},
    "adam": {"lr": ("float", 1e-3), "betas": ("betas", (0.9, 0.999)), "eps": ("float", 1e-8)},
}

_SEED_STREAMS = {"init": 0, "batches": 1_000_003, "noise": 2_000_006}


class ConfigError(ValueError):
    """A study file or an override is invalid; the message is one line naming file and key."""


def stream_seeds(seeds: Sequence[int], stream: str) -> list[int]:
    """The seeds of one random stream (``"init"``, ``"batches"``, ``"noise"``) for run seeds
    :math:`s_k`: :math:`s_k` plus a fixed offset per stream (see the module docstring)."""
    return [int(s) + _SEED_STREAMS[stream] for s in seeds]


def slug(name: str) -> str:
    """A file-system friendly version of a method name (``AdLaLa(noise=0.01)`` →
    ``AdLaLa_noise-0.01``)."""
    text = re.sub(r"[=]", "-", name)
    text = re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_")
    return text or "method"


# --------------------------------------------------------------------------- value checks
class _Where:
    """Where a value comes from, for error messages: the file and the table."""

    def __init__(self, file: str, table: str):
        self.file, self.table = file, table

    def fail(self, key: str, message: str) -> ConfigError:
        table = f"[{self.table}] " if self.table else ""
        return ConfigError(f"{self.file}: {table}{key} {message}")


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(w: _Where, key: str, v: object, minimum: int = 0) -> int:
    if not _is_int(v) or v < minimum:
        raise w.fail(key, f"must be an integer >= {minimum}, got {v!r}")
    return int(v)


def _float(w: _Where, key: str, v: object, *, positive: bool = False, signed: bool = False
           ) -> float:
    if not _is_real(v):
        raise w.fail(key, f"must be a finite number, got {v!r}")
    v = float(v)
    if positive and v <= 0:
        raise w.fail(key, f"must be > 0, got {v!r}")
    if not signed and v < 0:
        raise w.fail(key, f"must be >= 0, got {v!r}")
    return v


def _str(w: _Where, key: str, v: object, choices: Sequence[str] | None = None) -> str:
    if not isinstance(v, str):
        raise w.fail(key, f"must be a string, got {v!r}")
    if choices is not None and v not in choices:
        raise w.fail(key, f"must be one of {', '.join(choices)}; got {v!r}")
    return v


def _bool(w: _Where, key: str, v: object) -> bool:
    if not isinstance(v, bool):
        raise w.fail(key, f"must be true or false, got {v!r}")
    return v


def _int_list(w: _Where, key: str, v: object, minimum: int = 0) -> tuple[int, ...]:
    if not isinstance(v, list) or not all(_is_int(x) and x >= minimum for x in v):
        raise w.fail(key, f"must be a list of integers >= {minimum}, got {v!r}")
    return tuple(int(x) for x in v)


def _table(w: _Where, key: str, v: object) -> dict:
    if not isinstance(v, Mapping):
        raise w.fail(key, f"must be a table, got {v!r}")
    return dict(v)


def _reject_unknown(w: _Where, table: Mapping, allowed: Sequence[str]) -> None:
    for key in table:
        if key not in allowed:
            raise w.fail(
                repr(key), f"is not a known key (allowed: {', '.join(sorted(allowed))})"
            )


# --------------------------------------------------------------------------- dataclasses
@dataclass(frozen=True)
class DataConfig:
    """The data set.

    Attributes:
        kind: ``spirals`` (SPEC §6, Eq. 16), ``planar_trig`` (Eq. 17, our definition),
            ``mnist`` or ``fashion_mnist``.
        n_train, n_test: sizes; generated sets draw that many points, image sets keep the
            first ``n`` images (``None``: all).
        seed: seed of the training set; ``test_seed`` (default ``seed + 1``) of the test set.
        turns, a, p, noise: spiral parameters (b, a, p, c of Eq. 16).
        frequency, b, noise: planar trigonometric parameters (a, b, c of Eq. 17).
        normalize: standardize images with the training mean/std; ``flatten``: feed images
            as vectors (MLP) rather than ``(1, 28, 28)`` (CNN).
    """

    kind: str
    n_train: int | None = None
    n_test: int | None = None
    seed: int = 0
    test_seed: int | None = None
    turns: float = 4.0
    a: float = 2.0
    p: float = 0.5
    noise: float = 0.02
    frequency: float = 3.0
    b: float = 2.0
    normalize: bool = False
    flatten: bool = True

    @property
    def resolved_test_seed(self) -> int:
        """The test-set seed (``seed + 1`` unless given)."""
        return self.seed + 1 if self.test_seed is None else self.test_seed

    @property
    def binary(self) -> bool:
        """Two classes with one sigmoid output (generated sets) vs ten-class softmax."""
        return self.kind in ("spirals", "planar_trig")


@dataclass(frozen=True)
class ModelConfig:
    """The network: ``mlp`` = Linear → φ → … → Linear (``hidden`` widths; ``[H]`` is the
    paper's SHLP), or ``cnn`` (:class:`thermotrain.models.CNN`, ``channels``).
    ``init = "default"`` (PyTorch's U(±1/√fan_in)) or ``"normal"`` with ``init_std``."""

    kind: str = "mlp"
    hidden: tuple[int, ...] = (100,)
    activation: str = "relu"
    init: str = "default"
    init_std: float | None = None
    channels: tuple[int, ...] = (16, 32)

    def init_spec(self, init: str | None = None, init_std: float | None = None) -> Any:
        """The ``init=`` argument of the model constructors (method overrides first)."""
        kind = init or self.init
        std = init_std if init is not None else self.init_std
        return "default" if kind == "default" else ("normal", std)


@dataclass(frozen=True)
class TrainingConfig:
    """The training protocol, the same for every method of a study.

    Attributes:
        seeds: number of runs K per method (trained together as one ensemble).
        seed: run seed of member 0 (member k uses ``seed + k``).
        steps: optimizer steps per run.
        batch_size: minibatch size B.
        replacement: ``false``: epoch-wise reshuffled batches (PyTorch's DataLoader(shuffle=True),
            the authors' protocol); ``true``: a fresh batch every step (SPEC §4).
        eval_every: evaluate train/test loss and accuracy on the full sets every this many
            steps (plus at step 0, at ``eval_at`` and at the end).
        eval_at: extra evaluation steps.
        checkpoint_every: write a resumable checkpoint every this many steps (0: only at the
            end and on interrupts).
        snapshot_at: steps at which parameters are saved for the report (first-layer weights
            and biases of every member, all parameters of ``saved_members`` members); step 0
            and the last step are always included.
        saved_members: how many members' full parameters to keep (decision boundaries).
        eval_batch: evaluation chunk size (bounds memory on large data sets).
        snapshot_average: W ≥ 1; with W > 1 every snapshot at step s also keeps the
            parameters of the ``saved_members`` members at the last W steps
            ``max(0, s - W + 1), …, s`` (key ``"window"`` of the snapshot), and the report
            draws the classifier averaged over them: the mean of the W predicted
            probabilities (paper Fig. 9: "the classifier was averaged over the last 10 steps
            of training"). 1 (default): no averaging.
        rng: the samplers' noise source, ``"torch"`` (default: torch generators, SPEC §0) or
            ``"philox"`` (counter-based and fused with the update: several times faster
            per step; see :mod:`thermotrain.samplers.philox`).
    """

    steps: int
    batch_size: int
    seeds: int = 1
    seed: int = 0
    replacement: bool = False
    eval_every: int = 1000
    eval_at: tuple[int, ...] = ()
    checkpoint_every: int = 10_000
    snapshot_at: tuple[int, ...] = ()
    saved_members: int = 3
    eval_batch: int = 10_000
    snapshot_average: int = 1
    rng: str = "torch"

    @property
    def run_seeds(self) -> list[int]:
        """The run seeds :math:`s_0, …, s_{K-1}`."""
        return [self.seed + k for k in range(self.seeds)]

    def eval_steps(self) -> list[int]:
        """Sorted evaluation steps: 0, every ``eval_every``, ``eval_at`` and the last step."""
        steps = set(range(0, self.steps + 1, self.eval_every)) | {0, self.steps}
        steps |= {s for s in self.eval_at if s <= self.steps}
        return sorted(steps)

    def snapshot_steps(self) -> list[int]:
        """Sorted snapshot steps (always 0 and the last step)."""
        return sorted({0, self.steps} | {s for s in self.snapshot_at if s <= self.steps})


@dataclass(frozen=True)
class MethodConfig:
    """One trained method: the optimizer kind and its resolved hyperparameters.

    Attributes:
        name: unique display name (expanded sweeps: ``base(key=value, ...)``).
        optimizer: one of :data:`OPTIMIZERS`.
        hyperparameters: keyword arguments of the optimizer (defaults filled in; SGLD's
            ``sigma`` converted to ``temperature``).
        init, init_std: optional override of the model's initialisation.
        base: the name before sweep expansion; ``sweep``: this cell's swept values.
    """

    name: str
    optimizer: str
    hyperparameters: dict[str, Any]
    init: str | None = None
    init_std: float | None = None
    base: str = ""
    sweep: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PaperResult:
    """The paper's reported final test accuracy (fraction) for one method, ± its spread."""

    test_accuracy: float | None = None
    test_accuracy_std: float | None = None
    step: int | None = None
    note: str = ""


@dataclass(frozen=True)
class StudyConfig:
    """A validated study: what to train, how, and what the paper reports."""

    name: str
    description: str
    data: DataConfig
    model: ModelConfig
    training: TrainingConfig
    methods: tuple[MethodConfig, ...]
    paper: dict[str, PaperResult]
    source: str = ""
    path: str = ""
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-serialisable) of the resolved configuration."""
        out = asdict(self)
        out["methods"] = [asdict(m) for m in self.methods]
        return _jsonable(out)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


# --------------------------------------------------------------------------- parsing
_TOP_KEYS = ("name", "description", "source", "notes", "data", "model", "training", "methods",
             "paper", "quick")
_QUICK_KEYS = ("data", "model", "training", "sweep_limit")
_METHOD_KEYS = ("name", "optimizer", "init", "init_std", "sweep")


def _parse_data(raw: dict, file: str) -> DataConfig:
    w = _Where(file, "data")
    if "kind" not in raw:
        raise w.fail("kind", f"is missing (one of {', '.join(DATA_KINDS)})")
    kind = _str(w, "kind", raw["kind"], tuple(DATA_KINDS))
    common = ("kind", "n_train", "n_test", "seed", "test_seed")
    _reject_unknown(w, raw, common + DATA_KINDS[kind])
    kw: dict[str, Any] = {"kind": kind}
    for key in ("n_train", "n_test"):
        if key in raw:
            kw[key] = _int(w, key, raw[key], minimum=2 if kind == "spirals" else 1)
    if kind == "spirals":
        for key in ("n_train", "n_test"):
            if key not in raw:
                raise w.fail(key, "is required for generated data")
            if kw[key] % 2:
                raise w.fail(key, f"must be even for spirals (n/2 points per class), got "
                                  f"{kw[key]}")
    if kind == "planar_trig":
        for key in ("n_train", "n_test"):
            if key not in raw:
                raise w.fail(key, "is required for generated data")
    for key in ("seed", "test_seed"):
        if key in raw:
            kw[key] = _int(w, key, raw[key])
    for key in ("turns", "a", "p", "frequency", "b"):
        if key in raw:
            kw[key] = _float(w, key, raw[key], positive=True)
    if "noise" in raw:
        kw["noise"] = _float(w, "noise", raw["noise"])
    for key in ("normalize", "flatten"):
        if key in raw:
            kw[key] = _bool(w, key, raw[key])
    return DataConfig(**kw)


def _parse_model(raw: dict, file: str) -> ModelConfig:
    w = _Where(file, "model")
    _reject_unknown(w, raw, ("kind", "hidden", "activation", "init", "init_std", "channels"))
    kw: dict[str, Any] = {}
    if "kind" in raw:
        kw["kind"] = _str(w, "kind", raw["kind"], ("mlp", "cnn"))
    if "hidden" in raw:
        kw["hidden"] = _int_list(w, "hidden", raw["hidden"], minimum=1)
    if "channels" in raw:
        kw["channels"] = _int_list(w, "channels", raw["channels"], minimum=1)
        if not kw["channels"]:
            raise w.fail("channels", "must list at least one convolution")
    if "activation" in raw:
        kw["activation"] = _str(w, "activation", raw["activation"], ("relu", "tanh"))
    init, std = _parse_init(w, raw)
    if init is not None:
        kw["init"], kw["init_std"] = init, std
    return ModelConfig(**kw)


def _parse_init(w: _Where, raw: Mapping) -> tuple[str | None, float | None]:
    init = raw.get("init")
    std = raw.get("init_std")
    if init is None:
        if std is not None:
            raise w.fail("init_std", 'needs init = "normal"')
        return None, None
    init = _str(w, "init", init, ("default", "normal"))
    if init == "normal":
        if std is None:
            raise w.fail("init_std", 'is required with init = "normal" (the paper: 0.01 or 0.5)')
        return init, _float(w, "init_std", std, positive=True)
    if std is not None:
        raise w.fail("init_std", 'only applies to init = "normal"')
    return init, None


def _parse_training(raw: dict, file: str) -> TrainingConfig:
    w = _Where(file, "training")
    names = tuple(TrainingConfig.__dataclass_fields__)
    _reject_unknown(w, raw, names)
    for key in ("steps", "batch_size"):
        if key not in raw:
            raise w.fail(key, "is required")
    kw: dict[str, Any] = {}
    for key, minimum in (("steps", 1), ("batch_size", 1), ("seeds", 1), ("seed", 0),
                         ("eval_every", 1), ("checkpoint_every", 0), ("saved_members", 0),
                         ("eval_batch", 1), ("snapshot_average", 1)):
        if key in raw:
            kw[key] = _int(w, key, raw[key], minimum)
    if kw.get("snapshot_average", 1) > 1 and kw.get("saved_members", 3) == 0:
        raise w.fail("snapshot_average", f"({kw['snapshot_average']}) needs saved_members >= 1 "
                                         "(the averaged classifier uses the saved members)")
    for key in ("eval_at", "snapshot_at"):
        if key in raw:
            kw[key] = _int_list(w, key, raw[key])
    if "replacement" in raw:
        kw["replacement"] = _bool(w, "replacement", raw["replacement"])
    if "rng" in raw:
        kw["rng"] = _str(w, "rng", raw["rng"], RNGS)
    return TrainingConfig(**kw)


def _check_hyper(w: _Where, key: str, kind: str, v: object) -> Any:
    if kind == "float":
        return _float(w, key, v)
    if kind == "signed":
        return _float(w, key, v, signed=True)
    if kind == "pair":
        if isinstance(v, list):
            if len(v) != 2:
                raise w.fail(key, f"must be a number or a pair [first layer, other layers], "
                                  f"got {v!r}")
            return [_float(w, f"{key}[{i}]", x) for i, x in enumerate(v)]
        return _float(w, key, v)
    if kind == "list":
        if isinstance(v, list):
            if not v:
                raise w.fail(key, "must not be an empty list")
            return [_float(w, f"{key}[{i}]", x) for i, x in enumerate(v)]
        return _float(w, key, v)
    if kind == "betas":
        if not isinstance(v, list) or len(v) != 2 or not all(_is_real(x) and 0 <= x < 1
                                                              for x in v):
            raise w.fail(key, f"must be two numbers in [0, 1), got {v!r}")
        return [float(x) for x in v]
    raise AssertionError(kind)  # pragma: no cover


def _set_indexed(params: dict, key: str, value: Any, w: _Where) -> None:
    """``key`` is ``name`` or ``name[i]`` (one entry of a pair/list hyperparameter)."""
    m = re.fullmatch(r"([A-Za-z_]+)\[(\d+)\]", key)
    if m is None:
        params[key] = value
        return
    name, i = m.group(1), int(m.group(2))
    current = params.get(name)
    if current is None:
        raise w.fail(key, f"sweeps an entry of {name!r}, which has no value to start from")
    items = list(current) if isinstance(current, list) else [current, current]
    if i >= len(items):
        raise w.fail(key, f"index {i} is out of range for {name} = {current!r}")
    items[i] = value
    params[name] = items


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ",".join(_fmt(v) for v in value) + "]"
    return str(value)


def _parse_methods(raw: object, file: str, sweep_limit: int | None) -> tuple[MethodConfig, ...]:
    top = _Where(file, "")
    if not isinstance(raw, list) or not raw:
        raise top.fail("[[methods]]", "must be a non-empty array of tables")
    out: list[MethodConfig] = []
    for i, table in enumerate(raw):
        w0 = _Where(file, f"methods #{i + 1}")
        table = _table(w0, "entry", table)
        if "name" not in table:
            raise w0.fail("name", "is required")
        name = _str(w0, "name", table["name"])
        w = _Where(file, f"methods.{name}")
        if "optimizer" not in table:
            raise w.fail("optimizer", f"is required (one of {', '.join(OPTIMIZERS)})")
        kind = _str(w, "optimizer", table["optimizer"], tuple(OPTIMIZERS))
        schema = OPTIMIZERS[kind]
        _reject_unknown(w, table, _METHOD_KEYS + tuple(schema))
        init, std = _parse_init(w, table)
        given = {k: table[k] for k in schema if k in table}
        sweep = _table(w, "sweep", table.get("sweep", {}))
        axes: list[tuple[str, list]] = []
        for key, values in sweep.items():
            bare = re.sub(r"\[\d+\]$", "", key)
            if bare not in schema:
                raise w.fail(f"sweep.{key}", f"is not a hyperparameter of {kind} "
                                             f"(allowed: {', '.join(schema)})")
            if not isinstance(values, list) or not values:
                raise w.fail(f"sweep.{key}", f"must be a non-empty list, got {values!r}")
            if sweep_limit is not None:
                values = values[:sweep_limit]
            axes.append((key, values))
        combos = list(itertools.product(*[v for _, v in axes])) if axes else [()]
        for combo in combos:
            params = dict(given)
            cell = {}
            for (key, _), value in zip(axes, combo, strict=True):
                _set_indexed(params, key, value, w)
                cell[key] = value
            hyper = _resolve_hyper(w, kind, schema, params)
            full = name if not cell else (
                f"{name}(" + ", ".join(f"{k}={_fmt(v)}" for k, v in cell.items()) + ")"
            )
            out.append(MethodConfig(full, kind, hyper, init, std, name, cell))
    names = [m.name for m in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise top.fail("[[methods]]", f"has duplicate method names: {', '.join(dupes)}")
    slugs = [slug(n) for n in names]
    if len(set(slugs)) != len(slugs):
        raise top.fail("[[methods]]", "has method names that collide as folder names")
    return tuple(out)


def _resolve_hyper(w: _Where, kind: str, schema: dict, params: dict) -> dict[str, Any]:
    hyper: dict[str, Any] = {}
    for key, (vkind, default) in schema.items():
        if key in params:
            hyper[key] = _check_hyper(w, key, vkind, params[key])
        elif default is not None:
            hyper[key] = list(default) if isinstance(default, tuple) else default
    if kind == "sgld":
        if ("temperature" in hyper) == ("sigma" in hyper):
            raise w.fail("temperature", "or sigma (σ = √(2τ)) must be given, exactly one")
        if "sigma" in hyper:
            hyper["temperature"] = hyper.pop("sigma") ** 2 / 2
    return hyper


def _parse_paper(raw: object, file: str, names: Sequence[str]) -> dict[str, PaperResult]:
    w = _Where(file, "paper")
    raw = _table(w, "[paper]", raw)
    out = {}
    for name, entry in raw.items():
        we = _Where(file, f"paper.{name}")
        entry = _table(we, "entry", entry)
        _reject_unknown(we, entry, ("test_accuracy", "test_accuracy_std", "step", "note"))
        if name not in names:
            raise w.fail(repr(name), f"is not a method of this study ({', '.join(names)})")
        kw: dict[str, Any] = {}
        for key in ("test_accuracy", "test_accuracy_std"):
            if key in entry:
                kw[key] = _float(we, key, entry[key])
                if kw[key] > 1:
                    raise we.fail(key, f"is a fraction in [0, 1], got {kw[key]}")
        if "step" in entry:
            kw["step"] = _int(we, "step", entry["step"], 0)
        if "note" in entry:
            kw["note"] = _str(we, "note", entry["note"])
        out[name] = PaperResult(**kw)
    return out


def _parse_notes(raw: object, file: str) -> tuple[str, ...]:
    w = _Where(file, "")
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(x, str) and x.strip() for x in items):
        raise w.fail("notes", f"must be a non-empty string or a list of them, got {raw!r}")
    return tuple(" ".join(x.split()) for x in items)


def parse_study(raw: Mapping[str, Any], file: str = "<study>", *, quick: bool = False,
                name: str | None = None) -> StudyConfig:
    """Validate the raw TOML content of a study (after overrides) into a :class:`StudyConfig`.

    Args:
        raw: the parsed TOML document.
        file: shown in error messages.
        quick: merge the ``[quick]`` table first.
        name: default study name (the file stem) when the file has no ``name``.
    """
    raw = copy.deepcopy(dict(raw))
    top = _Where(file, "")
    _reject_unknown(top, raw, _TOP_KEYS)
    quick_table = _table(_Where(file, ""), "[quick]", raw.pop("quick", {}))
    sweep_limit = None
    wq = _Where(file, "quick")
    _reject_unknown(wq, quick_table, _QUICK_KEYS)
    if quick:
        if "sweep_limit" in quick_table:
            sweep_limit = _int(wq, "sweep_limit", quick_table.pop("sweep_limit"), 1)
        for key in ("data", "model", "training"):
            if key in quick_table:
                merged = dict(raw.get(key, {}))
                merged.update(_table(wq, key, quick_table[key]))
                raw[key] = merged
    for key in ("data", "training"):
        if key not in raw:
            raise top.fail(f"[{key}]", "is required")
    study_name = raw.get("name", name or Path(file).stem)
    study_name = _str(top, "name", study_name)
    description = _str(top, "description", raw.get("description", ""))
    source = _str(top, "source", raw.get("source", ""))
    notes = _parse_notes(raw["notes"], file) if "notes" in raw else ()
    data = _parse_data(_table(top, "[data]", raw["data"]), file)
    model = _parse_model(_table(top, "[model]", raw.get("model", {})), file)
    training = _parse_training(_table(top, "[training]", raw["training"]), file)
    if training.batch_size > (data.n_train or training.batch_size):
        raise _Where(file, "training").fail(
            "batch_size", f"({training.batch_size}) exceeds data.n_train ({data.n_train})")
    if model.kind == "cnn" and data.binary:
        raise _Where(file, "model").fail("kind", "cnn needs image data (mnist, fashion_mnist)")
    if model.kind == "cnn" and data.flatten:
        data = DataConfig(**{**asdict(data), "flatten": False})
    methods = _parse_methods(raw.get("methods"), file, sweep_limit)
    all_names = [m.name for m in _parse_methods(raw.get("methods"), file, None)]
    paper = _parse_paper(raw.get("paper", {}), file, all_names)
    return StudyConfig(study_name, description, data, model, training, methods, paper, source,
                       file, notes)


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file, turning syntax errors into a one-line :class:`ConfigError`."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare string


def apply_overrides(raw: Mapping[str, Any], assignments: Sequence[str], file: str = "<study>"
                    ) -> dict[str, Any]:
    """Apply ``--set key=value`` overrides to the raw document (before validation).

    ``key`` is dotted: ``training.steps=500``, ``data.n_train=200``,
    ``methods.AdLaLa.lr=0.1`` (a method by name), ``quick.training.steps=50``. ``value`` is
    TOML (``1e-4``, ``[1e-4, 1e-5]``, ``true``, ``"normal"``) or a bare string.
    """
    out = copy.deepcopy(dict(raw))
    for item in assignments:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. training.steps=500")
        key, text = item.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        if not key or any(not p for p in parts):
            raise ConfigError(f"--set {item!r}: bad key {key!r}")
        value = _parse_value(text.strip())
        node: Any = out
        if parts[0] == "methods":
            if len(parts) != 3:
                raise ConfigError(f"--set {item!r}: use methods.NAME.key=value")
            tables = [m for m in out.get("methods", []) if m.get("name") == parts[1]]
            if not tables:
                names = ", ".join(str(m.get("name")) for m in out.get("methods", []))
                raise ConfigError(f"--set {item!r}: {file} has no method {parts[1]!r} "
                                  f"(methods: {names})")
            tables[0][parts[2]] = value
            continue
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {item!r}: {p!r} is not a table")
            node = nxt
        node[parts[-1]] = value
    return out


def load_study(path: str | Path, *, quick: bool = False, overrides: Sequence[str] = (),
               seeds: int | None = None, steps: int | None = None,
               methods: Sequence[str] | None = None) -> StudyConfig:
    """Read, override and validate a study file.

    Args:
        path: the TOML file.
        quick: apply its ``[quick]`` table (tiny settings for smoke tests).
        overrides: ``key=value`` strings (see :func:`apply_overrides`), applied after
            ``quick``.
        seeds, steps: shortcuts for ``training.seeds`` / ``training.steps``.
        methods: keep only these methods (names before or after sweep expansion).

    Raises:
        ConfigError: with a one-line message naming the file and the key.
    """
    path = Path(path)
    raw = read_toml(path)
    file = str(path)
    explicit = [item.split("=", 1)[0].strip() for item in overrides]
    raw = apply_overrides(raw, overrides, file)
    if seeds is not None:
        raw.setdefault("training", {})["seeds"] = seeds
        explicit.append("training.seeds")
    if steps is not None:
        raw.setdefault("training", {})["steps"] = steps
        explicit.append("training.steps")
    quick_table = raw.get("quick")
    if quick and isinstance(quick_table, Mapping):
        # explicit command-line values win over [quick]
        for key in explicit:
            parts = key.split(".")
            if len(parts) == 2 and isinstance(quick_table.get(parts[0]), dict):
                quick_table[parts[0]].pop(parts[1], None)
    study = parse_study(raw, file, quick=quick, name=path.stem)
    if methods:
        wanted = list(dict.fromkeys(methods))
        known = {m.name for m in study.methods} | {m.base for m in study.methods}
        unknown = [m for m in wanted if m not in known]
        if unknown:
            raise ConfigError(
                f"{file}: no method named {', '.join(map(repr, unknown))} (methods: "
                f"{', '.join(dict.fromkeys(m.base for m in study.methods))})"
            )
        kept = tuple(m for m in study.methods if m.name in wanted or m.base in wanted)
        study = StudyConfig(**{**study.__dict__, "methods": kept})
    return study
