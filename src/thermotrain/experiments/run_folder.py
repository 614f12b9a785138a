r"""The run folder: the one module that reads and writes what a run leaves on disk.

Every writer of a run folder (the runner, the ray backend, the experiment kinds) and every
reader (``--resume``, the report) goes through this module; nobody else opens these files.
The layout (docs/runs.md)::

    RUN/
      .lock                            fcntl lock of the process training into RUN (its PID)
      config.json                      the resolved study (what was run)
      metrics.csv                      long format: study, method, seed, step, split, metric, value
      summary.json                     per-method results, timings, paper numbers, n_diverged
      data.json                        the resolved data root (image data sets; the report
                                       reloads the data from it)
      methods/<slug>/checkpoint.pt     the latest complete checkpoint (model, optimizer, ...)
      methods/<slug>/checkpoint.prev.pt    the one before it (kept until the new one is whole)
      methods/<slug>/snapshots.pt      parameters at the snapshot steps + the model's config
      methods/<slug>/part-<j>/         the same files for chunk j of the seeds (ray backend)

**Metrics** are one tidy table, one value per row (:data:`METRIC_COLUMNS`): the runner's
evaluations are the metrics ``loss`` and ``accuracy`` (fractions) of the splits ``train`` and
``test``; hooks add any other metric (any ``split`` string). Files of the wide format written
before (``…, split, loss, accuracy``) are read as the same long table.

**Every write is atomic**: a temporary file in the same folder, flushed, fsynced and moved
onto the name with :func:`os.replace`, so a reader (or a run resumed after a kill) sees the
old or the new file, never half of one. A write that fails (disk full, read-only folder, a
file where a folder should be) removes its temporary file and raises a one-line
:class:`RunError` naming the file. Checkpoints keep the previous complete one as
``checkpoint.prev.pt``; a checkpoint that cannot be read is reported in one warning line
naming it and the previous one is used (:meth:`MethodFolder.load_checkpoint`).

**One process per folder**: :meth:`RunFolder.lock` takes an exclusive ``fcntl.flock`` on
``RUN/.lock`` and writes its PID there; a second process fails with a :class:`RunError`
naming that PID. The OS drops the lock when its process dies, so a stale ``.lock`` file
never blocks (POSIX only).

Reading a finished run for a report is :meth:`Run.load` (:mod:`.run_view`): the whole folder
loaded once, corrupt files reported as one-line :class:`ReportError`\ s.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import pandas as pd
import torch

from .config import slug

__all__ = [
    "RunError",
    "ReportError",
    "CheckpointWarning",
    "METRIC_COLUMNS",
    "WIDE_METRIC_COLUMNS",
    "RunFolder",
    "MethodFolder",
    "atomic_write_text",
    "write_json",
    "atomic_save",
    "metrics_frame",
    "read_metrics_file",
    "model_spec",
]

#: columns of ``metrics.csv`` (long format: one metric value per row)
METRIC_COLUMNS = ("study", "method", "seed", "step", "split", "metric", "value")
#: columns of the wide ``metrics.csv`` of earlier versions (read, never written)
WIDE_METRIC_COLUMNS = ("study", "method", "seed", "step", "split", "loss", "accuracy")
_KEYS = METRIC_COLUMNS[:5]


class RunError(RuntimeError):
    """A run cannot start, continue or save (the folder holds another study or is in use,
    a file cannot be written, no checkpoint is usable); one line naming the file."""


class ReportError(RuntimeError):
    """The folder is not a (finished, readable) run folder; one line naming the file."""


class CheckpointWarning(UserWarning):
    """A checkpoint was unreadable and an older one is used instead."""


def _reason(exc: BaseException) -> str:
    """The first line of an exception, for a one-line message."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip().splitlines()
    # torch's reasons start with "[enforce fail at FILE:LINE] . " and run on for sentences
    first = re.sub(r"^\[enforce fail at [^\]]*\]\s*\.?\s*", "", text[0]) if text else ""
    return first.split(". ")[0][:160] or type(exc).__name__


# --------------------------------------------------------------------------- atomic writes
def _atomic(path: Path, write: Callable[[IO[bytes]], None],
            keep_previous: Path | None = None) -> None:
    """Write ``path`` through a temporary file; with ``keep_previous`` the current file is
    first moved there (only once the new one is complete)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch.save reports a failed write as RuntimeError
        raise RunError(f"cannot write {path}: {_reason(exc)}") from None
    finally:  # also after a KeyboardInterrupt: no temporary file is left behind
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically.

    Raises:
        RunError: the file cannot be written (the temporary file is removed)."""
    _atomic(path, lambda f: f.write(text.encode()))


