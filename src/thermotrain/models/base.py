"""The common base of the thermotrain networks: one class serves a plain net and a K-ensemble.

A :class:`StackableModel` with ``ensemble_size is None`` is an ordinary PyTorch model built
from ``nn.Linear`` / ``nn.Conv2d``. With ``ensemble_size = K`` the same architecture is built
from :mod:`~thermotrain.models.layers` ensemble layers whose parameters carry a leading K
axis; parameter *names* are the same in both cases, so the ensemble's ``state_dict`` is the
plain ``state_dict`` of each member stacked on axis 0 (what ``torch.func.stack_module_state``
returns for K plain models).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._checks import check_device, check_dtype, check_ensemble
from .initialization import Init, as_init, init_layer_, make_generator, member_seeds

__all__ = ["StackableModel"]


class StackableModel(nn.Module):
    """Base class of :class:`~thermotrain.models.MLP` and :class:`~thermotrain.models.CNN`.

    Attributes:
        ensemble_size: ``None`` (plain network) or K (ensemble of K independent networks,
            every parameter has a leading axis of size K: ``ensemble_dim = 0``).
        initialization: the :class:`~thermotrain.models.Init` used at construction.
        seeds: the seed(s) used at construction, one per network (``(seed,)`` for a plain
            model, ``(s_0, …, s_{K−1})`` for an ensemble).

    Subclasses implement :meth:`config` (the architecture as plain data, the keyword arguments
    that rebuild it), :meth:`layer_modules` (the modules owning parameters, in registration
    order) and ``forward``.
    """

    #: The axis of every parameter (and of the outputs) that indexes ensemble members.
    ensemble_dim: int = 0

    ensemble_size: int | None
    initialization: Init
    seeds: tuple[int, ...]

    def _setup(
        self, ensemble: object, init: object, seed: object, device: object, dtype: object
    ) -> dict[str, Any]:
        """Validate the common arguments; returns the factory kwargs for parameters."""
        self.ensemble_size = check_ensemble(ensemble)
        self.initialization = as_init(init)
        self.seeds = member_seeds(seed, self.ensemble_size)
        return {"device": check_device(device), "dtype": check_dtype(dtype)}

    def _initialize(self) -> None:
        """Draw all parameters: one generator per network, layers in order, weight then bias."""
        gens = [make_generator(s) for s in self.seeds]
        for layer in self.layer_modules():
            init_layer_(layer, self.initialization, gens)

    # --- to be provided by subclasses -------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The architecture as keyword arguments of the constructor (plain data)."""
        raise NotImplementedError

    def layer_modules(self) -> list[nn.Module]:
        """The modules that own parameters (weight and bias), in registration order.

        This is the sampler's "by layer" partition (docs/science.md §3): equal to
        ``[m for m in self.modules() if any(True for _ in m.parameters(recurse=False))]``.
        """
        raise NotImplementedError

    # --- ensemble helpers -------------------------------------------------------------------
    @property
    def is_ensemble(self) -> bool:
        """True for a K-member ensemble."""
        return self.ensemble_size is not None

    def _like(self, ensemble: int | None, seed: int | list[int]) -> StackableModel:
        """A new model with the same architecture, dtype and device (freshly initialised)."""
        p = next(self.parameters())
        return type(self)(
            **self.config(),
            ensemble=ensemble,
            init=self.initialization,
            seed=seed,
            device=p.device,
            dtype=p.dtype,
        )

    def member(self, k: int) -> StackableModel:
        """A plain copy of ensemble member ``k`` (parameters copied, not shared)."""
        if self.ensemble_size is None:
            raise ValueError(f"member() needs an ensemble model, got a plain {type(self).__name__}")
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < self.ensemble_size:
            raise ValueError(f"member index must be an int in [0, {self.ensemble_size}), got {k!r}")
        plain = self._like(None, self.seeds[k])
        source = dict(self.named_parameters())
        with torch.no_grad():
            for name, dst in plain.named_parameters():
                src = source[name]
                dst.copy_(src[k])
                dst.requires_grad_(src.requires_grad)
        return plain
