"""Networks for thermotrain: plain PyTorch models and vectorised seed ensembles.

* :class:`MLP` / :func:`SHLP` — fully connected nets (the paper's single-hidden-layer
  perceptron, docs/science.md §6); :class:`CNN` — a small conv net for 1×28×28 / 3×32×32 images.
  ``ensemble=None`` builds an ordinary ``nn.Linear`` / ``nn.Conv2d`` model; ``ensemble=K``
  builds K independent networks as one module whose parameters have a leading axis of size K
  (pass ``ensemble_dim=0`` to the samplers), evaluated with batched matmuls / grouped
  convolutions. Member k equals the plain net with seed ``s_k`` (bit-identical at init).
* :class:`EnsembleLinear`, :class:`EnsembleConv2d` — the ensemble layers.
* :func:`stack` / :func:`unstack` — K plain models ↔ one ensemble (copies).
* :class:`Init`, :func:`as_init`, :func:`member_seeds` — seeded initialisation
  (PyTorch default ``U(±1/√fan_in)`` or ``N(0, s²)``), see
  :mod:`thermotrain.models.initialization`.
* Heads/losses on logits: :func:`classification_loss` (binary sigmoid+BCE or softmax+CE, mean
  over the batch), :func:`ensemble_loss` (``(K,)`` per-member means; train on their sum),
  :func:`accuracy`, :func:`ensemble_accuracy`, :func:`predict`.

Example:
    >>> import torch
    >>> from thermotrain.models import MLP, ensemble_loss
    >>> ens = MLP([2, 100, 1], ensemble=100, seed=0)        # seeds 0..99
    >>> x, y = torch.randn(25, 2), torch.randint(0, 2, (25,))
    >>> ensemble_loss(ens(x), y).sum().backward()          # = 100 independent backward passes
"""

from .averaging import averaged_probability, probability
from .base import StackableModel
from .cnn import CNN
from .ensemble import stack, unstack
from .initialization import Init, InitLike, as_init, member_seeds
from .layers import EnsembleBatchNorm1d, EnsembleConv2d, EnsembleLinear
from .losses import (
    accuracy,
    binary_cross_entropy,
    classification_loss,
    cross_entropy,
    ensemble_accuracy,
    ensemble_loss,
    predict,
)
from .mlp import MLP, SHLP

__all__ = [
    "MLP",
    "SHLP",
    "CNN",
    "StackableModel",
    "EnsembleLinear",
    "EnsembleBatchNorm1d",
    "EnsembleConv2d",
    "stack",
    "unstack",
    "Init",
    "InitLike",
    "as_init",
    "member_seeds",
    "binary_cross_entropy",
    "cross_entropy",
    "classification_loss",
    "ensemble_loss",
    "predict",
    "accuracy",
    "ensemble_accuracy",
    "averaged_probability",
    "probability",
]
