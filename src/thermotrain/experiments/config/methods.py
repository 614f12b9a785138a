r"""The ``[[methods]]`` schema, derived from one registry of optimizers.

:func:`optimizer_registry` maps each ``optimizer = "..."`` name of a study file to a class:
the samplers' presets (``thermotrain.samplers.PRESETS``) plus ``sgd`` / ``adam`` from
:mod:`torch.optim`. The hyperparameters
a study may set, and their defaults, are read from each class's signature
(:func:`inspect.signature`): every positional-or-keyword argument after the first (``params``
or ``model``) that has a default. Adding a method is one registry entry; nothing here copies
a default.

Value kinds, from the default and the annotation of each argument:

* ``number`` — a finite number (``lr``, ``friction``, ...);
* ``numbers`` — a number or a list of numbers (arguments annotated ``Any`` or with a tuple
  default: AdLaLa's ``temperature = [τ₁, τ₂]``, LaLa's per-layer lists, Adam's ``betas``);
* ``indices`` — a list of layer indices (``Sequence[int]``: AdLaLa's ``adaptive_layers``);
* ``bool`` and ``str``.

Ranges (``lr >= 0``, ``betas`` in [0, 1), list lengths, "needs >= 2 layers") are the classes'
own checks: :func:`check_methods` builds every method's optimizer once, at load time, on a
small network with the study's layer structure, and turns the class's ``ValueError`` /
``TypeError`` into a :class:`~.schema.ConfigError` naming the method, so a config that would
fail after earlier methods trained is rejected before any training.

**SGLD's σ.** The paper quotes SGLD by its noise amplitude σ; our SGLD takes the temperature
τ with :math:`\sigma = \sqrt{2\tau}` (docs/science.md §3). An SGLD method gives exactly one of
``sigma`` and ``temperature``; ``sigma`` is converted to :math:`\tau = \sigma^2/2`.
"""

from __future__ import annotations

import inspect
import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ... import samplers, thermo
from .schema import ConfigError, Where, as_str, as_table, is_int, is_real, reject_unknown
from .study import DataConfig, MethodConfig, ModelConfig, slug

__all__ = ["Hyperparameter", "optimizer_registry", "method_schema", "optimizer_schemas",
           "OPTIMIZERS", "ALIASES",
           "make_optimizer", "parse_methods", "check_methods", "METHOD_KEYS"]

#: keys of a ``[[methods]]`` table besides the hyperparameters
METHOD_KEYS = ("name", "optimizer", "init", "init_std", "sweep")

#: study-file aliases: optimizer -> {alias: (hyperparameter, conversion)}; one of the alias and
#: the hyperparameter must be given
ALIASES: dict[str, dict[str, tuple[str, Callable[[float], float]]]] = {
    "sgld": {"sigma": ("temperature", lambda sigma: sigma * sigma / 2)},
}


@dataclass(frozen=True)
class Hyperparameter:
    """One settable argument of an optimizer class: its value kind and its default."""

    name: str
    kind: str
    default: Any


def optimizer_registry() -> dict[str, type]:
    """``optimizer = NAME`` → class: the samplers' presets (:data:`thermotrain.samplers.PRESETS`,
    read at each call), :class:`thermotrain.thermo.SGWORLD` and torch's SGD and Adam."""
    registry = {str(name).lower(): cls for name, cls in samplers.PRESETS.items()}
    registry.setdefault("sgworld", thermo.SGWORLD)
    # torch's SGD and Adam, taking (K,) per-member values too (packed sweeps)
    registry.setdefault("sgd", samplers.MemberSGD)
    registry.setdefault("adam", samplers.MemberAdam)
    return registry


def _kind(default: Any, annotation: str) -> str | None:
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, str):
        return "str"
    if "Sequence[int]" in annotation:
        return "indices"
    if isinstance(default, tuple) and default and all(is_real(x) for x in default):
        return "numbers"
    if is_real(default):
        return "numbers" if annotation in ("Any", "typing.Any") else "number"
    return None  # None, callables, ...: not settable from a study file


def method_schema(cls: type) -> dict[str, Hyperparameter]:
    """The settable hyperparameters of ``cls``, read from its signature."""
    params = list(inspect.signature(cls.__init__).parameters.values())[2:]  # self, params/model
    out = {}
    for p in params:
        if p.kind is not p.POSITIONAL_OR_KEYWORD or p.default is p.empty:
            continue
        annotation = p.annotation if isinstance(p.annotation, str) else str(p.annotation)
        kind = _kind(p.default, annotation)
        if kind is not None:
            default = list(p.default) if isinstance(p.default, tuple) else p.default
            if kind == "number":
                default = float(default)
            out[p.name] = Hyperparameter(p.name, kind, default)
    return out


