r"""Hooks: the extension points of the training loop (:mod:`thermotrain.training`).

A hook is an object with any of the event methods below; the loop calls them in the order
the hooks were given. Every event receives the loop's :class:`LoopState` (``state.step``,
``state.model``, ``state.optimizer``, ``state.members`` …) and may log named metrics with
:meth:`LoopState.log`. A hook that keeps state (a random stream, counters, snapshots) returns
it from :meth:`Hook.state_dict`; the loop saves it in the checkpoint under the hook's
:attr:`Hook.name` and gives it back through :meth:`Hook.load_state_dict` on resume, so a run
with hooks resumes bit for bit.

Events, in the order of one step::

    on_start(state)                       once, after a resume has restored every state
    batch = before_gradient(state, batch) may return a rewritten Batch (data swaps)
    after_gradient(state, losses)         losses: (K,) per-member minibatch losses
    after_step(state)                     may move parameters (parameter swaps, replica
                                          exchange); state.step is the new step count
    on_evaluation(state, results)         at evaluation steps: {split: {"loss": (K,), ...}}
    on_checkpoint(state)                  just before a checkpoint is written
    on_end(state)                         once, after the last step

The loop state a hook sees (:class:`thermotrain.training.LoopState`) has at least:

=====================  ====================================================================
``step``               steps taken so far (0 before the first)
``total_steps``        steps the loop will take
``model``              the (ensemble) model being trained
``optimizer``          its optimizer (a :class:`~thermotrain.PartitionedLangevin` or a
                       ``torch.optim`` baseline)
``members``            K, the ensemble size (1 for a plain model)
``seeds``              the K run seeds
``x_train, y_train``   the training set (never modified by the loop)
``energy(x, y)``       per-member mean loss ``(K,)`` of the current parameters on ``(x, y)``
                       under ``torch.no_grad`` (the energy Metropolis moves compare)
``log(metric, value,   record a metric at the current step: ``value`` a float (one row) or
split="train")``       a ``(K,)`` tensor (one row per member)
``log_table(columns,   several per-member metrics at once: ``values`` ``(K, M)``, ``columns``
values, split)``       ``{metric: column}`` (the rows of ``log`` per column, one conversion)
``log_deferred(...)``  the same for a table computed when the rows are read (``resolve()``)
``stop()``             ask the loop to end after this step
``rows``               the metric rows so far, ``(study, method, seed, step, split, metric,
                       value)`` (the long format of ``metrics.csv``)
``diverged``           bool ``(K,)``: members marked diverged (:class:`~.guard.DivergenceGuard`)
``eval_steps``         the steps at which the loop evaluates
=====================  ====================================================================

Example — a hook that logs the squared norm of the first parameter every 10 steps::

    class Norm(tt.training.Hook):
        name = "norm"
        def after_step(self, state):
            if state.step % 10 == 0:
                p = next(state.model.parameters())
                state.log("norm2", p.detach().flatten(1).square().sum(1))  # (K,) per member
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from .loop import LoopState

__all__ = ["Hook", "Batch"]


@dataclass
class Batch:
    """One step's minibatch for all K members.

    Attributes:
        index: ``(K, B)`` indices into the training set (what the minibatcher drew).
        x, y: the batch's data, ``(K, B, ...)``; ``None`` until a hook asks for them with
            :meth:`materialize` (the fused path gathers inside the kernel). A hook that
            rewrites the data (a data swap) sets ``x``/``y`` to **new** tensors — the stored
            data set is never written — and the loop then takes the gradient on them.
    """

    index: Tensor
    x: Tensor | None = None
    y: Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rewritten(self) -> bool:
        """Whether a hook has set explicit data for this batch."""
        return self.x is not None

    def materialize(self, x_train: Tensor, y_train: Tensor) -> Batch:
        """Fill ``x``/``y`` by gathering ``index`` from the training set (copies)."""
        if self.x is None:
            self.x = x_train[self.index]
            self.y = y_train[self.index]
        return self


class Hook:
    """Base class of loop hooks: every event is a no-op; override the ones you need.

    Attributes:
        name: key of this hook's state in the checkpoint and default prefix of its metrics;
            must be unique among a loop's hooks.
    """

    name: str = "hook"

    def on_start(self, state: LoopState) -> None:
        """Called once before the first step (after a resume restored the states)."""

    def before_gradient(self, state: LoopState, batch: Batch) -> Batch:
        """Called before the gradient of each step; may return a rewritten batch."""
        return batch

    def after_gradient(self, state: LoopState, losses: Tensor) -> None:
        """Called after the gradient; ``losses`` are the ``(K,)`` per-member batch losses."""

    def after_step(self, state: LoopState) -> None:
        """Called after ``optimizer.step()``; may change parameters and optimizer state."""

    def on_evaluation(self, state: LoopState, results: dict[str, dict[str, Tensor]]) -> None:
        """Called at evaluation steps with ``{split: {metric: (K,) tensor}}``."""

    def on_checkpoint(self, state: LoopState) -> None:
        """Called just before a checkpoint is written."""

    def on_end(self, state: LoopState) -> None:
        """Called once after the last step."""

    def state_dict(self) -> dict[str, Any]:
        """The hook's state, saved in checkpoints (default: none)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output (default: nothing to restore)."""
