"""The configurational temperature's Hutchinson Laplacian against the exact trace of the
Hessian (torch.autograd.functional.hessian on a small net), and the hook's place in a run:
the trajectory is the unmonitored one bit for bit, and a batch rewritten by a later hook is
measured on the data the loop used (SPEC §11, docs/thermo.md)."""

from __future__ import annotations

import math

import pytest
import torch
from _thermo_helpers import ManualState as _State

import thermotrain as tt
from thermotrain import thermo
from thermotrain.models import MLP, ensemble_loss, fused
from thermotrain.training import Batch, Hook, train

needs_kernel = pytest.mark.skipif(fused._library() is None, reason="no C compiler here")


def _exact(model, params, x, y, idx, members):
    """Per member k and group g: tr of member k's Hessian block over group g's coordinates,
    and the variance of the single-probe Hutchinson estimate Σ_{i∈g} v_i (Hv)_i for
    Rademacher v: Σ over pairs i < j of (coefficient of v_i v_j)², i.e. (2H_ij)² with both in
    g and H_ij² with one in g (v_i v_j of distinct pairs are uncorrelated, variance 1)."""
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]
    flat0 = torch.cat([p.detach().reshape(-1) for p in params])

    def total(flat):
        tensors = [c.view(s) for c, s in zip(flat.split(sizes), shapes, strict=True)]
        names = [n for n, _ in model.named_parameters()]
        out = torch.func.functional_call(model, dict(zip(names, tensors, strict=True)),
                                         (x[idx],))
        return ensemble_loss(out, y[idx]).sum()

    hess = torch.autograd.functional.hessian(total, flat0)
    # coordinate labels: member and group of every flat coordinate (params on axis 0 = K)
    member = torch.cat([torch.arange(members).repeat_interleave(n // members) for n in sizes])
    group = torch.cat([torch.full((n,), 0 if i < 2 else 1) for i, n in enumerate(sizes)])
    trace = torch.zeros(members, 2, dtype=hess.dtype)
    var = torch.zeros(members, 2, dtype=hess.dtype)
    for k in range(members):
        for g in range(2):
            ing = (member == k) & (group == g)
            block = hess[ing][:, member == k]  # rows in g, columns: member k's coordinates
            inner = hess[ing][:, ing]
            trace[k, g] = inner.diagonal().sum()
            off_inner = inner - torch.diag(inner.diagonal())
            outer = block[:, ~ing[member == k]]
            # pairs inside g counted once each: ½Σ_{i≠j}(2H_ij)² = 2Σ_{i≠j}H_ij²
            var[k, g] = 2 * off_inner.square().sum() + outer.square().sum()
    return trace, var


@needs_kernel
@pytest.mark.parametrize("laplacian", ["hvp", "fd", "forward"])
def test_hutchinson_laplacian_matches_the_exact_trace(one_thread, laplacian):
    """The hook's Laplacian on the step's batch, with 1500 probes, per member (3) and group
    (2), against the exact trace: the Monte Carlo error is the exact single-probe sd
    (from the Hessian, _exact) over √1500, tolerance 4 sd per entry (6 entries: family-wise
    false-alarm rate < 4e-4). The finite differences add O(ε²) = 1e-6-relative bias (the
    O(ε) term of the forward difference has zero mean over Rademacher v: all odd moments
    vanish), far below the tolerance, and double precision makes rounding negligible."""
    probes = 1500
    torch.manual_seed(1)
    x, y = torch.randn(120, 2, dtype=torch.float64), torch.randint(0, 2, (120,))
    model = MLP([2, 6, 1], ensemble=3, activation="tanh", seed=2).double()
    layers = list(model.parameters())
    opt = tt.PartitionedLangevin([{"params": layers[:2]}, {"params": layers[2:]}], lr=0.1,
                                 ensemble_dim=0, seed=0)
    state = _State(model, opt, x, y, 3)
    idx = torch.randint(0, 120, (3, 20))
    hook = thermo.ConfigurationalTemperature(laplacian=laplacian, probes=probes, seed=3)
    hook.on_start(state)
    hook.before_gradient(state, Batch(idx))
    fused.gradient_fn(model, x, y)(idx)
    hook.after_gradient(state, torch.zeros(3))
    est = torch.stack([state.logged[f"configurational_temperature/laplacian/group{g}"]
                       for g in range(2)], 1)
    trace, var = _exact(model, layers, x, y, idx, 3)
    sd = (var / probes).sqrt()
    assert bool((sd > 0).all()) and bool((sd < 0.5 * trace.abs()).all())  # a real test
    z = (est - trace) / sd
    assert float(z.abs().max()) < 4.0, (est, trace, sd)
    g2 = torch.stack([state.logged[f"configurational_temperature/grad_norm2/group{g}"]
                      for g in range(2)], 1)
    ref = torch.autograd.grad(ensemble_loss(model(x[idx]), y[idx]).sum(), layers)
    g2_ref = torch.stack([sum(r.square().reshape(3, -1).sum(1) for r in ref[:2]),
                          sum(r.square().reshape(3, -1).sum(1) for r in ref[2:])], 1)
    torch.testing.assert_close(g2, g2_ref, rtol=1e-10, atol=0)


def test_probes_are_fair_independent_signs_and_replay():
    """The probes (random bytes looked up as 8 signs each, drawn 16 records at a time) hold
    ±1 only; over 400 draws (25 banks) of 3 × 33 coordinates the mean of v is 0 and of
    v_i v_j (adjacent coordinates, which share a byte) 0, each within 4/√n (n = 39600);
    setting the count back replays the same probes (resume, re-measures)."""
    x, y = torch.randn(50, 2, dtype=torch.float64), torch.randint(0, 2, (50,))
    model = MLP([2, 8, 1], ensemble=3, activation="tanh", seed=0).double()
    opt = tt.BAOAB(model.parameters(), lr=0.1, ensemble_dim=0, seed=0)
    hook = thermo.ConfigurationalTemperature(laplacian="hvp", seed=1)
    state = _State(model, opt, x, y, 3)
    hook._layout(state, hook._groups(state))
    lay = hook._lay
    assert lay.slots == 16
    draws = []
    for _ in range(400):
        lay.next()
        draws.append(lay.probe.clone())
    v = torch.stack(draws).reshape(-1)
    assert bool((v.abs() == 1).all())
    n = v.numel()
    assert abs(float(v.mean())) < 4 / math.sqrt(n)
    assert abs(float((v[:-1] * v[1:]).mean())) < 4 / math.sqrt(n - 1)
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[16])
    for r in (3, 15, 16, 399):
        lay.drawn = r
        lay.next()
        assert torch.equal(lay.probe, draws[r])


class _Rewrite(Hook):
    """A data swap after the monitor: the loop's gradient is taken on shifted inputs."""

    name = "rewrite"

    def before_gradient(self, state, batch):
        batch.materialize(state.x_train, state.y_train)
        batch.x = batch.x + 0.5
        return batch


class _GradNorm(Hook):
    """Records ‖∇L_B‖² per member of the loop's own gradient (one group)."""

    name = "gradnorm"

    def __init__(self):
        self.values = {}

    def after_gradient(self, state, losses):
        self.values[state.step] = sum(p.grad.square().reshape(state.members, -1).sum(1)
                                      for p in state.model.parameters())


def _run(hooks, steps=30, activation="relu", dtype=torch.float32):
    from thermotrain.data import Minibatcher, spirals

    x, y = spirals(80, turns=1, seed=3)
    x = x.to(dtype)
    model = MLP([2, 8, 1], ensemble=3, activation=activation, seed=[0, 1, 2]).to(dtype)
    opt = tt.BAOAB(model.parameters(), lr=0.05, temperature=1e-3, ensemble_dim=0,
                   seed=[10, 11, 12])
    batcher = Minibatcher(80, 10, seeds=[20, 21, 22])
    state = train(model, opt, batcher, steps=steps, x_train=x, y_train=y, hooks=hooks,
                  handle_signals=False)
    return model, state


@needs_kernel
def test_monitored_run_is_bit_identical_to_an_unmonitored_one(one_thread):
    """The finite differences perturb θ before the loop's gradient and restore it bit for
    bit; the loop's gradient then overwrites .grad: positions after 30 steps are those of a
    run without hooks, exactly, and each monitor logged 3 × 3 rows per record."""
    conf = thermo.ConfigurationalTemperature
    hooks = [thermo.KineticTemperature(every=5), conf(every=5, laplacian="forward"),
             conf(every=3, laplacian="fd", name="conf_fd"),
             conf(every=7, laplacian="fd", data="full", name="conf_full")]
    model_a, state = _run(hooks)
    model_b, _ = _run([])
    for a, b in zip(model_a.parameters(), model_b.parameters(), strict=True):
        assert torch.equal(a, b)
    rows = [r for r in state.rows if r[5].startswith("configurational_temperature")]
    assert len(rows) == 6 * 3 * 3  # steps 0, 5, ..., 25; three metrics; three members
    assert {r[3] for r in rows} == {0, 5, 10, 15, 20, 25}
    assert all(math.isfinite(r[6]) for r in state.rows)


@needs_kernel
@pytest.mark.parametrize("probes", [1, 3])
def test_a_batch_rewritten_by_a_later_hook_is_measured_on_the_rewritten_data(one_thread,
                                                                             probes):
    """The monitor differences in before_gradient; when a later hook then rewrites the batch
    the loop's gradient is of other data, so the record is measured again in after_gradient
    on the rewritten batch, with the same probes: ‖∇L_B‖² equals the loop's own gradient
    norm, and the central-difference Laplacian equals a double-backward monitor's placed
    after the rewrite (same seed, same probes) to O(ε²) (rtol 1e-3, as in
    test_finite_difference_laplacian_matches_hvp_and_restores_the_state); without the
    re-measure it would difference gradients of two data sets (off by ~1e2×)."""
    probe = _GradNorm()
    conf = thermo.ConfigurationalTemperature
    hooks = [conf(every=4, laplacian="fd", seed=9, probes=probes), _Rewrite(),
             conf(every=4, laplacian="hvp", seed=9, probes=probes, name="after_rewrite"),
             probe]
    # smooth and float64: the HVP is exact, the central difference O(ε²)
    _, state = _run(hooks, steps=12, activation="tanh", dtype=torch.float64)

    def logged(step, metric):
        return torch.tensor([r[6] for r in state.rows if r[3] == step and r[5] == metric],
                            dtype=torch.float64)

    for step in (0, 4, 8):
        g2 = logged(step, "configurational_temperature/grad_norm2/group0")
        torch.testing.assert_close(g2, probe.values[step], rtol=1e-10, atol=0)
        lap = logged(step, "configurational_temperature/laplacian/group0")
        ref = logged(step, "after_rewrite/laplacian/group0")
        assert len(lap) == 3
        # the O(ε²) error scales with the curvature along the probes, not with their
        # (cancelling) sum: tolerance 1e-3 of the largest value of the record
        torch.testing.assert_close(lap, ref, rtol=1e-3, atol=1e-3 * float(ref.abs().max()))


@needs_kernel
def test_monitored_run_resumes_bit_for_bit_mid_bank(one_thread):
    """A checkpoint at step 15 falls inside a probe bank (records every 3 steps, 16 records
    per bank): resuming from it gives the rows and positions of the uninterrupted run."""
    import copy

    from thermotrain.data import Minibatcher, spirals

    x, y = spirals(80, turns=1, seed=3)

    def run(resume=None, saved=None):
        model = MLP([2, 8, 1], ensemble=3, seed=[0, 1, 2])
        opt = tt.BAOAB(model.parameters(), lr=0.05, temperature=1e-3, ensemble_dim=0,
                       seed=[10, 11, 12])
        batcher = Minibatcher(80, 10, seeds=[20, 21, 22])
        conf = thermo.ConfigurationalTemperature
        hooks = [conf(every=3, laplacian="forward", start=6),
                 conf(every=3, laplacian="fd", probes=2, name="conf_fd")]
        state = train(model, opt, batcher, steps=30, x_train=x, y_train=y, hooks=hooks,
                      checkpoint=(lambda c: saved.append(copy.deepcopy(c))) if saved is not None
                      else None,
                      checkpoint_every=15, resume_from=resume, handle_signals=False)
        return model, state

    saved: list = []
    model_a, state_a = run(saved=saved)
    mid = next(c for c in saved if c["step"] == 15 and not c["done"])
    model_b, state_b = run(resume=mid)
    assert state_b.rows == state_a.rows
    for a, b in zip(model_a.parameters(), model_b.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("laplacian", ["hvp", "fd"])
def test_ensemble_axis_other_than_the_first(one_thread, laplacian):
    """Parameters stacking the K members on axis 1 (group 0) and axis 0 (group 1): on
    L_k = ½ Σ c a² the Laplacian of every probe is exactly Σ c per member and group (the
    Hessian is diagonal, vᵀHv = tr H for ±1 signs; the central difference is exact on a
    quadratic up to rounding) and ‖∇L‖² = Σ (c a)²."""
    k = 4
    gen = torch.Generator().manual_seed(0)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Parameter(torch.randn(3, k, 2, generator=gen, dtype=torch.float64))
            self.b = torch.nn.Parameter(torch.randn(k, 5, generator=gen, dtype=torch.float64))

    model = Model()
    ca = torch.arange(1.0, 7.0, dtype=torch.float64).view(3, 1, 2)
    cb = torch.linspace(0.5, 2.5, 5, dtype=torch.float64)

    def loss(m):
        return 0.5 * ((ca * m.a.square()).sum((0, 2)) + (cb * m.b.square()).sum(1))

    opt = tt.PartitionedLangevin([{"params": [model.a], "ensemble_dim": 1},
                                  {"params": [model.b], "ensemble_dim": 0}], lr=0.1, seed=0)
    state = _State(model, opt, torch.zeros(4, 1), torch.zeros(4), k)
    hook = thermo.ConfigurationalTemperature(loss, laplacian=laplacian, probes=3)
    hook.on_start(state)
    (g2a, la), (g2b, lb) = hook.measure(state)
    torch.testing.assert_close(la, torch.full((k,), float(ca.sum()), dtype=torch.float64))
    torch.testing.assert_close(lb, torch.full((k,), float(cb.sum()), dtype=torch.float64))
    torch.testing.assert_close(g2a, (ca * model.a.detach()).square().sum((0, 2)))
    torch.testing.assert_close(g2b, (cb * model.b.detach()).square().sum(1))


class _ReadRows(Hook):
    """Reads the loop's rows after every step (as a TensorBoard logger does): every deferred
    record is finished at once instead of with its bank."""

    name = "read_rows"

    def after_step(self, state):
        len(state.rows)


class _NoDeferral:
    """The loop state without log_deferred: the monitor finishes every record at once."""

    def __init__(self, state):
        object.__setattr__(self, "_state", state)

    def __getattr__(self, name):
        if name == "log_deferred":
            raise AttributeError(name)
        return getattr(self._state, name)


class _AtOnce(thermo.ConfigurationalTemperature):
    def before_gradient(self, state, batch):
        return super().before_gradient(_NoDeferral(state), batch)

    def after_gradient(self, state, losses):
        super().after_gradient(_NoDeferral(state), losses)


@needs_kernel
@pytest.mark.parametrize("laplacian", ["forward", "fd"])
def test_deferred_records_equal_records_finished_at_once(one_thread, laplacian):
    """Records finished in bursts per probe bank (16 records) give the same rows, bit for
    bit, as records finished at their own step after being read (every step, as a
    TensorBoard logger reads them) and as records never deferred, and the same running
    temperatures; 40 records cross two bank boundaries, start=30 switches the ratio on
    mid-bank."""
    def run(hook_type, hooks):
        conf = hook_type(every=2, laplacian=laplacian, start=30)
        _, state = _run([conf, *hooks], steps=80)
        return state.rows, conf.temperatures()

    rows_a, temps_a = run(thermo.ConfigurationalTemperature, [])
    assert len(rows_a) == (40 * 2 + 25 * 1) * 3  # 40 records; the ratio from step 30 on
    for rows_b, temps_b in (run(thermo.ConfigurationalTemperature, [_ReadRows()]),
                            run(_AtOnce, [])):
        assert rows_a == rows_b
        for a, b in zip(temps_a, temps_b, strict=True):
            assert torch.equal(a, b)


class _TorchPath(thermo.ConfigurationalTemperature):
    """The monitor without the fused kernel: θ perturbed by torch, gradients by autograd."""

    def on_start(self, state):
        super().on_start(state)
        self._grad_fn = self._direct = self._record_fn = None


@needs_kernel
@pytest.mark.parametrize("laplacian", ["forward", "fd"])
class _FreezeFirstLayer(Hook):
    """Freezes the first layer at the start: the optimizer's groups then hold the second
    layer only (an ungrouped, unshifted tensor pair for the kernel)."""

    name = "freeze"

    def on_start(self, state):
        for p in state.model.layers[0].parameters():
            p.requires_grad_(False)


@needs_kernel
@pytest.mark.parametrize("laplacian", ["forward", "fd"])
@pytest.mark.parametrize("frozen", [False, True])
def test_kernel_records_equal_the_torch_path_with_the_same_probes(one_thread, laplacian,
                                                                  frozen):
    """A record is one call of the fused kernel (fused.fd_laplacian_sums: the probe read from
    its random bytes, θ ± εv made in the kernel); the same monitor on the torch path (θ
    perturbed and restored, autograd gradients, the float probes) logs the same values to
    rounding: float64, tanh (smooth), ε = 1e-3, so both are the same finite difference and
    differ by rounding only, ~1e-16/ε² relative to the terms (rtol 1e-7). Also with the
    first layer frozen (not in the optimizer's groups: neither shifted nor summed)."""
    rows = []
    for hook_type in (thermo.ConfigurationalTemperature, _TorchPath):
        conf = hook_type(every=3, laplacian=laplacian, start=6)
        hooks = [_FreezeFirstLayer(), conf] if frozen else [conf]
        _, state = _run(hooks, steps=40, activation="tanh", dtype=torch.float64)
        rows.append([r for r in state.rows if r[5].startswith("configurational_temperature")])
    kernel, reference = rows
    assert len(kernel) == len(reference) == (14 * 2 + 12) * 3
    assert [r[:6] for r in kernel] == [r[:6] for r in reference]
    a = torch.tensor([r[6] for r in kernel], dtype=torch.float64)
    b = torch.tensor([r[6] for r in reference], dtype=torch.float64)
    torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9 * float(b.abs().max()))
