"""The Triton kernel of the Philox stream (the CUDA path), run on the CPU under Triton's
interpreter: its raw words against Random123's known answers and the torch definition bit for
bit, its normals against the definition to rounding, and a sampler run through it against the
run through the torch definition. Skipped where Triton is not installed (it comes with the
``dev`` extra)."""

from __future__ import annotations

import importlib
import os

import pytest
import torch
from harness import make_layers, run
from test_philox import KAT, reference_words

import thermotrain as tt
from thermotrain.samplers import philox as P

# Triton's interpreter runs its kernels on CPU tensors (tests/conftest.py sets it for the
# session: Triton may be imported before this module, by torch.optim)
os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")


@pytest.fixture
def triton_cpu(monkeypatch):
    """The Triton path, interpreted on the CPU (elsewhere in the tests CPU tensors never take
    it: ``available`` is true there only while this fixture is active)."""
    from thermotrain.samplers import _triton

    monkeypatch.setattr(_triton, "INTERPRET_ON_CPU", True)
    kernels = importlib.import_module("thermotrain.samplers._triton_kernels")
    if "Interpreted" not in type(kernels.normal_f32).__name__:
        pytest.skip("the Triton kernels were built for a GPU in this process")
    return _triton


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_triton_words_match_the_known_answers(triton_cpu, counter, key, expected):
    words = triton_cpu.raw_words(counter[0] | counter[1] << 32, 1, key[0] | key[1] << 32,
                                 counter[2] | counter[3] << 32, torch.device("cpu"))
    assert words.tolist() == list(expected)


def test_triton_words_equal_the_definition_over_a_carry(triton_cpu):
    # blocks across 2^32 carry into the counter's second word; > 2^32 keys and draws
    first, n, key, draw = 2**32 - 300, 600, 2**40 + 17, 2**33 + 3
    got = triton_cpu.raw_words(first, n, key, draw, torch.device("cpu"))
    assert torch.equal(got.reshape(n, 4), reference_words(first, n, key, draw))


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-6), (torch.float64, 1e-13),
                                       (torch.float16, 1e-3)])
@pytest.mark.parametrize("start,n", [(0, 1000), (3, 997), (1, 1), (6, 5), (2**32 - 2, 300)])
def test_triton_normals_equal_the_definition(triton_cpu, dtype, tol, start, n):
    keys = P.Keys([3, 2**40 + 7, 2**64 - 1])
    out = torch.full((3, n), float("nan"), dtype=dtype)
    triton_cpu.fill(out, keys.seeds, 2**32 + 9, start)
    ref = P.philox_normal_reference(keys.seeds, 2**32 + 9, n, dtype, None, start)
    # the same Philox words (above); log/sin differ by a few ulps between implementations
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol)


def test_triton_fills_rows_of_a_wider_buffer_and_strided_rows(triton_cpu):
    keys = P.Keys([11, 12])
    wide = torch.zeros(2, 50)
    triton_cpu.fill(wide[:, 5:35], keys.seeds, 4, 17)  # row stride 50, 30 entries each
    ref = P.philox_normal_reference(keys.seeds, 4, 30, torch.float32, None, 17)
    torch.testing.assert_close(wide[:, 5:35], ref, rtol=2e-6, atol=2e-6)
    assert not wide[:, :5].any() and not wide[:, 35:].any()  # nothing outside the view
    cols = torch.zeros(30, 2).t()  # unit stride across rows, not along them
    triton_cpu.fill(cols, keys.seeds, 4, 17)
    torch.testing.assert_close(cols, ref, rtol=2e-6, atol=2e-6)


def test_a_sampler_run_through_triton_equals_the_torch_definition(triton_cpu, monkeypatch):
    """philox_normal_ routes to Triton where the C kernel is not used (here: patched away;
    on a GPU: every CUDA tensor); the run equals the one through the torch definition up to
    the ulps of log/sin accumulated over the steps."""

    def traj():
        layers = make_layers(dtype=torch.float32)
        opt = tt.AdLaLa(layers, lr=0.1, seed=5, rng="philox")
        return run(opt, layers, 10)

    monkeypatch.setattr(P, "_LIB", None)
    calls = []
    fill = triton_cpu.fill
    monkeypatch.setattr(triton_cpu, "fill", lambda *a, **k: calls.append(1) or fill(*a, **k))
    through_triton = traj()
    assert calls, "the Triton kernel was not used"
    monkeypatch.setattr(triton_cpu, "available", lambda device: False)
    through_torch = traj()
    for a, b in zip(through_triton, through_torch, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
