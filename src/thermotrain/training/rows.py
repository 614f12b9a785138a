"""Metric rows of the training loop: :class:`MetricLog`, the logging half of
:class:`~.loop.LoopState` (``log``, ``log_table``, ``rows``; the contract of :mod:`.hooks`).

Rows are ``(study, method, seed, step, split, metric, value)``, the long format of
``metrics.csv`` (:mod:`.loggers`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from itertools import repeat

from torch import Tensor

__all__ = ["MetricLog", "Row"]

Row = tuple  # (study, method, seed, step, split, metric, value)


class MetricLog:
    """Logging for a state with ``members``, ``seeds``, ``study``, ``method``,
    ``member_methods`` and ``step`` (set ``_rows = []`` and ``_pending = []`` in
    ``__init__``)."""

    members: int
    seeds: list[int]
    step: int
    study: str
    method: str
    member_methods: list[str]
    _rows: list[Row]
    _pending: list[tuple]

    # Metric rows are built lazily: log() and log_table() convert the values at once (one
    # tolist: the value at log time, whatever the caller does to the tensor later) and keep
    # them with their step; ``rows`` turns them into tuples when read (by the loggers at
    # evaluations, checkpoints and the end), in one pass, in logging order.
    @property
    def rows(self) -> list[Row]:
        """The metric rows logged so far (one list object for the whole run)."""
        if self._pending:
            self._build_rows()
        return self._rows

    @rows.setter
    def rows(self, rows: list[Row]) -> None:
        self._pending.clear()
        self._rows = rows

    def _build_rows(self) -> None:
        out, study, methods, seeds = self._rows, self.study, self.member_methods, self.seeds
        for step, split, metric, values in self._pending:
            if metric is None:  # a table: values = (((name, column), ...), columns)
                names, table = values
                if callable(table):  # log_deferred: the columns computed now
                    table = table()
                for name, j in names:
                    out.extend(zip(repeat(study), methods, seeds, repeat(step),
                                   repeat(split), repeat(name), map(float, table[j])))
            elif isinstance(values, float):  # no member's: seed −1
                out.append((study, self.method, -1, step, split, metric, values))
            else:
                out.extend(zip(repeat(study), methods, seeds, repeat(step), repeat(split),
                               repeat(metric), map(float, values)))
        self._pending.clear()

    def log(self, metric: str, value: float | Tensor, split: str = "train") -> None:
        """Record ``metric`` at the current step: a float (one row, ``seed`` −1: not one
        member's) or a ``(K,)`` tensor (one row per member)."""
        if not isinstance(metric, str) or not metric:
            raise TypeError(f"metric must be a non-empty string, got {metric!r}")
        if not isinstance(split, str) or not split:
            raise TypeError(f"split must be a non-empty string, got {split!r}")
        if isinstance(value, Tensor) and value.dim() > 0:
            if value.shape != (self.members,):
                raise ValueError(f"{metric}: a per-member value must have shape "
                                 f"({self.members},), got {tuple(value.shape)}")
            values = value.tolist()
            if value.is_complex():
                raise TypeError(f"{metric}: value must be real, got a {value.dtype} tensor")
            self._pending.append((self.step, split, metric, values))
            return
        if isinstance(value, bool) or not isinstance(value, (int, float, Tensor)):
            raise TypeError(f"{metric}: value must be a number or a ({self.members},) tensor, "
                            f"got {type(value).__name__}")
        self._pending.append((self.step, split, metric, float(value)))

    def log_table(self, columns: Mapping[str, int], values: Tensor,
                  split: str = "train") -> None:
        """Record several per-member metrics at once: ``values`` ``(K, M)``, metric ``name``
        in column ``columns[name]``. The rows are those of ``log(name, values[:, j])`` for
        each ``(name, j)`` in the mapping's order, from one conversion of the table (a hook
        logging many metrics per record saves a call per metric)."""
        if not isinstance(split, str) or not split:
            raise TypeError(f"split must be a non-empty string, got {split!r}")
        if not isinstance(values, Tensor) or values.dim() != 2 \
                or values.shape[0] != self.members or values.is_complex():
            what = (f"{values.dtype} {tuple(values.shape)}" if isinstance(values, Tensor)
                    else type(values).__name__)
            raise ValueError(f"log_table: values must be a real ({self.members}, M) tensor, "
                             f"got {what}")
        names = tuple(columns.items())
        m = values.shape[1]
        for metric, j in names:
            if not isinstance(metric, str) or not metric:
                raise TypeError(f"metric must be a non-empty string, got {metric!r}")
            if isinstance(j, bool) or not isinstance(j, int) or not 0 <= j < m:
                raise ValueError(f"{metric}: column must be an int in [0, {m}), got {j!r}")
        # one conversion, the values at log time (no aliasing)
        self._pending.append((self.step, split, None, (names, values.detach().T.tolist())))

    def row(self, member: int, metric: str, value: float, split: str = "train") -> Row:
        """The metric row of ``member`` at the current step (not recorded)."""
        return (self.study, self.member_methods[member], self.seeds[member], self.step, split,
                metric, value)

    def log_deferred(self, columns: Mapping[str, int], resolve: Callable[[], list],
                     split: str = "train") -> None:
        """Like :meth:`log_table` for a table computed later: ``resolve()`` returns its
        columns (M lists of K floats, column ``columns[name]`` for ``name``) when the rows
        are read. For hooks that reduce many records in one batch; the rows keep their
        place in the logging order."""
        if not isinstance(split, str) or not split:
            raise TypeError(f"split must be a non-empty string, got {split!r}")
        if not callable(resolve):
            raise TypeError(f"resolve must be callable, got {type(resolve).__name__}")
        self._pending.append((self.step, split, None, (tuple(columns.items()), resolve)))
