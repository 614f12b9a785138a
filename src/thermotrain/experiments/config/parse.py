"""Validation of a study document into a :class:`~.study.StudyConfig` (:func:`parse_study`):
the ``[data]``, ``[model]``, ``[training]``, ``[paper.NAME]`` and ``[quick]`` tables, the
study name, and the method × model check of :func:`~.methods.check_methods`."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ...samplers.noise import RNGS
from ...thermo.sgworld import check_minibatch_policy
from .methods import check_methods, parse_methods
from .schema import (
    MAX_SEED,
    ConfigError,
    Where,
    as_bool,
    as_float,
    as_int,
    as_int_list,
    as_str,
    as_table,
    check_name,
    reject_unknown,
)
from .study import (
    DATA_KINDS,
    SEED_STREAMS,
    DataConfig,
    ModelConfig,
    PaperResult,
    StudyConfig,
    TrainingConfig,
)

__all__ = ["parse_study", "MAX_EVALUATIONS"]

#: at most this many evaluation steps per run: each one evaluates the full train and test sets,
#: and the schedule is kept as a set (a huge ``steps`` with a small ``eval_every`` is a mistake)
MAX_EVALUATIONS = 1_000_000

# --------------------------------------------------------------------------- parsing
_TOP_KEYS = ("name", "description", "source", "notes", "data", "model", "training", "methods",
             "paper", "quick")
_QUICK_KEYS = ("data", "model", "training", "sweep_limit")


def _parse_data(raw: dict, file: str) -> DataConfig:
    w = Where(file, "data")
    if "kind" not in raw:
        raise w.fail("kind", f"is missing (one of {', '.join(DATA_KINDS)})")
    kind = as_str(w, "kind", raw["kind"], tuple(DATA_KINDS))
    common = ("kind", "n_train", "n_test", "seed", "test_seed")
    reject_unknown(w, raw, common + DATA_KINDS[kind])
    kw: dict[str, Any] = {"kind": kind}
    for key in ("n_train", "n_test"):
        if key in raw:
            kw[key] = as_int(w, key, raw[key], minimum=2 if kind == "spirals" else 1)
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
            kw[key] = as_int(w, key, raw[key], 0, MAX_SEED)
    for key in ("turns", "a", "p", "frequency", "b"):
        if key in raw:
            kw[key] = as_float(w, key, raw[key], positive=True)
    if "noise" in raw:
        kw["noise"] = as_float(w, "noise", raw["noise"])
    for key in ("normalize", "flatten"):
        if key in raw:
            kw[key] = as_bool(w, key, raw[key])
    return DataConfig(**kw)


def _parse_model(raw: dict, file: str) -> ModelConfig:
    w = Where(file, "model")
    reject_unknown(w, raw, ("kind", "hidden", "activation", "init", "init_std", "channels"))
    kw: dict[str, Any] = {}
    if "kind" in raw:
        kw["kind"] = as_str(w, "kind", raw["kind"], ("mlp", "cnn"))
    if "hidden" in raw:
        kw["hidden"] = as_int_list(w, "hidden", raw["hidden"], minimum=1)
    if "channels" in raw:
        kw["channels"] = as_int_list(w, "channels", raw["channels"], minimum=1)
        if not kw["channels"]:
            raise w.fail("channels", "must list at least one convolution")
    if "activation" in raw:
        kw["activation"] = as_str(w, "activation", raw["activation"], ("relu", "tanh"))
    init, std = _parse_init(w, raw)
    if init is not None:
        kw["init"], kw["init_std"] = init, std
    return ModelConfig(**kw)


def _parse_init(w: Where, raw: Mapping) -> tuple[str | None, float | None]:
    init = raw.get("init")
    std = raw.get("init_std")
    if init is None:
        if std is not None:
            raise w.fail("init_std", 'needs init = "normal"')
        return None, None
    init = as_str(w, "init", init, ("default", "normal"))
    if init == "normal":
        if std is None:
            raise w.fail("init_std", 'is required with init = "normal" (the paper: 0.01 or 0.5)')
        return init, as_float(w, "init_std", std, positive=True)
    if std is not None:
        raise w.fail("init_std", 'only applies to init = "normal"')
    return init, None


def _parse_training(raw: dict, file: str) -> TrainingConfig:
    w = Where(file, "training")
    names = tuple(TrainingConfig.__dataclass_fields__)
    reject_unknown(w, raw, names)
    for key in ("steps", "batch_size"):
        if key not in raw:
            raise w.fail(key, "is required")
    kw: dict[str, Any] = {}
    for key, minimum in (("steps", 1), ("batch_size", 1), ("seeds", 1), ("seed", 0),
                         ("eval_every", 1), ("checkpoint_every", 0), ("saved_members", 0),
                         ("eval_batch", 1), ("snapshot_average", 1)):
        if key in raw:
            kw[key] = as_int(w, key, raw[key], minimum)
    # every stream seed of every member must be a valid generator seed (< 2**63)
    top_seed = MAX_SEED - max(SEED_STREAMS.values()) - (kw.get("seeds", 1) - 1)
    if kw.get("seed", 0) > top_seed:
        raise w.fail("seed", f"must be <= {top_seed} (seed + member + stream offset "
                             f"{max(SEED_STREAMS.values())} must stay below 2**63), got "
                             f"{kw['seed']}")
    steps, every = kw["steps"], kw.get("eval_every", 1000)
    if steps // every > MAX_EVALUATIONS:
        raise w.fail("eval_every", f"= {every} with steps = {steps} asks for {steps // every + 1} "
                                   f"evaluations, at most {MAX_EVALUATIONS} are allowed; use "
                                   f"eval_every >= {-(-steps // MAX_EVALUATIONS)}")
    if kw.get("snapshot_average", 1) > 1 and kw.get("saved_members", 3) == 0:
        raise w.fail("snapshot_average", f"({kw['snapshot_average']}) needs saved_members >= 1 "
                                         "(the averaged classifier uses the saved members)")
    for key in ("eval_at", "snapshot_at"):
        if key in raw:
            kw[key] = as_int_list(w, key, raw[key])
    if "replacement" in raw:
        kw["replacement"] = as_bool(w, "replacement", raw["replacement"])
    if "rng" in raw:
        kw["rng"] = as_str(w, "rng", raw["rng"], RNGS)
    return TrainingConfig(**kw)


#: bytes per parameter of a training ensemble, roughly: parameters, gradients, momenta or
#: Adam's two moments, noise and evaluation buffers (float32)
_BYTES_PER_PARAMETER = 4 * 6


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        return None


def _check_size(data: DataConfig, model: ModelConfig, training: TrainingConfig, file: str
                ) -> None:
    """Refuse, before anything is allocated, a study whose ensemble or generated data cannot
    fit in this machine's memory (``--seeds 100000000``, ``hidden = [100000000]``,
    ``n_train = 1e10``): a clear error instead of an allocation failure mid-run. The estimate
    is deliberately rough (:data:`_BYTES_PER_PARAMETER`) and only rejects the impossible."""
    w = Where(file, "training")
    snapshots = len(training.snapshot_steps()) * training.snapshot_average
    if snapshots > MAX_EVALUATIONS:
        raise w.fail("snapshot_average", f"= {training.snapshot_average} with "
                                         f"{len(training.snapshot_steps())} snapshot steps keeps "
                                         f"{snapshots} parameter copies, at most "
                                         f"{MAX_EVALUATIONS} are allowed")
    memory = _physical_memory()
    if memory is None:
        return
    d_in = 2 if data.binary else 784
    out = 1 if data.binary else 10
    need = 0
    if model.kind == "mlp":
        widths = [d_in, *model.hidden, out]
        n_params = sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:], strict=True))
        need += training.seeds * n_params * _BYTES_PER_PARAMETER
    if data.binary:  # generated in memory: inputs and labels of both sets, float64 then 32
        need += ((data.n_train or 0) + (data.n_test or 0)) * (d_in + 1) * 12
    if need > memory:
        gib = 2**30
        raise ConfigError(
            f"{file}: this study needs about {need / gib:.3g} GiB "
            f"({training.seeds} seeds x the network [{', '.join(map(str, model.hidden))}] "
            f"and {data.n_train} + {data.n_test} points), more than this machine's "
            f"{memory / gib:.3g} GiB; use fewer seeds, a smaller network or fewer points")


def _parse_paper(raw: object, file: str, names: Sequence[str]) -> dict[str, PaperResult]:
    w = Where(file, "paper")
    raw = as_table(w, "[paper]", raw)
    out = {}
    for name, entry in raw.items():
        we = Where(file, f"paper.{name}")
        entry = as_table(we, "entry", entry)
        reject_unknown(we, entry, ("test_accuracy", "test_accuracy_std", "step", "note"))
        if name not in names:
            raise w.fail(repr(name), f"is not a method of this study ({', '.join(names)})")
        kw: dict[str, Any] = {}
        for key in ("test_accuracy", "test_accuracy_std"):
            if key in entry:
                kw[key] = as_float(we, key, entry[key])
                if kw[key] > 1:
                    raise we.fail(key, f"is a fraction in [0, 1], got {kw[key]}")
        if "step" in entry:
            kw["step"] = as_int(we, "step", entry["step"], 0)
        if "note" in entry:
            kw["note"] = as_str(we, "note", entry["note"])
        out[name] = PaperResult(**kw)
    return out


def _parse_notes(raw: object, file: str) -> tuple[str, ...]:
    w = Where(file, "")
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
    top = Where(file, "")
    if "experiment" in raw:
        raise top.fail("experiment", f"= {raw['experiment']!r} makes this an experiment study: "
                                     "its experiment kind reads it (thermotrain run, "
                                     "experiments.kinds.load_spec), not load_study")
    reject_unknown(top, raw, _TOP_KEYS)
    for key in ("data", "model", "training"):
        if key in raw:
            raw[key] = as_table(top, f"[{key}]", raw[key])
    quick_table = as_table(Where(file, ""), "[quick]", raw.pop("quick", {}))
    sweep_limit = None
    wq = Where(file, "quick")
    reject_unknown(wq, quick_table, _QUICK_KEYS)
    if quick:
        if "sweep_limit" in quick_table:
            sweep_limit = as_int(wq, "sweep_limit", quick_table.pop("sweep_limit"), 1)
        for key in ("data", "model", "training"):
            if key in quick_table:
                merged = dict(raw.get(key, {}))
                merged.update(as_table(wq, key, quick_table[key]))
                raw[key] = merged
    for key in ("data", "training"):
        if key not in raw:
            raise top.fail(f"[{key}]", "is required")
    study_name = raw.get("name", name or Path(file).stem)
    study_name = as_str(top, "name", study_name)
    try:
        check_name(study_name)
    except ConfigError as exc:
        raise top.fail("name", f"(the run folder's name): {exc}") from None
    description = as_str(top, "description", raw.get("description", ""))
    source = as_str(top, "source", raw.get("source", ""))
    notes = _parse_notes(raw["notes"], file) if "notes" in raw else ()
    data = _parse_data(as_table(top, "[data]", raw["data"]), file)
    model = _parse_model(as_table(top, "[model]", raw.get("model", {})), file)
    training = _parse_training(as_table(top, "[training]", raw["training"]), file)
    if training.batch_size > (data.n_train or training.batch_size):
        raise Where(file, "training").fail(
            "batch_size", f"({training.batch_size}) exceeds data.n_train ({data.n_train})")
    if model.kind == "cnn" and data.binary:
        raise Where(file, "model").fail("kind", "cnn needs image data (mnist, fashion_mnist)")
    if model.kind == "cnn" and data.flatten:
        data = DataConfig(**{**asdict(data), "flatten": False})
    _check_size(data, model, training, file)
    methods = parse_methods(raw.get("methods"), file, sweep_limit, _parse_init)
    everything = parse_methods(raw.get("methods"), file, None, _parse_init)
    all_names = [m.name for m in everything]
    check_methods(everything, model, data, training.rng, file)
    for m in everything:  # SGWORLD is SGLD meant for epoch-reshuffled batches (docs/thermo.md)
        check_minibatch_policy(m.optimizer.upper(), training.replacement,
                               where=f"{file}: [[methods]] {m.name}")
    paper = _parse_paper(raw.get("paper", {}), file, all_names)
    return StudyConfig(study_name, description, data, model, training, methods, paper, source,
                       file, notes)

