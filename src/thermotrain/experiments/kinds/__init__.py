r"""Experiment kinds: studies that are not "train methods and compare their accuracy".

A study file with a top-level ``experiment = "NAME"`` key is run by the experiment registered
under ``NAME`` instead of the method runner (:mod:`..runner`). Every module of this package
registers its experiments at import (:func:`register`); :func:`get_experiment` imports them
all on first use, so adding an experiment is one new module here and one study file.

An experiment's TOML is its own schema: the experiment validates it (unknown keys rejected
with :class:`~..config.ConfigError`, naming file and key) and may use the common top-level
keys ``name``, ``description``, ``source``, ``notes``, ``[paper]`` and ``[quick]`` (merged
into the document by ``--quick``, like the method studies' ``[quick]`` table). ``--set``
overrides apply to the raw document (:func:`load_spec`).

Its run folder holds at least ``config.json`` (the resolved document, written first, checked
on ``--resume``), ``summary.json`` and ``report.md`` with ``figures/``; everything written
atomically.
"""

from __future__ import annotations

import copy
import importlib
import json
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ConfigError, apply_overrides, read_toml
from ..run_folder import RunError, RunFolder, _jsonable, write_json

__all__ = ["Experiment", "RunContext", "register", "get_experiment", "experiments",
           "load_spec", "merge_quick", "prepare_folder", "write_json"]


@dataclass(frozen=True)
class RunContext:
    """What the CLI hands an experiment's ``run``."""

    out: Path
    quick: bool = False
    resume: bool = False
    data_dir: str | None = None
    progress: bool = False
    log: Callable[[str], None] | None = None

    def say(self, text: str) -> None:
        if self.log is not None:
            self.log(text)


@dataclass(frozen=True)
class Experiment:
    """A registered experiment kind.

    Attributes:
        name: the value of ``experiment = ...`` in study files.
        run: ``run(spec, ctx) -> summary`` — trains/measures into ``ctx.out`` and returns the
            summary dict it also wrote to ``summary.json``. ``spec`` is the raw document after
            ``--quick`` and ``--set`` (validate it first, before any work).
        report: ``report(out) -> path`` — writes ``report.md`` and figures from the run
            folder only (never trains); raises :class:`~..report.ReportError` on a missing or
            corrupt file.
        table: ``table(summary) -> str`` — a short text table printed after a run.
        description: one line.
    """

    name: str
    run: Callable[[dict[str, Any], RunContext], dict[str, Any]]
    report: Callable[[Path], Path]
    table: Callable[[dict[str, Any]], str] | None = None
    description: str = ""


_REGISTRY: dict[str, Experiment] = {}
_LOADED = False


def register(experiment: Experiment) -> Experiment:
    """Add an experiment kind (a module of this package calls this at import)."""
    if experiment.name in _REGISTRY and _REGISTRY[experiment.name] is not experiment:
        raise ValueError(f"experiment {experiment.name!r} is registered twice")
    _REGISTRY[experiment.name] = experiment
    return experiment


def _load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    _LOADED = True


def experiments() -> dict[str, Experiment]:
    """Every registered experiment kind, by name."""
    _load_all()
    return dict(_REGISTRY)


def get_experiment(name: object, file: str = "<study>") -> Experiment:
    """The experiment kind ``name``.

    Raises:
        ConfigError: not a string, or no such kind (the message lists the known ones).
    """
    known = experiments()
    if not isinstance(name, str) or name not in known:
        raise ConfigError(f"{file}: experiment must be one of {', '.join(sorted(known))}, "
                          f"got {name!r}")
    return known[name]


def merge_quick(raw: Mapping[str, Any], table: Mapping[str, Any]) -> dict[str, Any]:
    """``raw`` with the tables of ``table`` merged in recursively (values of ``table`` win)."""
    out = copy.deepcopy(dict(raw))
    for key, value in table.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_quick(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_spec(path: str | Path, *, quick: bool = False, overrides: Sequence[str] = ()
              ) -> dict[str, Any]:
    """Read an experiment study file: ``--set`` overrides, then (with ``quick``) its
    ``[quick]`` table merged in, command-line values winning. ``name`` defaults to the file
    stem. The result has no ``quick`` key."""
    path = Path(path)
    file = str(path)
    raw = apply_overrides(read_toml(path), overrides, file)
    quick_table = raw.pop("quick", {})
    if not isinstance(quick_table, Mapping):
        raise ConfigError(f"{file}: [quick] must be a table")
    if quick:
        explicit = apply_overrides({}, overrides, file)
        raw = merge_quick(merge_quick(raw, quick_table), explicit)
    raw.setdefault("name", path.stem)
    raw["_file"] = file
    return raw


def prepare_folder(spec: Mapping[str, Any], ctx: RunContext) -> None:
    """Create ``ctx.out`` and write ``config.json``; refuse a folder that holds another run
    (or any run, unless ``ctx.resume``) with a one-line :class:`~..runner.RunError`."""
    out = ctx.out
    resolved = {k: v for k, v in spec.items() if not k.startswith("_")}
    config = out / "config.json"
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out} is a file, not a folder")
    if config.exists():
        if not ctx.resume:
            raise RunError(f"{out} already holds a run; pass --resume to continue it or choose "
                           "another --out")
        try:
            previous = json.loads(config.read_text())
        except (OSError, ValueError) as exc:
            raise RunError(f"{config} is unreadable ({exc}); start a new run folder") from None
        strip = ("notes", "description")
        if {k: v for k, v in previous.items() if k not in strip} != \
                {k: v for k, v in json.loads(json.dumps(resolved, default=_jsonable)).items()
                 if k not in strip}:
            raise RunError(f"{out} was run with a different configuration; use the same "
                           "options or another --out")
    RunFolder(out).create()
    write_json(config, resolved)