def atomic_save(obj: Any, path: Path, keep_previous: Path | None = None) -> None:
    """``torch.save(obj)`` to ``path`` atomically (``keep_previous``: move the current file
    there once the new one is complete).

    Raises:
        RunError: the file cannot be written (the temporary file is removed)."""
    _atomic(path, lambda f: torch.save(obj, f), keep_previous)


def _load_torch(path: Path) -> Any:
    return torch.load(path, weights_only=True, map_location="cpu")


# --------------------------------------------------------------------------- metrics
def metrics_frame(rows: Iterable[Any]) -> pd.DataFrame:
    """Metric rows as the long table (:data:`METRIC_COLUMNS`).

    ``rows``: a DataFrame (long or wide columns), mappings, or tuples — long
    ``(study, method, seed, step, split, metric, value)`` or the runner's wide
    ``(study, method, seed, step, split, loss, accuracy)`` (a number in the 6th place),
    which becomes two rows, metric ``loss`` then ``accuracy``.
    """
    if isinstance(rows, pd.DataFrame):
        frame = rows
    else:
        rows = list(rows)
        if rows and isinstance(rows[0], Mapping):
            frame = pd.DataFrame(rows)
        elif rows and not isinstance(rows[0][5], str):
            frame = pd.DataFrame(rows, columns=list(WIDE_METRIC_COLUMNS))
        else:
            frame = pd.DataFrame(rows, columns=list(METRIC_COLUMNS))
    if "metric" not in frame.columns:  # wide: one row per value column, in column order
        values = [c for c in frame.columns if c not in _KEYS]
        frame = frame.reset_index(drop=True)
        parts = [frame.loc[:, list(_KEYS)].assign(metric=c, value=frame[c], _row=frame.index,
                                                  _col=i)
                 for i, c in enumerate(values)]
        frame = pd.concat(parts).sort_values(["_row", "_col"], kind="stable")
    missing = [c for c in METRIC_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"metric rows need the columns {', '.join(METRIC_COLUMNS)}; "
                         f"missing {', '.join(missing)}")
    frame = frame.loc[:, list(METRIC_COLUMNS)].reset_index(drop=True)
    return frame.astype({"seed": "int64", "step": "int64", "value": "float64"})


