"""The training loop shared by the runner, the Ray backend and users, with its hooks.

* :func:`train` and :class:`LoopState` (:mod:`.loop`) — one loop with events;
* :class:`Hook`, :class:`Batch` (:mod:`.hooks`) — the events and what they see;
* :class:`DivergenceGuard` (:mod:`.guard`) — diverging members marked and frozen;
* :class:`CSVLogger`, :class:`TensorBoardLogger` (:mod:`.loggers`) — loggers are hooks.

See ``docs/training.md`` for an example.
"""

from .guard import DivergenceGuard, finite_members
from .hooks import Batch, Hook
from .loggers import METRIC_COLUMNS, CSVLogger, TensorBoardLogger, write_rows
from .loop import EVENTS, Interrupted, LoopState, train

__all__ = ["Batch", "Hook", "LoopState", "train", "Interrupted", "EVENTS", "DivergenceGuard",
           "finite_members", "CSVLogger", "TensorBoardLogger", "METRIC_COLUMNS", "write_rows"]
