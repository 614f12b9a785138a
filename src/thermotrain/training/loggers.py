"""Loggers are hooks: they write the loop's metric rows somewhere as they are logged.

* :class:`CSVLogger` — the long-format table ``study, method, seed, step, split, metric,
  value`` (what ``metrics.csv`` holds; pandas reads it with ``pd.read_csv``), rewritten
  atomically at every evaluation, checkpoint and at the end;
* :class:`TensorBoardLogger` — scalars ``{split}/{metric}`` per member (one run directory
  per seed: ``<log_dir>/seed-<s>``, so TensorBoard overlays the members; rows of no
  member, seed −1, in ``<log_dir>/all``), through
  ``torch.utils.tensorboard`` (optional extra: ``pip install thermotrain[tensorboard]``).

Both remember how many rows they have written (their ``state_dict``), so a resumed run
neither repeats nor loses rows; TensorBoard's writer purges events past the resumed step.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from .hooks import Hook

__all__ = ["CSVLogger", "TensorBoardLogger", "METRIC_COLUMNS", "write_rows"]

#: the columns of the long-format metrics table
METRIC_COLUMNS = ("study", "method", "seed", "step", "split", "metric", "value")


def write_rows(rows: list[tuple], path: Path) -> None:
    """Write metric rows (:data:`METRIC_COLUMNS`) as CSV via a temporary file and
    :func:`os.replace`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(METRIC_COLUMNS)
        writer.writerows(rows)
    os.replace(tmp, path)


class CSVLogger(Hook):
    """Write ``state.rows`` to ``path`` (long format) at evaluations, checkpoints and the end.

    Args:
        path: the CSV file (its folder is created).
    """

    name = "csv"

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)

    def _write(self, state: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_rows(state.rows, self.path)

    def on_start(self, state: Any) -> None:
        self._write(state)

    def on_evaluation(self, state: Any, results: Any) -> None:
        self._write(state)

    def on_checkpoint(self, state: Any) -> None:
        self._write(state)

    def on_end(self, state: Any) -> None:
        self._write(state)


class TensorBoardLogger(Hook):
    """Scalars ``{split}/{metric}`` of every logged row, one event directory per seed
    (``<log_dir>/seed-<s>``; rows of no member, seed −1, go to ``<log_dir>/all``).

    Rows are sent after every step that logged some (so hooks' metrics appear live) and
    flushed at evaluations, checkpoints and the end.

    Args:
        log_dir: the folder of the event files.

    Raises:
        ImportError: tensorboard is not installed (one line naming the extra).
    """

    name = "tensorboard"

    def __init__(self, log_dir: str | os.PathLike[str]):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # pragma: no cover - tensorboard is a dev dependency
            raise ImportError("TensorBoard logging needs tensorboard: pip install "
                              "thermotrain[tensorboard]") from None
        self._writer_type = SummaryWriter
        self.log_dir = Path(log_dir)
        self.written = 0  # rows of state.rows already sent
        self._writers: dict[str, Any] = {}
        self._purge: int | None = None

    def _writer(self, seed: Any) -> Any:
        key = "all" if seed is None or seed == -1 else f"seed-{seed}"
        w = self._writers.get(key)
        if w is None:
            w = self._writers[key] = self._writer_type(str(self.log_dir / key),
                                                       purge_step=self._purge)
        return w

    def _send(self, state: Any) -> None:
        rows = state.rows
        for r in rows[self.written:]:
            _, _, seed, step, split, metric, value = r
            self._writer(seed).add_scalar(f"{split}/{metric}", value, step)
        self.written = len(rows)

    def _flush(self, state: Any) -> None:
        self._send(state)
        for w in self._writers.values():
            w.flush()

    def on_start(self, state: Any) -> None:
        # a resumed run: events logged after the checkpoint's step are replaced
        self._purge = state.step + 1 if state.step else None
        self.written = min(self.written, len(state.rows))
        self._send(state)

    def after_step(self, state: Any) -> None:
        if len(state.rows) > self.written:
            self._send(state)

    def on_evaluation(self, state: Any, results: Any) -> None:
        self._flush(state)

    def on_checkpoint(self, state: Any) -> None:
        self._flush(state)

    def on_end(self, state: Any) -> None:
        self._flush(state)
        for w in self._writers.values():
            w.close()
        self._writers.clear()

    def state_dict(self) -> dict[str, Any]:
        return {"written": self.written}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.written = int(state.get("written", 0))
