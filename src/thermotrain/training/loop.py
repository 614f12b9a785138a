r"""The training loop: one function, :func:`train`, shared by the runner, the Ray backend and
users; its extension points are :mod:`hooks <.hooks>` (see ``docs/training.md``).

One step of :func:`train`, for an ensemble of K members with stacked parameters θ::

    batch  = Batch(batcher.next())                    # (K, B) indices
    batch  = hook.before_gradient(state, batch)       # may rewrite the data (data swaps)
    losses = gradient(batch)                          # (K,) member losses L_k(θ_k), ∇ in .grad
    hook.after_gradient(state, losses)
    optimizer.step()
    state.step += 1
    hook.after_step(state)                            # may move θ (parameter swaps)
    [evaluation]  [checkpoint]                        # at their steps
    callback(state.step)                              # the step is complete: a consistent point

The gradient of the summed member losses is member k's own :math:`\nabla L_k` (members do
not interact), so member k of the ensemble is the single run with its seeds. Without a
rewritten batch it is taken by :func:`thermotrain.models.fused.gradient_fn` (one C call for
small MLPs, else autograd); with one, by autograd on ``batch.x``, ``batch.y``.

**Checkpoints** hold the model, the optimizer, the minibatcher, every hook's
``state_dict()`` (under its ``name``), the metric rows and the training time; resuming from
one (``resume_from=``) continues bit for bit, hooks included. They are written only at
consistent points — the end of a step, after its evaluation — every ``checkpoint_every``
steps, at the end, and on an interrupt: SIGINT and SIGTERM are deferred to the end of the
current step, then checkpointed and raised as :class:`Interrupted` (a
:class:`KeyboardInterrupt`). A second signal stops at once *without* writing (the step in
flight is half recorded; the last checkpoint stays).

**Metrics** are rows ``(study, method, seed, step, split, metric, value)`` (the long format of
``metrics.csv``); evaluations log one row per member and metric, hooks log with
:meth:`LoopState.log`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..models import ensemble_loss
from ..models import fused as fused_mlp
from .control import Interrupted, atomic_torch_save, deferred_signals, frozen_gc
from .hooks import Batch, Hook
from .rows import MetricLog, Row

__all__ = ["LoopState", "train", "Interrupted", "EVENTS", "atomic_torch_save"]

#: the hook events, in the order of a step (plus on_start / on_end)
EVENTS = ("on_start", "before_gradient", "after_gradient", "after_step", "on_evaluation",
          "on_checkpoint", "on_end")

class LoopState(MetricLog):
    """What every hook event sees (the contract of :mod:`.hooks`).

    Attributes:
        step, total_steps: steps taken so far and steps the loop will take.
        model, optimizer: the ensemble being trained and its optimizer.
        members, seeds: K and the K run seeds.
        x_train, y_train: the training set (never modified by the loop).
        rows: the metric rows logged so far ``(study, method, seed, step, split, metric,
            value)``.
        diverged: bool ``(K,)``, members marked diverged (by
            :class:`~.guard.DivergenceGuard`): their evaluations are logged as NaN.
        eval_steps: the steps at which the loop evaluates.
        seconds: training time so far (without evaluations and checkpoints).
    """

    def __init__(self, model: torch.nn.Module, optimizer: Any, *, x_train: Tensor,
                 y_train: Tensor, seeds: Sequence[int], total_steps: int,
                 eval_steps: Iterable[int] = (), study: str = "",
                 method: str | Sequence[str] = ""):
        self.model = model
        self.optimizer = optimizer
        self.x_train, self.y_train = x_train, y_train
        self.seeds = [int(s) for s in seeds]
        self.members = len(self.seeds)
        self.total_steps = int(total_steps)
        self.eval_steps = frozenset(int(s) for s in eval_steps)
        self.step = 0
        self._rows: list[Row] = []
        self._pending: list[tuple] = []  # logged values not yet rows (see rows)
        self.seconds = 0.0
        self.study = study
        if isinstance(method, str):
            self.method, self.member_methods = method, [method] * self.members
        else:
            self.member_methods = [str(m) for m in method]
            if len(self.member_methods) != self.members:
                raise ValueError(f"method must be one name or one per member "
                                 f"({self.members}), got {len(self.member_methods)}")
            self.method = self.member_methods[0]
        device = next(model.parameters()).device
        self.diverged = torch.zeros(self.members, dtype=torch.bool, device=device)
        self.stop_requested = False

    @torch.no_grad()
    def energy(self, x: Tensor, y: Tensor) -> Tensor:
        """Per-member mean loss ``(K,)`` of the current parameters on ``(x, y)``: ``x``
        ``(N, ...)`` shared by all members or ``(K, N, ...)`` one set per member."""
        was = self.model.training
        self.model.eval()
        try:
            out = self.model(x)
            if out.dim() == 2:  # a plain model: one member
                out = out.unsqueeze(0)
            return ensemble_loss(out, y)
        finally:
            self.model.train(was)

    def stop(self) -> None:
        """Ask the loop to end after the current step (it checkpoints and returns)."""
        self.stop_requested = True


def _check_hooks(hooks: Sequence[Any]) -> None:
    names = [getattr(h, "name", type(h).__name__) for h in hooks]
    for h, n in zip(hooks, names, strict=True):
        if not isinstance(n, str) or not n:
            raise TypeError(f"hook {h!r} must have a non-empty string name, got {n!r}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"hook names must be unique (checkpoint keys), repeated: "
                         f"{', '.join(dupes)}")


def _bound(hooks: Sequence[Any], event: str) -> list[Callable]:
    """The hooks' bound methods for ``event``, skipping :class:`Hook`'s no-ops."""
    out = []
    for h in hooks:
        fn = getattr(h, event, None)
        if fn is None or getattr(type(h), event, None) is getattr(Hook, event):
            continue
        out.append(fn)
    return out


def train(
    model: torch.nn.Module,
    optimizer: Any,
    batcher: Any,
    *,
    steps: int,
    x_train: Tensor,
    y_train: Tensor,
    gradient: Callable[[Tensor], Tensor] | None = None,
    hooks: Sequence[Any] = (),
    seeds: Sequence[int] | None = None,
    evaluate: Callable[[torch.nn.Module], Mapping[str, Mapping[str, Tensor]]] | None = None,
    eval_steps: Iterable[int] = (),
    checkpoint: Path | Callable[[dict[str, Any]], None] | None = None,
    checkpoint_every: int = 0,
    resume_from: Mapping[str, Any] | None = None,
    extra_state: Callable[[], dict[str, Any]] | None = None,
    study: str = "",
    method: str | Sequence[str] = "",
    callback: Callable[[int], None] | None = None,
    progress: Callable[[int, float], None] | None = None,
    handle_signals: bool = True,
) -> LoopState:
    r"""Train ``model`` for ``steps`` optimizer steps; return the final :class:`LoopState`.

    Args:
        model: a K-member ensemble (parameters stacked on axis 0) or a plain model (K = 1).
        optimizer: a :class:`~thermotrain.PartitionedLangevin` sampler or a ``torch.optim``
            optimizer over ``model``'s parameters.
        batcher: a :class:`~thermotrain.data.Minibatcher` (``next()`` → ``(K, B)`` indices,
            ``state_dict``/``load_state_dict``).
        steps: total number of steps (a resumed run continues up to it).
        x_train, y_train: the training set the indices refer to.
        gradient: ``gradient(idx) -> (K,) losses`` leaving :math:`\nabla\sum_k L_k` in
            ``.grad`` (default: :func:`~thermotrain.models.fused.gradient_fn`).
        hooks: :class:`~.hooks.Hook` objects (unique ``name``), called in this order.
        seeds: the K run seeds (the ``seed`` column of metric rows; default ``0..K-1``).
        evaluate: ``evaluate(model) -> {split: {metric: (K,) tensor}}``, called (in eval
            mode, without gradients) at ``eval_steps`` (step 0 included if listed).
        checkpoint: a path (written atomically) or a function receiving the checkpoint
            dict; ``None``: no checkpoints.
        checkpoint_every: also checkpoint every this many steps (0: only at the end and on
            an interrupt).
        resume_from: a checkpoint dict written by this function: continue from it.
        extra_state: adds keys to every checkpoint (e.g. a configuration fingerprint).
        study, method: the first two columns of the metric rows (``method``: one name, or
            one per member — e.g. the cells of a packed hyperparameter sweep).
        callback: ``callback(step)`` at the end of every step (a consistent point: raising
            :class:`KeyboardInterrupt` there checkpoints the step first).
        progress: ``progress(steps_since_last_call, steps_per_second)`` now and then.
        handle_signals: defer SIGINT/SIGTERM to the end of the step (main thread only).

    Raises:
        Interrupted: after SIGINT/SIGTERM (checkpointed at the end of the step).
        ValueError, TypeError: bad arguments, naming the value.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) \
            or checkpoint_every < 0:
        raise ValueError(f"checkpoint_every must be an integer >= 0, got {checkpoint_every!r}")
    hooks = list(hooks)
    _check_hooks(hooks)
    k = int(getattr(batcher, "ensemble_size", 1))
    seeds = list(range(k)) if seeds is None else list(seeds)
    if len(seeds) != k:
        raise ValueError(f"seeds must give one seed per member ({k}), got {len(seeds)}")
    eval_steps = frozenset(int(s) for s in eval_steps)
    state = LoopState(model, optimizer, x_train=x_train, y_train=y_train, seeds=seeds,
                      total_steps=steps, eval_steps=eval_steps, study=study, method=method)
    save: Callable[[dict[str, Any]], None] | None
    if checkpoint is None or callable(checkpoint):
        save = checkpoint
    else:
        path = Path(checkpoint)
        save = lambda obj: atomic_torch_save(obj, path)  # noqa: E731

    if resume_from is not None:
        _restore(state, resume_from, batcher, hooks)
        if resume_from.get("done"):
            return state

    def checkpoint_now(done: bool) -> None:
        if save is None:
            return
        for fn in _bound(hooks, "on_checkpoint"):
            fn(state)
        obj = {"step": state.step, "done": done, "seconds": state.seconds,
               "model": model.state_dict(), "optimizer": optimizer.state_dict(),
               "batcher": batcher.state_dict(), "rows": state.rows,
               "hooks": {h.name: h.state_dict() for h in hooks}}
        if extra_state is not None:
            obj.update(extra_state())
        save(obj)

    def evaluation() -> None:
        if evaluate is None or state.step not in eval_steps:
            return
        was = model.training
        model.eval()
        with torch.no_grad():
            results = {split: dict(m) for split, m in evaluate(model).items()}
        model.train(was)
        mask = state.diverged
        for split, metrics in results.items():
            for name, values in metrics.items():
                if bool(mask.any()):
                    values = torch.where(mask.to(values.device), float("nan"), values)
                    metrics[name] = values
                state.log(name, values, split)
        for fn in _bound(hooks, "on_evaluation"):
            fn(state, results)

    for fn in _bound(hooks, "on_start"):
        fn(state)
    if state.step == 0 and resume_from is None:
        evaluation()
    gradient = gradient or fused_mlp.gradient_fn(model, x_train, y_train)
    before = _bound(hooks, "before_gradient")
    after_gradient = _bound(hooks, "after_gradient")
    after_step = _bound(hooks, "after_step")
    report_every = max(1, min(500, steps // 100 or 1))
    start, last_report = state.step, state.step
    consistent = True  # the state is that of a completed, fully recorded step

    with deferred_signals(handle_signals) as received, frozen_gc():
        tick = time.perf_counter()
        try:
            while state.step < steps:
                consistent = False
                batch = Batch(batcher.next())
                for fn in before:
                    batch = fn(state, batch)
                    if not isinstance(batch, Batch):
                        raise TypeError(f"{fn.__qualname__} must return a Batch, got "
                                        f"{type(batch).__name__}")
                if batch.rewritten:
                    losses = fused_mlp.autograd_loss_and_grad(model, batch.x, batch.y)
                else:
                    losses = gradient(batch.index)
                losses = losses.reshape(-1)
                for fn in after_gradient:
                    fn(state, losses)
                optimizer.step()
                state.step += 1
                for fn in after_step:
                    fn(state)
                step = state.step
                if step in eval_steps or (save is not None and checkpoint_every
                                          and step % checkpoint_every == 0 and step < steps):
                    state.seconds += time.perf_counter() - tick
                    evaluation()
                    if save is not None and checkpoint_every and step % checkpoint_every == 0 \
                            and step < steps:
                        checkpoint_now(False)
                    tick = time.perf_counter()
                consistent = True
                if progress is not None and step % report_every == 0:
                    rate = (step - start) / max(state.seconds + time.perf_counter() - tick, 1e-9)
                    progress(step - last_report, rate)
                    last_report = step
                if callback is not None:
                    callback(step)
                if received:
                    raise Interrupted(received[0])
                if state.stop_requested:
                    break
        except KeyboardInterrupt:  # a crash (any other error) keeps the last checkpoint
            state.seconds += time.perf_counter() - tick
            if consistent:  # else a second signal hit mid-step: nothing half-recorded saved
                checkpoint_now(False)
            raise
        state.seconds += time.perf_counter() - tick
    for fn in _bound(hooks, "on_end"):
        fn(state)
    checkpoint_now(done=True)
    if progress is not None and state.step != last_report:
        progress(state.step - last_report, (state.step - start) / max(state.seconds, 1e-9))
    return state


def _restore(state: LoopState, ckpt: Mapping[str, Any], batcher: Any,
             hooks: Sequence[Any]) -> None:
    """Load a checkpoint written by :func:`train` into the state, batcher and hooks."""
    missing = [k for k in ("step", "model", "optimizer", "batcher", "rows") if k not in ckpt]
    if missing:
        raise ValueError(f"not a training checkpoint: missing {', '.join(missing)}")
    state.step = int(ckpt["step"])
    state.seconds = float(ckpt.get("seconds", 0.0))
    state.rows = [tuple(r) for r in ckpt["rows"]]
    if ckpt.get("done"):
        return
    state.model.load_state_dict(ckpt["model"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    batcher.load_state_dict(ckpt["batcher"])
    saved = ckpt.get("hooks", {})
    for h in hooks:  # a hook the checkpoint does not know starts afresh
        if h.name in saved:
            h.load_state_dict(saved[h.name])
    if not math.isfinite(state.seconds):
        state.seconds = 0.0
