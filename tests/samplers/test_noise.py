"""The large-model path of rng="torch": noise chunks drawn on worker threads. Forced here on a
small model by shrinking the chunk size."""

from __future__ import annotations

import pytest
import torch
from harness import make_layers, run

import thermotrain as tt
from thermotrain.samplers import noise as noise_mod


@pytest.fixture
def tiny_chunks(monkeypatch):
    monkeypatch.setattr(noise_mod, "CHUNK", 7)
    monkeypatch.setattr(noise_mod, "PARALLEL_THRESHOLD", 0)


def _flat(layers):
    return [p for lay in layers for p in lay]


BUILDERS = {
    "BAOAB": lambda L, **k: tt.BAOAB(_flat(L), lr=0.05, temperature=1e-3, **k),
    "SGLD": lambda L, **k: tt.SGLD(_flat(L), lr=0.05, temperature=1e-4, **k),
    "AdLaLa": lambda L, **k: tt.AdLaLa(L, lr=0.1, **k),
    "LOL": lambda L, **k: tt.LOL(L, lr=0.1, **k),
}


@pytest.mark.parametrize("rng", ["torch", "philox"])
@pytest.mark.parametrize("name", list(BUILDERS))
def test_worker_chunk_path_equals_reference(tiny_chunks, name, rng):
    la, lb, lc = make_layers(), make_layers(), make_layers()
    opt = BUILDERS[name](la, seed=3, rng=rng)
    # torch generators: drawn on the workers; philox: the fused kernel
    assert opt._noise.parallel(sum(p.numel() for p in _flat(la))) == (rng == "torch")
    chunked = run(opt, la, 30)
    reference = run(BUILDERS[name](lb, seed=3, foreach=False, rng=rng), lb, 30)
    again = run(BUILDERS[name](lc, seed=3, rng=rng), lc, 30)
    for a, b, c in zip(chunked, reference, again, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
        assert torch.equal(a, c)  # deterministic despite threads


def test_worker_chunk_path_reports_non_finite(tiny_chunks):
    p = torch.ones(40, dtype=torch.float64, requires_grad=True)
    opt = tt.BAOAB([p], lr=0.1, temperature=1e-4, seed=0, rng="torch")
    p.grad = torch.ones(40, dtype=torch.float64)
    p.grad[17] = float("inf")
    with pytest.raises(FloatingPointError, match="shape \\(40,\\)"):
        opt.step()


# ------------------------------------------------------------------ the streams
def _reference_stream(seed, sizes, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=g, dtype=dtype) for n in sizes]


def test_draws_equal_plain_generator_draws_even_when_the_size_changes():
    src = noise_mod.NoiseSource([5], rng="torch")
    sizes = [7, 7, 7, 11, 11, 7, 3]
    got = [src.draw(n, torch.float32).wait()[0].clone() for n in sizes]
    for a, b in zip(got, _reference_stream(5, sizes), strict=True):
        assert torch.equal(a, b)


def test_state_dict_resumes_the_stream():
    src = noise_mod.NoiseSource([9, 10], rng="torch")
    first = src.draw(6, torch.float64).wait().clone()
    state = src.state_dict()
    second = src.draw(6, torch.float64).wait().clone()
    other = noise_mod.NoiseSource([0, 0], rng="torch")
    other.load_state_dict(state)
    assert torch.equal(other.draw(6, torch.float64).wait(), second)
    for k, seed in enumerate([9, 10]):
        a, b = _reference_stream(seed, [6, 6], torch.float64)
        assert torch.equal(first[k], a) and torch.equal(second[k], b)


def test_state_dict_calls_do_not_perturb_a_run_with_a_layout_change():
    def traj(checkpoint_between: bool):
        a = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        b = torch.zeros(2, dtype=torch.float64, requires_grad=True)
        opt = tt.BAOAB([a], lr=0.1, temperature=1.0, seed=0)
        for n in range(6):
            if n == 3:
                opt.add_param_group({"params": [b]})
            if checkpoint_between:
                opt.state_dict()
            a.grad = a.detach().clone()
            b.grad = b.detach().clone()
            opt.step()
        return a.detach().clone(), b.detach().clone()

    assert all(torch.equal(x, y) for x, y in zip(traj(False), traj(True), strict=True))
