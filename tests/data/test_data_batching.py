"""Minibatch policies (docs/science.md §4): with / without replacement, ensembles, resume,
gathering."""

from __future__ import annotations

import io

import pytest
import torch

from thermotrain.data import Minibatcher, take

POLICIES = [False, True]


def _draw(batcher: Minibatcher, steps: int) -> torch.Tensor:
    if steps == 0:
        return torch.empty(0, batcher.ensemble_size, batcher.batch_size, dtype=torch.int64)
    return torch.stack([next(batcher) for _ in range(steps)])  # (steps, K, B)


def test_without_replacement_matches_reference_permutations():
    n, b, seed = 23, 5, 17  # 4 batches per epoch, 3 points dropped each epoch
    batches = _draw(Minibatcher(n, b, seed=seed), 12)[:, 0]  # 3 epochs
    g = torch.Generator().manual_seed(seed)
    expected = []
    for _ in range(3):
        perm = torch.randperm(n, generator=g)
        expected += [perm[j * b : (j + 1) * b] for j in range(n // b)]
    assert torch.equal(batches, torch.stack(expected))


def test_without_replacement_epochs_partition_the_data():
    n, b = 60, 10
    batcher = Minibatcher(n, b, seeds=[3, 4, 5])
    assert batcher.steps_per_epoch == 6
    epochs = _draw(batcher, 18).reshape(3, 6, 3, b)  # (epoch, step, member, B)
    for e in range(3):
        for k in range(3):
            assert sorted(epochs[e, :, k].flatten().tolist()) == list(range(n))
    assert not torch.equal(epochs[0], epochs[1])  # a fresh permutation each epoch
    assert not torch.equal(epochs[0, :, 0], epochs[0, :, 1])  # members differ
    assert batcher.step == 18 and batcher.epoch == 3


def test_with_replacement_matches_reference_and_is_not_epoch_structured():
    n, b, seed = 20, 6, 9
    batches = _draw(Minibatcher(n, b, replacement=True, seed=seed), 30)[:, 0]
    g = torch.Generator().manual_seed(seed)
    expected = torch.stack([torch.randperm(n, generator=g)[:b] for _ in range(30)])
    assert torch.equal(batches, expected)
    assert all(len(set(row.tolist())) == b for row in batches)  # B distinct points per step
    # In 9 steps (3 "epochs" of n // b = 3 steps) some point is drawn more than 3 times,
    # impossible without replacement (at most once per epoch).
    counts = torch.bincount(batches[:9].flatten(), minlength=n)
    assert int(counts.max()) > 3


@pytest.mark.parametrize("replacement", POLICIES)
def test_ensemble_member_equals_single_run_with_its_seed(replacement):
    seeds = [11, 5, 2**40 + 3]
    n, b, steps = 37, 8, 25  # several epochs, n % b != 0
    ensemble = _draw(Minibatcher(n, b, replacement=replacement, seeds=seeds), steps)
    assert ensemble.shape == (steps, 3, b) and ensemble.dtype == torch.int64
    for k, s in enumerate(seeds):
        single = _draw(Minibatcher(n, b, replacement=replacement, seed=s), steps)[:, 0]
        assert torch.equal(ensemble[:, k], single)


@pytest.mark.parametrize("replacement", POLICIES)
def test_int_seed_with_ensemble_means_consecutive_seeds(replacement):
    a = _draw(Minibatcher(30, 7, replacement=replacement, seed=100, ensemble=4), 9)
    b = _draw(Minibatcher(30, 7, replacement=replacement, seeds=[100, 101, 102, 103]), 9)
    assert torch.equal(a, b)
    assert Minibatcher(30, 7, seed=100, ensemble=4).seeds == (100, 101, 102, 103)


@pytest.mark.parametrize("replacement", POLICIES)
@pytest.mark.parametrize("split_at", [0, 3, 4, 9])  # start, mid-epoch, epoch boundary, later
def test_resume_is_bit_identical(replacement, split_at):
    def make(seed: int) -> Minibatcher:
        return Minibatcher(19, 4, replacement=replacement, seeds=[seed, seed + 7])

    reference = make(1)
    _draw(reference, split_at)
    state = reference.state_dict()
    continued = _draw(reference, 15)

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    restored_state = torch.load(buffer, weights_only=True)
    resumed = make(999)  # different seeds: everything must come from the state
    resumed.load_state_dict(restored_state)
    assert resumed.step == split_at and resumed.seeds == (1, 8)
    assert torch.equal(_draw(resumed, 15), continued)


def test_state_dict_is_a_snapshot():
    batcher = Minibatcher(10, 3, seed=0)
    next(batcher)
    state = batcher.state_dict()
    saved = (state["permutation"].clone(), [s.clone() for s in state["generator_states"]])
    _draw(batcher, 10)  # crosses epochs: new permutations, advanced generators
    assert torch.equal(state["permutation"], saved[0]) and state["position"] == 1
    assert all(torch.equal(a, b) for a, b in zip(state["generator_states"], saved[1], strict=True))


def test_load_state_dict_rejects_mismatches():
    state = Minibatcher(10, 3, seeds=[0, 1]).state_dict()
    with pytest.raises(ValueError, match="batch_size=3 but this Minibatcher has batch_size=2"):
        Minibatcher(10, 2, seeds=[0, 1]).load_state_dict(state)
    with pytest.raises(ValueError, match="replacement=False but"):
        Minibatcher(10, 3, replacement=True, seeds=[0, 1]).load_state_dict(state)
    with pytest.raises(ValueError, match="for 2 members, this Minibatcher has K=3"):
        Minibatcher(10, 3, seed=0, ensemble=3).load_state_dict(state)
    with pytest.raises(ValueError, match=r"missing keys \['step'\]"):
        Minibatcher(10, 3, seeds=[0, 1]).load_state_dict(
            {k: v for k, v in state.items() if k != "step"}
        )
    bad = dict(state, position=2)  # mid-epoch without a permutation
    with pytest.raises(ValueError, match="position > 0 but no permutation"):
        Minibatcher(10, 3, seeds=[0, 1]).load_state_dict(bad)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(n=10, batch_size=11, seed=0), ValueError, "batch_size must be <= n = 10"),
        (dict(n=10, batch_size=0, seed=0), ValueError, "batch_size must be an int >= 1"),
        (dict(n=10.0, batch_size=2, seed=0), TypeError, "n must be an int"),
        (dict(n=10, batch_size=2), TypeError, "explicit seed"),
        (dict(n=10, batch_size=2, seed=0, seeds=[1]), ValueError, "not both"),
        (dict(n=10, batch_size=2, seeds=[1, 2], ensemble=3), ValueError, "ensemble=3 does not"),
        (dict(n=10, batch_size=2, seeds=[]), ValueError, "seeds must not be empty"),
        (dict(n=10, batch_size=2, seeds=[1, -2]), ValueError, r"seeds\[1\] must be an int >= 0"),
        (dict(n=10, batch_size=2, seeds="12"), TypeError, "sequence of ints"),
        (dict(n=10, batch_size=2, seed=2**63 - 1, ensemble=2), ValueError, "must be < 2\\*\\*63"),
        (dict(n=10, batch_size=2, seed=0, replacement=1), TypeError, "replacement must be"),
        (dict(n=10, batch_size=2, seed=0, ensemble=0), ValueError, "ensemble must be"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        Minibatcher(**kwargs)


def test_only_k_randperm_calls_per_epoch(monkeypatch):
    calls = []
    real = torch.randperm

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "randperm", counting)
    batcher = Minibatcher(60000, 100, seed=0, ensemble=8)
    _draw(batcher, 2 * batcher.steps_per_epoch)
    assert len(calls) == 2 * 8  # one permutation per member per epoch, not per step


def test_take_gathers_tensors_and_tuples():
    X = torch.arange(40.0).reshape(10, 2, 2)
    y = torch.arange(10) * 10
    idx = next(Minibatcher(10, 4, seeds=[0, 1, 2]))
    xb, yb = take((X, y), idx)
    assert xb.shape == (3, 4, 2, 2) and yb.shape == (3, 4)
    assert torch.equal(yb, idx * 10) and torch.equal(xb[1, 2], X[idx[1, 2]])
    assert isinstance(take([X, y], idx), list) and torch.equal(take(X, idx[0]), X[idx[0]])
    with pytest.raises(TypeError, match="idx must be an integer tensor"):
        take(X, idx.float())
    with pytest.raises(ValueError, match="share their first dimension"):
        take((X, y[:5]), idx)
    with pytest.raises(TypeError, match="tensor or a tuple/list"):
        take({"x": X}, idx)


def test_device_and_repr():
    batcher = Minibatcher(10, 5, seed=0, device="cpu")
    assert next(batcher).device == torch.device("cpu")
    assert "without replacement" in repr(batcher) and "K=1" in repr(batcher)
    assert iter(batcher) is batcher


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_indices_equal_cpu_indices():
    cpu = _draw(Minibatcher(50, 7, seeds=[1, 2]), 10)
    gpu = _draw(Minibatcher(50, 7, seeds=[1, 2], device="cuda"), 10)
    assert gpu.device.type == "cuda" and torch.equal(gpu.cpu(), cpu)
