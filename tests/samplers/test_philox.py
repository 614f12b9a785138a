"""The counter-based noise source (``rng="philox"``): the generator against Random123's
published known-answer vectors, the compiled kernel against the torch definition, the
normals' law against exact moments, and the sampler-level contract (resume, errors,
fallback)."""

from __future__ import annotations

import math

import pytest
import torch
from harness import make_layers, run

import thermotrain as tt
from thermotrain.samplers import noise as noise_mod
from thermotrain.samplers import philox as P

# Random123 tests/kat_vectors: (counter words, key words, output words)
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]

needs_kernel = pytest.mark.skipif(not P.kernel_available(), reason="no C compiler here")


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_reference_philox_matches_known_answers(counter, key, expected):
    out = P.philox4x32([torch.tensor(c) for c in counter], [torch.tensor(k) for k in key])
    assert [int(x) for x in out] == list(expected)


@needs_kernel
@pytest.mark.parametrize("counter,key,expected", KAT)
def test_kernel_philox_matches_known_answers(counter, key, expected):
    block = counter[0] | counter[1] << 32
    draw = counter[2] | counter[3] << 32
    words = P.philox4x32_kernel(block, 1, key[0] | key[1] << 32, draw)
    assert words[0].tolist() == list(expected)


def reference_words(first: int, n: int, key: int, draw: int) -> torch.Tensor:
    """The definition's words of blocks ``first … first+n-1``, shape ``(n, 4)``."""
    j = torch.arange(first, first + n)
    ref = P.philox4x32(
        [j & 0xFFFFFFFF, j >> 32, torch.full_like(j, draw & 0xFFFFFFFF),
         torch.full_like(j, draw >> 32)],
        [torch.tensor(key & 0xFFFFFFFF), torch.tensor(key >> 32)])
    return torch.stack(ref, 1)


@needs_kernel
def test_kernel_words_equal_reference_words_over_a_carry():
    # blocks across a 2^32 boundary exercise the carry into the counter's second word
    first, n, key, draw = 2**32 - 5, 10, 2**40 + 17, 2**33 + 3
    assert torch.equal(P.philox4x32_kernel(first, n, key, draw),
                       reference_words(first, n, key, draw))


