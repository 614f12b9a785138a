"""Data swaps: copies only (the stored data never changes), exact permutations of values,
seeded and resumable."""

from __future__ import annotations

import pytest
import torch

from thermotrain.swaps import DATA_KINDS, DataSwap


def _batch(k=3, b=5, c=3, h=4, w=4, seed=0):
    return torch.rand(k, b, c, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", DATA_KINDS)
def test_swaps_return_a_permuted_copy_and_leave_the_input_alone(kind):
    x = _batch()
    keep = x.clone()
    out = DataSwap(kind, rate=1.0, images=2, pairs=2, seed=1).apply(x)
    assert torch.equal(x, keep) and out.data_ptr() != x.data_ptr()
    assert out.shape == x.shape and not torch.equal(out, x)
    # each image's values are a permutation of its own values (nothing crosses images)
    flat_in, flat_out = x.reshape(3, 5, -1), out.reshape(3, 5, -1)
    assert torch.equal(flat_in.sort(-1).values, flat_out.sort(-1).values)


def test_1sa_swaps_two_channels_of_exactly_the_chosen_images():
    x = _batch(k=4, b=6)
    out = DataSwap("1SA", rate=1.0, images=1, seed=3).apply(x)
    changed = (out != x).flatten(2).any(-1)                 # (K, B)
    assert changed.sum(1).tolist() == [1, 1, 1, 1]
    for k, b in changed.nonzero().tolist():
        diff = [c for c in range(3) if not torch.equal(out[k, b, c], x[k, b, c])]
        assert len(diff) == 2
        c1, c2 = diff
        assert torch.equal(out[k, b, c1], x[k, b, c2]) and torch.equal(out[k, b, c2], x[k, b, c1])


def test_batch_channels_swaps_the_same_two_channels_in_every_image_of_a_member():
    x = _batch(k=2, b=4)
    out = DataSwap("batch-channels", seed=0).apply(x)
    for k in range(2):
        perm = [next(c2 for c2 in range(3) if torch.equal(out[k, 0, c], x[k, 0, c2]))
                for c in range(3)]
        assert sorted(perm) == [0, 1, 2] and perm != [0, 1, 2]
        assert torch.equal(out[k], x[k][:, perm])


def test_pixel_swaps_work_on_grey_and_flattened_batches():
    x = torch.rand(2, 5, 28 * 28)                              # an MLP's flattened input
    swap = DataSwap("pixels", pairs=3, image_shape=(1, 28, 28), seed=0)
    out = swap.apply(x)
    assert ((out != x).sum(-1) == 6).all()                     # 3 pairs of distinct pixels
    grey = torch.rand(2, 5, 28, 28)
    assert (DataSwap("pixel-pair", image_shape=(1, 28, 28)).apply(grey) != grey).any()
    with pytest.raises(ValueError, match="needs C >= 2"):  # refused when it is built
        DataSwap("1SA", image_shape=(1, 28, 28))
    with pytest.raises(ValueError, match="needs C >= 2"):  # or when it sees a grey batch
        DataSwap("batch-channels").apply(grey[:, :, None])  # (K, B, 1, H, W)


def test_rate_zero_changes_nothing_and_rate_is_per_member():
    x = _batch(k=200, b=2)
    assert torch.equal(DataSwap("1SA", rate=0.0).apply(x), x)
    hit = (DataSwap("1SA", rate=0.3, seed=4).apply(x) != x).flatten(1).any(1).double()
    # binomial(200, 0.3): mean 0.3 ± 0.032 (1 s.e.); 5 s.e. tolerance
    assert abs(float(hit.mean()) - 0.3) < 5 * (0.3 * 0.7 / 200) ** 0.5


def test_seeded_and_resumable():
    x = _batch()
    a, b = DataSwap("pixel-pair", seed=7), DataSwap("pixel-pair", seed=7)
    assert torch.equal(a.apply(x), b.apply(x))
    state = a.state_dict()
    first = a.apply(x)
    c = DataSwap("pixel-pair", seed=99)
    c.load_state_dict(state)
    assert torch.equal(c.apply(x), first)


@pytest.mark.parametrize("kwargs, match", [
    ({"kind": "rotate"}, "kind must be one of"),
    ({"rate": 1.5}, "rate must be"),
    ({"images": 0}, "images must be"),
    ({"image_shape": (3, 4)}, "image_shape must be"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DataSwap(**kwargs)


def test_bad_batches():
    with pytest.raises(ValueError, match="image_shape"):
        DataSwap("1SA").apply(torch.rand(3, 10))
    with pytest.raises(ValueError, match="exceeds the batch size"):
        DataSwap("1SA", images=9).apply(_batch(b=4))
    with pytest.raises(TypeError, match="tensor"):
        DataSwap("1SA").apply([1, 2])