def _takes_model(cls: type) -> bool:
    params = list(inspect.signature(cls.__init__).parameters)
    return len(params) > 1 and params[1] == "model"


def optimizer_schemas() -> dict[str, dict[str, Hyperparameter]]:
    """The schema of every registered optimizer: name -> {hyperparameter: Hyperparameter}
    (read from the registry at each call, so a new preset is picked up)."""
    return {name: method_schema(cls) for name, cls in optimizer_registry().items()}


#: :func:`optimizer_schemas` at import time (for reading; validation uses the live registry)
OPTIMIZERS: dict[str, dict[str, Hyperparameter]] = optimizer_schemas()


def make_optimizer(kind: str, hyperparameters: Mapping[str, Any], model: torch.nn.Module, *,
                   seeds: Sequence[int] | None = None, rng: str = "philox",
                   **sampler_options: Any) -> torch.optim.Optimizer:
    """The optimizer ``kind`` over ``model`` with resolved ``hyperparameters``.

    Partitioned presets get the model (they split it by layer), the others its parameters.
    Thermotrain samplers also get ``ensemble_dim=0`` and one noise seed per member
    (``seeds``, default ``0, 1, ...``) from the noise source ``rng``, plus
    ``sampler_options`` (e.g. ``nan_policy``); torch's optimizers act elementwise and are
    therefore exactly K independent optimizers on stacked parameters. Lists (per-layer pairs,
    betas) are passed as tuples.
    """
    cls = optimizer_registry()[kind]
    hp = {k: tuple(v) if isinstance(v, list) else v for k, v in hyperparameters.items()}
    target = model if _takes_model(cls) else model.parameters()
    if isinstance(cls, type) and issubclass(cls, samplers.PartitionedLangevin):
        k = getattr(model, "ensemble_size", None) or 1
        hp.update(ensemble_dim=0, rng=rng,
                  seed=list(seeds) if seeds is not None else list(range(int(k))),
                  **sampler_options)
    return cls(target, **hp)


# --------------------------------------------------------------------------- parsing
#: hyperparameters meet float32 tensors: beyond this magnitude torch cannot convert them
FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def _number(v: object) -> bool:
    return is_real(v) and abs(v) <= FLOAT32_MAX


def _check_value(w: Where, key: str, kind: str, v: object) -> Any:
    if kind == "number":
        if not _number(v):
            raise w.fail(key, f"must be a finite number with |value| <= {FLOAT32_MAX:.4g} "
                              f"(float32), got {v!r}")
        return float(v)
    if kind == "numbers":
        if isinstance(v, list):
            if not v or not all(_number(x) for x in v):
                raise w.fail(key, f"must be a number or a non-empty list of numbers with "
                                  f"|value| <= {FLOAT32_MAX:.4g}, got {v!r}")
            return [float(x) for x in v]
        if not _number(v):
            raise w.fail(key, f"must be a number or a list of numbers with |value| <= "
                              f"{FLOAT32_MAX:.4g}, got {v!r}")
        return float(v)
    if kind == "indices":
        if not isinstance(v, list) or not v or not all(is_int(x) for x in v):
            raise w.fail(key, f"must be a non-empty list of layer indices, got {v!r}")
        return [int(x) for x in v]
    if kind == "bool":
        if not isinstance(v, bool):
            raise w.fail(key, f"must be true or false, got {v!r}")
        return v
    return as_str(w, key, v)


def _set_indexed(params: dict, key: str, value: Any, w: Where) -> None:
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


