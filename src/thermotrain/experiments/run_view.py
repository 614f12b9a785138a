"""A finished run folder loaded once, for reports and analyses: :class:`Run`.

``Run.load(path)`` reads everything through :class:`~.run_folder.RunFolder` up front — the
resolved config, the long metrics table (a pandas DataFrame), the summary, every method's
snapshots and the recorded data root — and turns any missing or corrupt file into a one-line
:class:`~.run_folder.ReportError` naming it. A report then only draws.

Snapshots store the model's :func:`~.run_folder.model_spec` (class and ``config()``), so
:meth:`Run.model` rebuilds any thermotrain model (MLP, CNN) at a snapshot step; snapshots of
earlier versions, which lack it, are rebuilt as MLPs from ``config.json`` and the parameter
shapes. Layout and formats: docs/runs.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .run_folder import ReportError, RunError, RunFolder

__all__ = ["Run", "Snapshots", "build_model"]


def build_model(spec: Mapping[str, Any], members: Mapping[str, torch.Tensor],
                device: torch.device | str | None = None) -> torch.nn.Module:
    """The model of ``spec`` (``{"class", "config"}``) holding the parameters ``members``:
    an ensemble of ``K`` members when they have a leading ``K`` axis beyond the plain
    shapes, else a plain network (decided by the first layer's weight).

    Raises:
        ReportError: an unknown class, or parameters that do not fit the architecture."""
    from .. import models

    cls = getattr(models, str(spec.get("class")), None)
    if not (isinstance(cls, type) and issubclass(cls, models.StackableModel)):
        raise ReportError(f"snapshots name the model class {spec.get('class')!r}, not a "
                          "thermotrain model")
    config = dict(spec.get("config") or {})
    plain = cls(**config, device="meta")
    first = next(iter(plain.state_dict().items()))
    got = members.get(first[0])
    if got is None:
        raise ReportError(f"snapshot parameters lack {first[0]!r} of the {cls.__name__}")
    ensemble = got.shape[0] if got.dim() == first[1].dim() + 1 else None
    model = cls(**config, ensemble=ensemble, device=device)
    params = {name for name, _ in model.named_parameters()}
    missing = sorted(params - set(members))
    if missing:
        raise ReportError(f"snapshot parameters lack {', '.join(missing)} of the "
                          f"{cls.__name__}")
    try:  # parameters only: buffers (batch-norm statistics) keep their initial values
        model.load_state_dict({k: v for k, v in members.items() if k in params}, strict=False)
    except RuntimeError as exc:
        raise ReportError(f"snapshot parameters do not fit the {cls.__name__} "
                          f"{config}: {str(exc).splitlines()[-1].strip()}") from None
    model.eval()
    return model


@dataclass(frozen=True)
class Snapshots:
    """One method's ``snapshots.pt``: the parameters at the snapshot steps.

    Attributes:
        method: the method's name.
        seeds: the run seeds of all members (``first_weight`` has one row per seed).
        items: one dict per snapshot step: ``step``, ``first_weight`` / ``first_bias``
            (first layer of all members), ``members`` (the first ``saved_members`` members'
            parameters, ``name -> (saved, ...)``), optional ``window`` (``steps`` and
            ``members`` ``name -> (W, saved, ...)``, ``training.snapshot_average``).
        spec: the model's :func:`~.run_folder.model_spec` (``None``: snapshots of an
            earlier version of a model other than an MLP, which cannot be rebuilt).
    """

    method: str
    seeds: list[int]
    items: list[dict[str, Any]]
    spec: dict[str, Any] | None

    @property
    def steps(self) -> list[int]:
        return [int(s["step"]) for s in self.items]

    def at(self, step: int | None = None) -> dict[str, Any]:
        """The snapshot at ``step`` (default: the last).

        Raises:
            ReportError: no snapshot at that step."""
        if not self.items:
            raise ReportError(f"{self.method} has no snapshots")
        if step is None:
            return self.items[-1]
        for s in self.items:
            if int(s["step"]) == step:
                return s
        raise ReportError(f"{self.method} has no snapshot at step {step} (steps: "
                          f"{self.steps})")

    @property
    def saved(self) -> int:
        """The number of members whose parameters are saved."""
        members = self.items[0]["members"] if self.items else {}
        return next(iter(members.values())).shape[0] if members else 0

    def model(self, step: int | None = None, member: int | None = None,
              device: torch.device | str | None = None) -> torch.nn.Module:
        """The network at ``step`` (default: the last snapshot): the ensemble of the saved
        members, or with ``member=k`` the plain network of saved member ``k``."""
        if self.spec is None:
            raise ReportError(f"the snapshots of {self.method} do not store their model "
                              "(written by an earlier thermotrain); only MLPs can be rebuilt")
        members = self.at(step)["members"]
        if member is not None:
            if not 0 <= member < self.saved:
                raise ReportError(f"{self.method}: member {member} is not saved (saved: "
                                  f"{self.saved})")
            members = {k: v[member] for k, v in members.items()}
        return build_model(self.spec, members, device)


def _legacy_spec(config: Mapping[str, Any], items: list[dict[str, Any]]
                 ) -> dict[str, Any] | None:
    """The model spec of snapshots written before they stored it (MLPs only, else None)."""
    model = config.get("model", {})
    members = items[0]["members"] if items else {}
    if model.get("kind") != "mlp" or not members:
        return None
    names = sorted((n for n in members if n.endswith(".weight")),
                   key=lambda n: int(n.split(".")[1]))
    widths = [int(members[names[0]].shape[-1])] + [int(members[n].shape[-2]) for n in names]
    return {"class": "MLP", "config": {"widths": widths,
                                       "activation": model.get("activation", "relu")}}


@dataclass(frozen=True)
class Run:
    """A finished run folder, loaded once (:meth:`load`).

    Attributes:
        path: the folder.
        config: ``config.json`` (the resolved study).
        summary: ``summary.json``.
        metrics: ``metrics.csv`` as the long table (columns
            ``study, method, seed, step, split, metric, value``).
        snapshots: each method's :class:`Snapshots` (methods without a file are absent).
        data_root: the data root recorded in ``data.json`` (``None`` without).
    """

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    metrics: pd.DataFrame
    snapshots: dict[str, Snapshots] = field(default_factory=dict)
    data_root: str | None = None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Run:
        """Read the run folder ``path``.

        Raises:
            ReportError: not a folder, or a file missing or unreadable (one line, names it).
        """
        folder = RunFolder(path)
        if not folder.path.is_dir():
            raise ReportError(f"{folder.path} is not a directory")
        try:
            config = folder.read_config()
            summary = folder.read_summary()
            metrics = folder.read_metrics()
            methods = summary.get("methods")
            if not isinstance(methods, dict):
                raise ReportError(f"{folder.summary_path} has no methods table")
            snapshots = {}
            for name in methods:
                raw = folder.load_snapshots(name)
                if raw is None:
                    continue
                items = raw["snapshots"]
                spec = raw.get("model") or _legacy_spec(config, items)
                snapshots[name] = Snapshots(name, list(raw.get("seeds", [])), items, spec)
        except RunError as exc:
            raise ReportError(str(exc)) from None
        return cls(folder.path, config, summary, metrics, snapshots, folder.read_data_root())

    @property
    def methods(self) -> list[str]:
        """The methods of the summary, in study order."""
        return list(self.summary["methods"])

    def model(self, method: str, step: int | None = None, member: int | None = None,
              device: torch.device | str | None = None) -> torch.nn.Module:
        """The network of ``method`` at snapshot ``step`` (default: the last): the ensemble
        of its saved members, or member ``member`` as a plain network.

        Raises:
            ReportError: the method has no snapshots, or not at that step."""
        if method not in self.snapshots:
            raise ReportError(f"{self.path}: method {method!r} has no snapshots")
        return self.snapshots[method].model(step, member, device)
