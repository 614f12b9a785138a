"""The C kernels built for another CPU level: the generic (no AVX-512) code paths must give
what the native build and the torch definitions give. This machine builds with
-march=native; CI or users may have CPUs without AVX-512."""

from __future__ import annotations

import ctypes
import platform

import pytest
import torch

from thermotrain import _native
from thermotrain.models import MLP
from thermotrain.models import fused as fused_mlp
from thermotrain.samplers import philox as P

pytestmark = pytest.mark.skipif(
    _native.compiler() is None or platform.machine() != "x86_64" or not P.kernel_available(),
    reason="needs a C compiler on x86-64")

GENERIC = [f if f != "-march=native" else "-march=x86-64-v2" for f in _native.FLAGS]


def _build(source, tmp_path, declare):
    target = tmp_path / f"{source.stem}-generic.so"
    _native.compile_kernel(source, target, _native.compiler(), GENERIC)
    lib = ctypes.CDLL(str(target))
    declare(lib)
    return lib


def test_generic_philox_build_matches_native_and_definition(tmp_path, monkeypatch):
    generic = _build(P._SOURCE, tmp_path, P._declare)
    keys = P.Keys([5, 2**40 + 3, 77])
    native = {}
    for dtype in (torch.float32, torch.float64):
        for n in (1000, 37):  # long rows, and short rows made many rows at a time
            out = torch.empty(3, n, dtype=dtype)
            native[dtype, n] = P.philox_normal_(out, keys, 11, 3).clone()
    monkeypatch.setattr(P, "_LIB", generic)
    for (dtype, n), want in native.items():
        got = P.philox_normal_(torch.empty(3, n, dtype=dtype), keys, 11, 3)
        ref = P.philox_normal_reference(keys.seeds, 11, n, dtype, None, 3)
        tol = 2e-6 if dtype == torch.float32 else 1e-13
        torch.testing.assert_close(got, ref, rtol=tol, atol=tol)
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)


def test_generic_mlp_build_matches_autograd(tmp_path, monkeypatch):
    generic = _build(fused_mlp._SOURCE, tmp_path, fused_mlp._declare)
    monkeypatch.setattr(fused_mlp, "_LIB", generic)
    monkeypatch.setattr(fused_mlp, "_PREPARED", {})
    model = MLP([2, 30, 1], ensemble=3, seed=2)
    x = torch.randn(20, 2, generator=torch.Generator().manual_seed(0))
    y = (x[:, 1] > 0).long()
    idx = torch.randint(0, 20, (3, 7), generator=torch.Generator().manual_seed(1))
    got = fused_mlp.loss_and_grad(model, x, y, idx)
    grads = [p.grad.clone() for p in model.parameters()]
    from thermotrain.models import ensemble_loss

    model.zero_grad(set_to_none=True)
    loss = ensemble_loss(model(x[idx]), y[idx])
    loss.sum().backward()
    torch.testing.assert_close(got, loss.detach(), rtol=1e-5, atol=1e-6)
    for g, p in zip(grads, model.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad, rtol=1e-5, atol=1e-6)


def test_a_failing_compiler_falls_back_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", "false")  # exits 1 on anything
    monkeypatch.setenv("THERMOTRAIN_CACHE", str(tmp_path))
    monkeypatch.setattr(_native, "_LOADED", {})
    with pytest.warns(RuntimeWarning, match="could not build the C kernel for the test kernel"):
        assert _native.load(P._SOURCE, "the test kernel", P._declare) is None
    assert not list(tmp_path.rglob("*.so"))  # nothing half-written


def test_kernels_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("THERMOTRAIN_NO_KERNEL", "1")
    monkeypatch.setattr(_native, "_LOADED", {})
    assert _native.load(P._SOURCE, "the test kernel", P._declare) is None


def test_prune_deletes_only_stale_builds_of_the_same_kernel(tmp_path):
    import os
    import time

    now = time.time()
    stale, fresh, other = (tmp_path / "philox-aaaa.so", tmp_path / "philox-bbbb.so",
                           tmp_path / "mlp-cccc.so")
    for f in (stale, fresh, other):
        f.write_bytes(b"")
    old = now - (_native.STALE_DAYS + 1) * 86400
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    target = tmp_path / "philox-dddd.so"
    target.write_bytes(b"")
    _native.prune(target)
    assert not stale.exists()
    assert fresh.exists() and other.exists() and target.exists()