def _resolve(w: Where, kind: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults from the signature, the given values checked, aliases converted."""
    schema = optimizer_schemas()[kind]
    hyper = {k: (list(h.default) if isinstance(h.default, list) else h.default)
             for k, h in schema.items()}
    for key, value in params.items():
        if key in schema:
            hyper[key] = _check_value(w, key, schema[key].kind, value)
    for alias, (target, convert) in ALIASES.get(kind, {}).items():
        if (alias in params) == (target in params):
            raise w.fail(target, f"or {alias} must be given, exactly one (got "
                                 f"{'both' if alias in params else 'neither'})")
        if alias in params:
            value = params[alias]
            if not is_real(value) or value < 0:
                raise w.fail(alias, f"must be a finite number >= 0, got {value!r}")
            hyper[target] = float(convert(float(value)))
    return hyper


def parse_methods(raw: object, file: str, sweep_limit: int | None,
                  parse_init: Callable[[Where, Mapping], tuple[str | None, float | None]]
                  ) -> tuple[MethodConfig, ...]:
    """Validate the ``[[methods]]`` array and expand each ``sweep`` (Cartesian product of its
    lists, the first ``sweep_limit`` values of each) into one :class:`MethodConfig` per cell.

    A key given both as a value and in the method's ``sweep`` is an error (which one would
    win is not obvious); ``--set methods.NAME.key=v`` replaces a swept key's list
    (:func:`~.overrides.apply_overrides`)."""
    top = Where(file, "")
    if not isinstance(raw, list) or not raw:
        raise top.fail("[[methods]]", "must be a non-empty array of tables")
    schemas = optimizer_schemas()
    out: list[MethodConfig] = []
    for i, table in enumerate(raw):
        w0 = Where(file, f"methods #{i + 1}")
        table = as_table(w0, "entry", table)
        if "name" not in table:
            raise w0.fail("name", "is required")
        name = as_str(w0, "name", table["name"])
        w = Where(file, f"methods.{name}")
        if "optimizer" not in table:
            raise w.fail("optimizer", f"is required (one of {', '.join(schemas)})")
        kind = as_str(w, "optimizer", table["optimizer"], tuple(schemas))
        schema = schemas[kind]
        settable = tuple(schema) + tuple(ALIASES.get(kind, {}))
        reject_unknown(w, table, METHOD_KEYS + settable)
        init, std = parse_init(w, table)
        given = {k: table[k] for k in settable if k in table}
        sweep = as_table(w, "sweep", table.get("sweep", {}))
        axes: list[tuple[str, list]] = []
        for key, values in sweep.items():
            bare = re.sub(r"\[\d+\]$", "", key)
            if bare not in settable:
                raise w.fail(f"sweep.{key}", f"is not a hyperparameter of {kind} "
                                             f"(allowed: {', '.join(settable)})")
            if key in given:
                raise w.fail(key, f"is given both as a value ({given[key]!r}) and in sweep; "
                                  "keep one")
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
                bare = re.sub(r"\[\d+\]$", "", key)
                if bare != key and bare not in params and bare in schema:
                    params[bare] = schema[bare].default  # an entry of the default list
                _set_indexed(params, key, value, w)
                cell[key] = value
            hyper = _resolve(w, kind, params)
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


# --------------------------------------------------------------------------- compatibility
def _probe_model(model: ModelConfig, data: DataConfig) -> torch.nn.Module:
    """A one-member network with the study's layer structure and tiny widths."""
    from ...models import CNN, MLP

    out = 1 if data.binary else 10
    if model.kind == "cnn":
        return CNN((1, 28, 28), out, channels=(1,) * len(model.channels),
                   activation=model.activation, ensemble=1)
    d_in = 2 if data.binary else 784
    return MLP([d_in, *([1] * len(model.hidden)), out], activation=model.activation,
               ensemble=1)


def check_methods(methods: Sequence[MethodConfig], model: ModelConfig, data: DataConfig,
                  rng: str, file: str) -> None:
    """Build every method's optimizer once on a small network with the study's layer
    structure (:func:`_probe_model`); the class's own ``ValueError`` / ``TypeError`` becomes a
    :class:`ConfigError` naming the method (e.g. AdLaLa and LOL need >= 2 layers, a LaLa
    friction list needs one value per layer)."""
    probe = _probe_model(model, data)
    for m in methods:
        cls = optimizer_registry()[m.optimizer]
        try:
            make_optimizer(m.optimizer, m.hyperparameters, probe, seeds=[0], rng=rng)
        except (ValueError, TypeError) as exc:
            text = " ".join(str(exc).split())
            text = text.removeprefix(f"{cls.__name__}: ")
            layers = f"{len(model.hidden) + 1} layers (model.hidden = {list(model.hidden)})" \
                if model.kind == "mlp" else f"model.channels = {list(model.channels)}"
            raise ConfigError(f"{file}: [methods.{m.name}] {text} (optimizer {m.optimizer}, "
                              f"network with {layers})") from None