def read_metrics_file(path: Path) -> pd.DataFrame:
    """Read a ``metrics.csv`` (long, or the earlier wide format) as the long table.

    Raises:
        RunError: missing, empty, truncated (no final newline, a short row) or not numbers.
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise RunError(f"{path} is missing; is the run finished?") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RunError(f"{path} is unreadable: {_reason(exc)}") from None
    if not text.strip():
        raise RunError(f"{path} is empty")
    if not text.endswith("\n"):
        raise RunError(f"{path} is truncated (no newline at the end); run the study again "
                       "with --resume")
    try:
        raw = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[])
    except (ValueError, pd.errors.ParserError) as exc:
        raise RunError(f"{path} is corrupt: {_reason(exc)}") from None
    columns = tuple(raw.columns)
    if columns not in (METRIC_COLUMNS, WIDE_METRIC_COLUMNS) and not (
            columns[:5] == _KEYS and "metric" not in columns):
        raise RunError(f"{path} has the columns {', '.join(map(str, columns))}; expected "
                       f"{', '.join(METRIC_COLUMNS)}")
    short = raw.isna().any(axis=1) | (raw == "").any(axis=1)
    if short.any():
        line = int(short.to_numpy().argmax()) + 2
        raise RunError(f"{path} is truncated or corrupt at line {line}")
    try:
        typed = raw.astype({"seed": "int64", "step": "int64"})
        for c in (("value",) if "metric" in columns else columns[5:]):
            typed[c] = typed[c].astype("float64")
    except (ValueError, TypeError) as exc:
        raise RunError(f"{path} is corrupt: {_reason(exc)}") from None
    return metrics_frame(typed)


# --------------------------------------------------------------------------- models
def model_spec(model: torch.nn.Module) -> dict[str, Any]:
    """What rebuilds ``model``'s architecture: ``{"class": "MLP", "config": model.config()}``
    (a :class:`~thermotrain.models.StackableModel`; stored with the snapshots)."""
    config = getattr(model, "config", None)
    if not callable(config):
        raise TypeError(f"model_spec needs a thermotrain model with config(), got "
                        f"{type(model).__name__}")
    return {"class": type(model).__name__, "config": config()}


# --------------------------------------------------------------------------- one method
class MethodFolder:
    """The files of one method (or one part of its seeds): checkpoint and snapshots."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoint.pt"

    @property
    def previous_checkpoint_path(self) -> Path:
        return self.path / "checkpoint.prev.pt"

    @property
    def snapshots_path(self) -> Path:
        return self.path / "snapshots.pt"

    def part(self, index: int) -> MethodFolder:
        """The folder of chunk ``index`` of the seeds (``part-<index>``, ray backend)."""
        return MethodFolder(self.path / f"part-{index}")

    def _mkdir(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunError(f"cannot create {self.path}: {_reason(exc)}") from None

    def save_checkpoint(self, obj: Mapping[str, Any]) -> None:
        """Write ``checkpoint.pt`` atomically, keeping the previous one as
        ``checkpoint.prev.pt``."""
        self._mkdir()
        atomic_save(dict(obj), self.checkpoint_path, self.previous_checkpoint_path)

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The latest readable checkpoint, ``None`` if the method has none.

        An unreadable ``checkpoint.pt`` (truncated, corrupt) is reported in one
        :class:`CheckpointWarning` line naming it, moved aside to ``checkpoint.corrupt.pt``
        (so that the next save keeps the good previous one), and ``checkpoint.prev.pt`` is
        used.

        Raises:
            RunError: no checkpoint is readable (names the file)."""
        paths = [p for p in (self.checkpoint_path, self.previous_checkpoint_path) if p.exists()]
        if not paths:
            return None
        failed: list[str] = []
        for path in paths:
            try:
                obj = _load_torch(path)
                if not isinstance(obj, dict):
                    raise ValueError(f"holds a {type(obj).__name__}, not a checkpoint")
            except Exception as exc:  # torch.load raises many types for a corrupt file
                failed.append(f"{path} is unreadable ({_reason(exc)})")
                continue
            if path != self.checkpoint_path:
                first, kept = f"{self.checkpoint_path} is missing", ""
                if failed:  # set it aside: the next save must not rotate it into .prev
                    first, corrupt = failed[0], self.path / "checkpoint.corrupt.pt"
                    with contextlib.suppress(OSError):
                        os.replace(self.checkpoint_path, corrupt)
                        kept = f" (the unreadable file is kept as {corrupt.name})"
                warnings.warn(f"{first}; resuming from {path.name}{kept}", CheckpointWarning,
                              stacklevel=2)
            return obj
        if len(failed) == 1:
            failed.append("no previous checkpoint")
        raise RunError(f"{'; '.join(failed)}: delete {self.path} to train this method again")

    def save_snapshots(self, snapshots: list[dict[str, Any]], *, seeds: Iterable[int],
                       model: torch.nn.Module | Mapping[str, Any] | None = None,
                       method: str | None = None) -> None:
        """Write ``snapshots.pt``: the snapshot dicts (``step``, ``first_weight``,
        ``first_bias``, ``members``, optional ``window``), the run seeds and the model's
        :func:`model_spec` (so that any model can be rebuilt from the file)."""
        spec = model if model is None or isinstance(model, Mapping) else model_spec(model)
        self._mkdir()
        atomic_save({"method": method, "seeds": list(seeds), "snapshots": list(snapshots),
                     **({"model": dict(spec)} if spec is not None else {})},
                    self.snapshots_path)

    def load_snapshots(self) -> dict[str, Any] | None:
        """``snapshots.pt`` as written by :meth:`save_snapshots`; ``None`` if absent.

        Raises:
            RunError: the file is unreadable (names it)."""
        path = self.snapshots_path
        if not path.exists():
            return None
        try:
            obj = _load_torch(path)
            if not isinstance(obj, dict) or not isinstance(obj.get("snapshots"), list):
                raise ValueError("no list of snapshots in it")
        except Exception as exc:  # torch.load raises many types for a corrupt file
            raise RunError(f"{path} is unreadable ({_reason(exc)})") from None
        return obj


# --------------------------------------------------------------------------- the folder
class RunFolder:
    """Reads and writes the files of one run folder (layout: module docstring).

    Example:
        >>> import tempfile
        >>> run = RunFolder(tempfile.mkdtemp())
        >>> run.write_metrics([("s", "SGD", 0, 10, "test", "accuracy", 0.5)])
        >>> run.read_metrics()["value"].tolist()
        [0.5]
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    config_path = property(lambda self: self.path / "config.json")
    metrics_path = property(lambda self: self.path / "metrics.csv")
    summary_path = property(lambda self: self.path / "summary.json")
    data_path = property(lambda self: self.path / "data.json")
    lock_path = property(lambda self: self.path / ".lock")

    def create(self) -> RunFolder:
        """Create the folder (and its parents).

        Raises:
            RunError: the path is a file, or cannot be created."""
        if self.path.exists() and not self.path.is_dir():
            raise RunError(f"--out {self.path} is a file, not a folder")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunError(f"cannot create --out {self.path}: {_reason(exc)}") from None
        return self

    def method(self, name: str) -> MethodFolder:
        """The folder of method ``name`` (``methods/<slug(name)>``)."""
        return MethodFolder(self.method_dir(name))

    def method_dir(self, name: str) -> Path:
        return self.path / "methods" / slug(name)

    # ---------------------------------------------------------------- lock
    @contextlib.contextmanager
    def lock(self) -> Iterator[RunFolder]:
        """Hold the folder's exclusive lock (``.lock``, with this process's PID) for the block.

        Raises:
            RunError: another live process holds it (names its PID), or the lock file cannot
                be created."""
        self.create()
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RunError(f"cannot create the lock {self.lock_path}: {_reason(exc)}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                raise RunError(f"{self.path} is in use by another run (PID {owner}, lock "
                               f"{self.lock_path}); wait for it or choose another --out") \
                    from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            try:
                yield self
            finally:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    # ---------------------------------------------------------------- json files
    def _write_json(self, path: Path, obj: Any) -> None:
        write_json(path, obj)

    def _read_json(self, path: Path, what: str) -> dict[str, Any]:
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise RunError(f"{self.path} is not a finished run folder (no {path.name}); run "
                           "`thermotrain run` first or pass --resume to finish it") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise RunError(f"{path} is unreadable: {_reason(exc)}") from None
        if not text.strip():
            raise RunError(f"{path} is empty; run the study again with --resume")
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise RunError(f"{path} is corrupt ({_reason(exc)})") from None
        if not isinstance(obj, dict):
            raise RunError(f"{path} holds a {type(obj).__name__}, not the {what}")
        return obj

    def write_config(self, config: Mapping[str, Any]) -> None:
        """Write ``config.json`` (the resolved study)."""
        self._write_json(self.config_path, dict(config))

    def read_config(self) -> dict[str, Any]:
        return self._read_json(self.config_path, "resolved study")

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        """Write ``summary.json``."""
        self._write_json(self.summary_path, dict(summary))

    def read_summary(self) -> dict[str, Any]:
        return self._read_json(self.summary_path, "summary")

    def write_data_root(self, root: str | os.PathLike[str]) -> None:
        """Write ``data.json``: the data root the run used (the report reloads image data)."""
        self._write_json(self.data_path, {"data_dir": str(Path(root).resolve())})

    def read_data_root(self) -> str | None:
        """The recorded data root, ``None`` without (or with an unreadable) ``data.json``."""
        try:
            return self._read_json(self.data_path, "data root").get("data_dir")
        except RunError:
            return None

    # ---------------------------------------------------------------- metrics
    def write_metrics(self, rows: Iterable[Any]) -> None:
        """Write ``metrics.csv`` in the long format (rows as :func:`metrics_frame` takes)."""
        text = metrics_frame(rows).to_csv(index=False, lineterminator="\n", na_rep="nan")
        atomic_write_text(self.metrics_path, text)

    def read_metrics(self) -> pd.DataFrame:
        """``metrics.csv`` as the long table (wide files of earlier versions converted)."""
        return read_metrics_file(self.metrics_path)

    # ---------------------------------------------------------------- per method
    def save_checkpoint(self, method: str, obj: Mapping[str, Any]) -> None:
        self.method(method).save_checkpoint(obj)

    def load_checkpoint(self, method: str) -> dict[str, Any] | None:
        return self.method(method).load_checkpoint()

    def save_snapshots(self, method: str, snapshots: list[dict[str, Any]], **kwargs: Any
                       ) -> None:
        self.method(method).save_snapshots(snapshots, method=method, **kwargs)

    def load_snapshots(self, method: str) -> dict[str, Any] | None:
        return self.method(method).load_snapshots()


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON (tensors and arrays as lists), atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
