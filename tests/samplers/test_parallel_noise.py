"""The large-model path: noise chunks drawn on worker threads, elementwise schemes applied
chunk by chunk on the workers. Forced here on a small model by shrinking the chunk size."""

from __future__ import annotations

import pytest
import torch
from harness import make_layers, run

import thermotrain as tt
from thermotrain.samplers import noise as noise_mod


@pytest.fixture
def tiny_chunks(monkeypatch):
    monkeypatch.setattr(noise_mod, "CHUNK", 4)
    monkeypatch.setattr(noise_mod, "PARALLEL_THRESHOLD", 0)
    import thermotrain.samplers.optimizer as opt_mod

    monkeypatch.setattr(opt_mod, "CHUNK", 4)


def _flat(layers):
    return [p for lay in layers for p in lay]


BUILDERS = {
    "BAOAB": lambda L, **k: tt.BAOAB(_flat(L), lr=0.05, temperature=1e-3, **k),
    "SGLD": lambda L, **k: tt.SGLD(_flat(L), lr=0.05, temperature=1e-4, **k),
    "AdLaLa": lambda L, **k: tt.AdLaLa(L, lr=0.1, **k),
    "LOL": lambda L, **k: tt.LOL(L, lr=0.1, **k),
}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_worker_chunk_path_equals_reference(tiny_chunks, name):
    la, lb, lc = make_layers(), make_layers(), make_layers()
    opt = BUILDERS[name](la, seed=3)
    assert opt._noise.parallel(sum(p.numel() for p in _flat(la)))
    chunked = run(opt, la, 30)
    reference = run(BUILDERS[name](lb, seed=3, foreach=False), lb, 30)
    again = run(BUILDERS[name](lc, seed=3), lc, 30)
    for a, b, c in zip(chunked, reference, again, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
        assert torch.equal(a, c)  # deterministic despite threads


def test_worker_chunk_path_reports_non_finite(tiny_chunks):
    p = torch.ones(40, dtype=torch.float64, requires_grad=True)
    opt = tt.BAOAB([p], lr=0.1, temperature=1e-4, seed=0)
    p.grad = torch.ones(40, dtype=torch.float64)
    p.grad[17] = float("inf")
    with pytest.raises(FloatingPointError, match="shape \\(40,\\)"):
        opt.step()
