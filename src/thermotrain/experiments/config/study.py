r"""The resolved study: frozen dataclasses of the tables of a study file (see
:mod:`thermotrain.experiments.config`), and the seed streams of its runs.

**Seeds.** Member k of a study uses the run seed :math:`s_k` = ``training.seed + k``; it
initialises the network with :math:`s_k`, draws its minibatches with
:math:`s_k + 1\,000\,003` and its sampler noise with :math:`s_k + 2\,000\,006`
(:func:`stream_seeds`). Every method sees the same initialisation and batches for a given k
(paired comparisons, as the paper's "same initial conditions").
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["DataConfig", "ModelConfig", "TrainingConfig", "MethodConfig", "PaperResult",
           "StudyConfig", "DATA_KINDS", "SEED_STREAMS", "stream_seeds", "slug"]

#: data-set kinds and the optional keys each accepts (beyond the common ones)
DATA_KINDS: dict[str, tuple[str, ...]] = {
    "spirals": ("turns", "a", "p", "noise"),
    "planar_trig": ("frequency", "b", "noise"),
    "mnist": ("normalize", "flatten"),
    "fashion_mnist": ("normalize", "flatten"),
}

#: optimizer kinds and their hyperparameters: key -> (kind of value, default or None)

#: offset of each random stream from the run seed (see the module docstring)
SEED_STREAMS = {"init": 0, "batches": 1_000_003, "noise": 2_000_006}


def stream_seeds(seeds: Sequence[int], stream: str) -> list[int]:
    """The seeds of one random stream (``"init"``, ``"batches"``, ``"noise"``) for run seeds
    :math:`s_k`: :math:`s_k` plus a fixed offset per stream (see the module docstring)."""
    return [int(s) + SEED_STREAMS[stream] for s in seeds]


def slug(name: str) -> str:
    """A file-system friendly version of a method name (``AdLaLa(noise=0.01)`` →
    ``AdLaLa_noise-0.01``): letters, digits, ``.+-_``, never a leading dot (so never ``..``,
    which would put a method's folder outside the run folder)."""
    text = re.sub(r"[=]", "-", name)
    text = re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_")
    text = re.sub(r"^\.+", lambda m: "_" * len(m.group()), text)
    return text or "method"


# --------------------------------------------------------------------------- dataclasses
@dataclass(frozen=True)
class DataConfig:
    """The data set.

    Attributes:
        kind: ``spirals`` (docs/science.md §6, Eq. 16), ``planar_trig`` (Eq. 17, our definition),
            ``mnist`` or ``fashion_mnist``.
        n_train, n_test: sizes; generated sets draw that many points, image sets keep the
            first ``n`` images (``None``: all).
        seed: seed of the training set; ``test_seed`` (default ``seed + 1``) of the test set.
        turns, a, p, noise: spiral parameters (b, a, p, c of Eq. 16).
        frequency, b, noise: planar trigonometric parameters (a, b, c of Eq. 17).
        normalize: standardize images with the training mean/std; ``flatten``: feed images
            as vectors (MLP) rather than ``(1, 28, 28)`` (CNN).
    """

    kind: str
    n_train: int | None = None
    n_test: int | None = None
    seed: int = 0
    test_seed: int | None = None
    turns: float = 4.0
    a: float = 2.0
    p: float = 0.5
    noise: float = 0.02
    frequency: float = 3.0
    b: float = 2.0
    normalize: bool = False
    flatten: bool = True

    @property
    def resolved_test_seed(self) -> int:
        """The test-set seed (``seed + 1`` unless given)."""
        return self.seed + 1 if self.test_seed is None else self.test_seed

    @property
    def binary(self) -> bool:
        """Two classes with one sigmoid output (generated sets) vs ten-class softmax."""
        return self.kind in ("spirals", "planar_trig")


@dataclass(frozen=True)
class ModelConfig:
    """The network: ``mlp`` = Linear → φ → … → Linear (``hidden`` widths; ``[H]`` is the
    paper's SHLP), or ``cnn`` (:class:`thermotrain.models.CNN`, ``channels``).
    ``init = "default"`` (PyTorch's U(±1/√fan_in)) or ``"normal"`` with ``init_std``."""

    kind: str = "mlp"
    hidden: tuple[int, ...] = (100,)
    activation: str = "relu"
    init: str = "default"
    init_std: float | None = None
    channels: tuple[int, ...] = (16, 32)

    def init_spec(self, init: str | None = None, init_std: float | None = None) -> Any:
        """The ``init=`` argument of the model constructors (method overrides first)."""
        kind = init or self.init
        std = init_std if init is not None else self.init_std
        return "default" if kind == "default" else ("normal", std)


@dataclass(frozen=True)
class TrainingConfig:
    """The training protocol, the same for every method of a study.

    Attributes:
        seeds: number of runs K per method (trained together as one ensemble).
        seed: run seed of member 0 (member k uses ``seed + k``).
        steps: optimizer steps per run.
        batch_size: minibatch size B.
        replacement: ``false``: epoch-wise reshuffled batches (PyTorch's DataLoader(shuffle=True),
            the authors' protocol); ``true``: a fresh batch every step (docs/science.md §4).
        eval_every: evaluate train/test loss and accuracy on the full sets every this many
            steps (plus at step 0, at ``eval_at`` and at the end).
        eval_at: extra evaluation steps.
        checkpoint_every: write a resumable checkpoint every this many steps (0: only at the
            end and on interrupts).
        snapshot_at: steps at which parameters are saved for the report (first-layer weights
            and biases of every member, all parameters of ``saved_members`` members); step 0
            and the last step are always included.
        saved_members: how many members' full parameters to keep (decision boundaries).
        eval_batch: evaluation chunk size (bounds memory on large data sets).
        snapshot_average: W ≥ 1; with W > 1 every snapshot at step s also keeps the
            parameters of the ``saved_members`` members at the last W steps
            ``max(0, s - W + 1), …, s`` (key ``"window"`` of the snapshot), and the report
            draws the classifier averaged over them: the mean of the W predicted
            probabilities (paper Fig. 9: "the classifier was averaged over the last 10 steps
            of training"). 1 (default): no averaging.
        rng: the samplers' noise source, ``"philox"`` (the default, docs/science.md §0: a
            counter-based stream fused with the update, several times faster per step; see
            :mod:`thermotrain.samplers.philox`) or ``"torch"`` (torch generators).
    """

    steps: int
    batch_size: int
    seeds: int = 1
    seed: int = 0
    replacement: bool = False
    eval_every: int = 1000
    eval_at: tuple[int, ...] = ()
    checkpoint_every: int = 10_000
    snapshot_at: tuple[int, ...] = ()
    saved_members: int = 3
    eval_batch: int = 10_000
    snapshot_average: int = 1
    rng: str = "philox"

    @property
    def run_seeds(self) -> list[int]:
        """The run seeds :math:`s_0, …, s_{K-1}`."""
        return [self.seed + k for k in range(self.seeds)]

    def eval_steps(self) -> list[int]:
        """Sorted evaluation steps: 0, every ``eval_every``, ``eval_at`` and the last step."""
        steps = set(range(0, self.steps + 1, self.eval_every)) | {0, self.steps}
        steps |= {s for s in self.eval_at if s <= self.steps}
        return sorted(steps)

    def snapshot_steps(self) -> list[int]:
        """Sorted snapshot steps (always 0 and the last step)."""
        return sorted({0, self.steps} | {s for s in self.snapshot_at if s <= self.steps})


@dataclass(frozen=True)
class MethodConfig:
    """One trained method: the optimizer kind and its resolved hyperparameters.

    Attributes:
        name: unique display name (expanded sweeps: ``base(key=value, ...)``).
        optimizer: one of :data:`OPTIMIZERS`.
        hyperparameters: keyword arguments of the optimizer (defaults filled in; SGLD's
            ``sigma`` converted to ``temperature``).
        init, init_std: optional override of the model's initialisation.
        base: the name before sweep expansion; ``sweep``: this cell's swept values.
    """

    name: str
    optimizer: str
    hyperparameters: dict[str, Any]
    init: str | None = None
    init_std: float | None = None
    base: str = ""
    sweep: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PaperResult:
    """The paper's reported final test accuracy (fraction) for one method, ± its spread."""

    test_accuracy: float | None = None
    test_accuracy_std: float | None = None
    step: int | None = None
    note: str = ""


@dataclass(frozen=True)
class StudyConfig:
    """A validated study: what to train, how, and what the paper reports."""

    name: str
    description: str
    data: DataConfig
    model: ModelConfig
    training: TrainingConfig
    methods: tuple[MethodConfig, ...]
    paper: dict[str, PaperResult]
    source: str = ""
    path: str = ""
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-serialisable) of the resolved configuration."""
        out = asdict(self)
        out["methods"] = [asdict(m) for m in self.methods]
        return _jsonable(out)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


