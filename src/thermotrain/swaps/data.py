r"""Data swaps: Monte Carlo moves on a copy of each minibatch (docs/science.md §9, docs/swaps.md).

The poster's data swaps exchange values inside the images a step trains on. They act on a
**copy** of the batch: the stored training set is never written. Per ensemble member and
step, with probability ``rate``, the member's batch :math:`x_k` of shape ``(B, C, P)``
(P = H·W pixels) is rewritten by one of

================= ==========================================================================
``"1SA"``          the poster's one-image swap: in ``images`` images, two random channels
                   :math:`c \ne c'` are exchanged at every pixel, :math:`x_{bcp} \leftrightarrow
                   x_{bc'p}`
``"pixel-pair"``   in ``images`` images, ``pairs`` pairs of pixels exchange all their channels,
                   :math:`x_{b\cdot p} \leftrightarrow x_{b\cdot p'}`
``"batch-channels"`` two channels exchanged at every pixel of every image of the batch
``"pixels"``       every image of the batch exchanges ``pairs`` pairs of its pixels (grey
                   images too)
================= ==========================================================================

Channel swaps need C ≥ 2 (colour data such as :func:`thermotrain.data.colorized_mnist`).
Member k's draws are row k of the move's own generator's draws (seeded, in ``state_dict``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..training.hooks import Batch, Hook
from ._state import check_choice, make_generator, set_generator_state

__all__ = ["DataSwap", "DATA_KINDS"]

DATA_KINDS = ("1SA", "pixel-pair", "batch-channels", "pixels")


class DataSwap(Hook):
    """A data swap applied to copies of minibatches, in a user's loop or as a loop hook.

    Args:
        kind: one of :data:`DATA_KINDS` (see the module docstring).
        rate: probability per step and member that the member's batch is swapped.
        images: images per batch touched by ``"1SA"`` and ``"pixel-pair"``.
        pairs: pixel pairs per touched image (``"pixel-pair"``, ``"pixels"``).
        image_shape: ``(C, H, W)`` of one image; needed when batches are flattened
            (``(K, B, C·H·W)``, the MLPs' input) or grey without a channel axis. Without it the
            last three axes of a batch are ``(C, H, W)``.
        seed: seed of the move's generator.
        name: hook name.

    Example:
        >>> import torch, thermotrain as tt
        >>> swap = tt.swaps.DataSwap("1SA", rate=1.0, seed=0)
        >>> x = torch.rand(4, 8, 3, 28, 28)          # (K, B, C, H, W)
        >>> y = swap.apply(x)                        # a new tensor; x is unchanged
    """

    def __init__(self, kind: str = "1SA", *, rate: float = 1.0, images: int = 1, pairs: int = 1,
                 image_shape: Sequence[int] | None = None, seed: int = 0,
                 name: str | None = None):
        self.kind = check_choice("kind", kind, DATA_KINDS)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise ValueError(f"rate must be a probability in [0, 1], got {rate!r}")
        for key, value in (("images", images), ("pairs", pairs)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be an int >= 1, got {value!r}")
        if image_shape is not None:
            image_shape = tuple(image_shape)
            if len(image_shape) != 3 or not all(isinstance(s, int) and s >= 1
                                                for s in image_shape):
                raise ValueError(f"image_shape must be (C, H, W) of ints >= 1, "
                                 f"got {image_shape!r}")
            if self.kind in ("1SA", "batch-channels") and image_shape[0] < 2:
                raise ValueError(f"kind {self.kind!r} swaps channels and needs C >= 2, got "
                                 f"image_shape {image_shape!r} (grey images: use 'pixels' or "
                                 "'pixel-pair')")
        self.rate, self.images, self.pairs = float(rate), images, pairs
        self.image_shape = image_shape
        self.name = name or f"dataswap_{kind}"
        self._seed = seed
        self.generator = make_generator(seed)
        self.swapped = 0

    def _view(self, x: Tensor) -> tuple[Tensor, int, int]:
        """``x`` as ``(K, B, C, P)`` (copied), with K and B."""
        if self.image_shape is not None:
            c, h, w = self.image_shape
            size = c * h * w
            if x.shape[-1] == size and x.dim() in (2, 3):
                lead = x.shape[:-1]
            elif tuple(x.shape[-3:]) == self.image_shape and x.dim() in (4, 5):
                lead = x.shape[:-3]
            elif x.dim() in (3, 4) and tuple(x.shape[-2:]) == (h, w) and c == 1:
                lead = x.shape[:-2]
            else:
                raise ValueError(f"batch of shape {tuple(x.shape)} does not end in image_shape "
                                 f"{self.image_shape} or its flattened size {size}")
        else:
            if x.dim() not in (4, 5):
                raise ValueError(f"batch of shape {tuple(x.shape)}: expected (K, B, C, H, W) or "
                                 "(B, C, H, W); pass image_shape= for flattened or grey batches")
            c, h, w = x.shape[-3:]
            lead = x.shape[:-3]
        k, b = (1, lead[0]) if len(lead) == 1 else (lead[0], lead[1])
        if self.kind in ("1SA", "batch-channels") and c < 2:
            raise ValueError(f"kind {self.kind!r} swaps channels and needs C >= 2, got C = {c}")
        if self.kind in ("1SA", "pixel-pair") and self.images > b:
            raise ValueError(f"images={self.images} exceeds the batch size {b}")
        if self.kind in ("pixel-pair", "pixels") and 2 * self.pairs > h * w:
            raise ValueError(f"pairs={self.pairs} needs {2 * self.pairs} pixels, images have "
                             f"{h * w}")
        return x.reshape(k, b, c, h * w), k, b

    def _distinct(self, n: int, count: int, *lead: int) -> Tensor:
        u = torch.rand((*lead, n), generator=self.generator)
        return u.topk(count, dim=-1).indices

    @torch.no_grad()
    def apply(self, x: Tensor) -> Tensor:
        """The swapped batch: a new tensor of ``x``'s shape (``x`` is never modified)."""
        if not isinstance(x, Tensor):
            raise TypeError(f"a batch must be a tensor, got {type(x).__name__}")
        v, k, b = self._view(x)
        c, p = v.shape[2], v.shape[3]
        do = torch.rand(k, generator=self.generator) < self.rate            # (K,)
        dev = x.device
        if self.kind in ("1SA", "batch-channels"):
            index = torch.arange(c).repeat(k, b, 1)                          # (K, B, C)
            if self.kind == "1SA":
                imgs = self._distinct(b, self.images, k)                     # (K, n)
                ch = self._distinct(c, 2, k, self.images)                    # (K, n, 2)
            else:
                imgs = torch.arange(b).repeat(k, 1)
                ch = self._distinct(c, 2, k)[:, None, :].expand(k, b, 2)
            rows = torch.arange(k)[:, None].expand_as(imgs)
            index[rows, imgs, ch[..., 0]] = ch[..., 1]
            index[rows, imgs, ch[..., 1]] = ch[..., 0]
            index = torch.where(do[:, None, None], index, torch.arange(c))
            out = v.gather(2, index.to(dev)[..., None].expand(k, b, c, p))
        else:
            index = torch.arange(p).repeat(k, b, 1)                          # (K, B, P)
            if self.kind == "pixel-pair":
                imgs = self._distinct(b, self.images, k)
            else:
                imgs = torch.arange(b).repeat(k, 1)
            n = imgs.shape[1]
            pix = self._distinct(p, 2 * self.pairs, k, n)                    # (K, n, 2q)
            rows = torch.arange(k)[:, None, None].expand_as(pix[..., :self.pairs])
            cols = imgs[..., None].expand_as(rows)
            a, bb = pix[..., :self.pairs], pix[..., self.pairs:]
            index[rows, cols, a] = bb
            index[rows, cols, bb] = a
            index = torch.where(do[:, None, None], index, torch.arange(p))
            out = v.gather(3, index.to(dev)[:, :, None, :].expand(k, b, c, p))
        self.swapped += int(do.sum())
        return out.reshape(x.shape)

    # ------------------------------------------------------------------ as a hook
    def before_gradient(self, state: Any, batch: Batch) -> Batch:
        batch.materialize(state.x_train, state.y_train)
        assert batch.x is not None
        batch.x = self.apply(batch.x)
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "swapped": self.swapped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        set_generator_state(self.generator, state["generator"])
        self.swapped = int(state["swapped"])