@needs_kernel
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-6), (torch.float64, 1e-13)])
@pytest.mark.parametrize("start,n", [(0, 1000), (3, 997), (1, 1), (6, 5), (2**32 - 2, 300)])
def test_kernel_normals_equal_the_definition(dtype, tol, start, n):
    keys = P.Keys([3, 2**40 + 7, 12345])
    out = torch.empty(3, n, dtype=dtype)
    P.philox_normal_(out, keys, 9, start)
    ref = P.philox_normal_reference(keys.seeds, 9, n, dtype, None, start)
    # same Philox words; log/sin differ by a few ulps between libmvec and torch
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_an_entry_does_not_depend_on_how_the_stream_is_cut(dtype):
    keys = P.Keys([11, 12])
    whole = P.philox_normal_(torch.empty(2, 103, dtype=dtype), keys, 4)
    for start, stop in [(0, 1), (1, 38), (37, 103), (50, 51)]:
        part = P.philox_normal_(torch.empty(1, stop - start, dtype=dtype), keys, 4, start,
                                slice(1, 2))
        assert torch.equal(part[0], whole[1, start:stop])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_normals_have_the_standard_normal_moments(dtype):
    n = 1 << 20
    z = P.philox_normal_(torch.empty(2, n // 2, dtype=dtype), P.Keys([0, 1]), 0).double()
    z = z.reshape(-1)
    # exact moments of N(0,1): E z = 0, E z² = 1, E z³ = 0, E z⁴ = 3, with standard errors
    # sqrt(Var(z^k)/n): Var z = 1, Var z² = 2, Var z³ = 15, Var z⁴ = 96
    for k, exact, var in [(1, 0.0, 1.0), (2, 1.0, 2.0), (3, 0.0, 15.0), (4, 3.0, 96.0)]:
        est = z.pow(k).mean().item()
        assert abs(est - exact) < 5 * math.sqrt(var / n), (k, est)
    # P(z > 2) = 0.02275; tail checks the Box-Muller radius
    tail = (z > 2).double().mean().item()
    p = 0.5 * math.erfc(2 / math.sqrt(2))
    assert abs(tail - p) < 5 * math.sqrt(p * (1 - p) / n)


def test_streams_of_different_seeds_draws_and_neighbours_are_uncorrelated():
    n = 1 << 16
    keys = P.Keys([0, 1, 2**32])
    a = P.philox_normal_(torch.empty(3, n, dtype=torch.float64), keys, 0)
    b = P.philox_normal_(torch.empty(3, n, dtype=torch.float64), keys, 1)
    pairs = [(a[0], a[1]), (a[0], a[2]), (a[0], b[0]), (a[0, :-1], a[0, 1:]),
             (a[0, :-2], a[0, 2:])]  # entries 4j+1/4j+2 share no uniform; 2j/2j+1 share r
    for x, y in pairs:
        corr = (x * y).mean().item()
        assert abs(corr) < 5 / math.sqrt(x.numel())


def test_sampler_state_is_the_draw_counter_and_resumes():
    layers = make_layers()
    opt = tt.BAOAB([p for lay in layers for p in lay], lr=0.05, temperature=1e-3, seed=2,
                   rng="philox")
    run(opt, layers, 4)
    state = opt.state_dict()["noise"]
    assert state == {"rng": "philox", "seeds": [2], "draws": 4}


def test_loading_a_state_of_the_other_rng_is_a_clear_error():
    layers = make_layers()
    flat = [p for lay in layers for p in lay]
    opt = tt.BAOAB(flat, lr=0.05, temperature=1e-3, seed=2, rng="torch")
    run(opt, layers, 1)
    other = tt.BAOAB(flat, lr=0.05, temperature=1e-3, seed=2, rng="philox")
    with pytest.raises(ValueError, match="rng='torch'.*rng='philox'"):
        other.load_state_dict(opt.state_dict())


def test_unknown_rng_is_rejected():
    with pytest.raises(ValueError, match="rng must be one of .*'mt'"):
        tt.BAOAB([torch.zeros(2, requires_grad=True)], rng="mt")
    with pytest.raises(ValueError, match="rng must be one of"):
        noise_mod.NoiseSource([0], rng="numpy")


def test_without_the_kernel_the_torch_definition_gives_the_same_run(monkeypatch):
    def traj():
        layers = make_layers(dtype=torch.float32)
        opt = tt.AdLaLa(layers, lr=0.1, seed=5, rng="philox")
        return run(opt, layers, 20)

    fast = traj()
    monkeypatch.setattr(P, "_LIB", None)  # as on a machine without a C compiler
    slow = traj()
    for a, b in zip(fast, slow, strict=True):
        # equal up to the ulps of log/sin, accumulated over 20 steps
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def _adlala_run(members=None, dtype=torch.float32, steps=15):
    layers = make_layers(members=members, dtype=dtype)
    kw = {"ensemble_dim": 0} if members else {}
    opt = tt.AdLaLa(layers, lr=0.1, seed=[4, 9, 2][: members or 1] if members else 4,
                    rng="philox", **kw)
    return run(opt, layers, steps)


@needs_kernel
def test_fused_steps_do_not_depend_on_the_thread_count():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _adlala_run(members=3)
        torch.set_num_threads(2)
        two = _adlala_run(members=3)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, two, strict=True):
        assert torch.equal(a, b)


@needs_kernel
@pytest.mark.parametrize("name", ["BAOAB", "SGLD", "AdLaLa", "LOL"])
def test_fused_kernel_reports_non_finite_steps(name):
    p = torch.ones(40, dtype=torch.float32, requires_grad=True)
    q = torch.ones(3, dtype=torch.float32, requires_grad=True)
    build = {
        "BAOAB": lambda: tt.BAOAB([p, q], lr=0.1, temperature=1e-4, seed=0, rng="philox"),
        "SGLD": lambda: tt.SGLD([p, q], lr=0.1, temperature=1e-4, seed=0, rng="philox"),
        "AdLaLa": lambda: tt.AdLaLa([[p], [q]], lr=0.1, seed=0, rng="philox"),
        "LOL": lambda: tt.LOL([[p], [q]], lr=0.1, seed=0, rng="philox"),
    }[name]
    opt = build()
    p.grad = torch.ones(40)
    q.grad = torch.ones(3)
    opt.step()  # finite
    p.grad[17] = float("nan")
    with pytest.raises(FloatingPointError, match="shape \\(40,\\)"):
        opt.step()


def test_a_screening_sum_that_overflows_is_not_reported():
    # every entry finite, but their sum overflows float32: no error
    p = torch.full((4,), 3e38, requires_grad=True)
    opt = tt.SGLD([p], lr=1e-30, temperature=0.0, seed=0, rng="philox")
    p.grad = torch.zeros(4)
    opt.step()
    assert torch.isfinite(p).all()
