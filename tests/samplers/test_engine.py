"""The open engine (issue 8, samplers half): per-member hyperparameters, splittings as words,
one dispatch point recorded in the state, and the reliability fixes."""

from __future__ import annotations

import inspect
import io

import pytest
import torch
from harness import loss, make_layers, run

import thermotrain as tt
from thermotrain.samplers import fused, permute_optimizer_state
from thermotrain.samplers.philox import kernel_available
from thermotrain.samplers.splittings import compile_word

needs_kernel = pytest.mark.skipif(not kernel_available(), reason="no C compiler")


def _flat(layers):
    return [p for lay in layers for p in lay]


# ---------------------------------------------------------------- per-member hyperparameters
PATHS = [("philox", True), ("philox", False), ("torch", True), ("torch", False)]


def _per_member_builders():
    lr = torch.tensor([0.03, 0.05, 0.08], dtype=torch.float64)
    friction = torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64)
    temperature = torch.tensor([1e-4, 1e-3, 5e-3], dtype=torch.float64)
    noise = torch.tensor([0.01, 0.03, 0.0], dtype=torch.float64)
    coupling = torch.tensor([0.05, 0.2, 0.1], dtype=torch.float64)
    xi_init = torch.tensor([0.1, 0.5, 0.0], dtype=torch.float64)
    return {
        "BAOAB": lambda L, k=None, **kw: tt.BAOAB(
            _flat(L), lr=_pick(lr, k), friction=_pick(friction, k),
            temperature=_pick(temperature, k), **kw),
        "OBABO": lambda L, k=None, **kw: tt.Langevin(
            _flat(L), lr=_pick(lr, k), friction=_pick(friction, k),
            temperature=_pick(temperature, k), splitting="OBABO", **kw),
        "SGLD": lambda L, k=None, **kw: tt.SGLD(
            _flat(L), lr=_pick(lr, k), temperature=_pick(temperature, k), **kw),
        # a schedule returning one value per member, and xi_init per member
        "AdLaLa": lambda L, k=None, **kw: tt.AdLaLa(
            L, lr=(lambda n: _pick(lr, k) * (1.0 if n < 5 else 0.5)),
            temperature=(_pick(temperature, k), 1e-4), noise=_pick(noise, k),
            coupling=_pick(coupling, k), xi_init=_pick(xi_init, k), **kw),
    }


def _pick(values: torch.Tensor, k):
    return values if k is None else float(values[k])


def _elementwise_run(opt, layers, steps):
    """Gradients of an elementwise loss, so that a member's gradient is bit-identical to the
    gradient of the separate run (an ensemble forward pass rounds differently)."""
    for _ in range(steps):
        for p in _flat(layers):
            p.grad = 2.0 * p.detach() + 0.3 * torch.sin(3.0 * p.detach())
        opt.step()
    return [p.detach().clone() for p in _flat(layers)]


@pytest.mark.parametrize("rng,foreach", PATHS, ids=[f"{r}-{'fast' if f else 'reference'}"
                                                    for r, f in PATHS])
@pytest.mark.parametrize("name", ["BAOAB", "OBABO", "SGLD", "AdLaLa"])
def test_member_k_equals_a_separate_run_with_its_scalar_values(name, rng, foreach):
    build = _per_member_builders()[name]
    K, seeds = 3, [21, 22, 23]
    ens = make_layers(seed=100, members=K)
    opt = build(ens, ensemble_dim=0, seed=seeds, rng=rng, foreach=foreach)
    stacked = _elementwise_run(opt, ens, 20)
    fast = rng == "philox" and foreach and kernel_available()
    assert set(opt.implementations) == {"fused" if fast else
                                        ("foreach" if foreach else "reference")}
    for k in range(K):
        single = make_layers(seed=100 + k)
        alone = _elementwise_run(build(single, k, seed=seeds[k], rng=rng, foreach=foreach),
                                 single, 20)
        for s, a in zip(stacked, alone, strict=True):
            if fast:
                # the kernel receives the same double coefficient per member: bit for bit
                assert torch.equal(s[k], a)
            else:
                # broadcast tensor coefficients vs python-float alphas: rounding only
                # (float64, 20 steps of O(1) values)
                torch.testing.assert_close(s[k], a, rtol=1e-12, atol=1e-14)
    # the members really differ in their hyperparameters' effect
    assert not torch.allclose(stacked[0][0], stacked[0][1])


def test_per_member_values_are_validated():
    w = torch.zeros(3, 4, requires_grad=True)
    with pytest.raises(ValueError, match=r"temperature.*shape \(3,\).*got shape \(2,\)"):
        tt.BAOAB([w], temperature=torch.tensor([1.0, 2.0]), ensemble_dim=0)
    with pytest.raises(ValueError, match=r"member 1.*friction must be >= 0, got -1.0"):
        tt.BAOAB([w], friction=torch.tensor([1.0, -1.0, 2.0]), ensemble_dim=0)
    with pytest.raises(ValueError, match="no ensemble axis declared"):
        tt.BAOAB([w], temperature=torch.tensor([1.0, 2.0, 3.0]))
    opt = tt.BAOAB([w], lr=lambda n: torch.tensor([0.1, float("nan"), 0.1]), ensemble_dim=0)
    w.grad = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="schedule at step 0.*member 1.*lr must be finite"):
        opt.step()


# ---------------------------------------------------------------- splittings
def test_words_compile_to_one_gradient_cycles():
    baoab = compile_word("BAOAB")
    assert [c for c, _ in baoab.cycle] == list("BBAOA") and baoab.mode == "forward"
    assert [c for c, _ in baoab.closing] == ["B"]
    aboba = compile_word("ABOBA")
    assert [c for c, _ in aboba.cycle] == list("BOBAA") and aboba.mode == "backward"
    assert float(aboba.trailing_drift) == 0.5
    obabo = compile_word("OBABO")
    assert [c for c, _ in obabo.cycle] == list("BOOBA") and [c for c, _ in obabo.closing] == \
        ["B", "O"]
    assert tt.samplers.SCHEMES["langevin-BAOA"].splitting.closing == ()
    with pytest.raises(ValueError, match="more than one gradient per step"):
        compile_word("ABABA")
    with pytest.raises(ValueError, match="splitting must be one of BAOAB, ABOBA, OBABO, BAOA"):
        tt.Langevin([torch.zeros(2, requires_grad=True)], splitting="BAOABO")
    with pytest.raises(ValueError, match="more than one gradient"):
        tt.Langevin([torch.zeros(2, requires_grad=True)], splitting="ABABA")
    with pytest.raises(ValueError, match="unknown sub-step 'X'"):
        compile_word("BAXAB")


def test_baoa_is_baoab_with_a_full_first_kick():
    """B_h A O A after a first step equals BAOAB's merged kicks: same positions once BAOAB's
    opening half kick is matched (here: the same run from step 1 on, zero first gradient)."""
    la, lb = make_layers(), make_layers()
    a = tt.Langevin(_flat(la), lr=0.05, temperature=1e-3, splitting="BAOA", seed=3)
    b = tt.BAOAB(_flat(lb), lr=0.05, temperature=1e-3, seed=3)
    for opt in (a, b):  # a zero first gradient: the first kick size does not matter
        for p in opt.param_groups[0]["params"]:
            p.grad = torch.zeros_like(p)
        opt.step()
    ra, rb = run(a, la, 10, start=1), run(b, lb, 10, start=1)
    for x, y in zip(ra, rb, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-13, atol=1e-15)


def test_aboba_boundary_positions_and_obabo_finalize():
    h = 0.1
    w = torch.ones(4, dtype=torch.float64, requires_grad=True)
    opt = tt.Langevin([w], lr=h, friction=1.0, temperature=1e-2, splitting="ABOBA", seed=0)
    for _ in range(5):
        w.grad = w.detach().clone()
        opt.step()
    (b,), = opt.boundary_positions()
    torch.testing.assert_close(b, w.detach() - h / 2 * opt.momenta()[0][0])
    # OBABO: finalize applies the closing B_{h/2} O_{h/2}; positions stay put and the run
    # continues with the opening sub-steps only
    v = torch.ones(4, dtype=torch.float64, requires_grad=True)
    opt = tt.Langevin([v], lr=h, friction=1.0, temperature=0.0, splitting="OBABO", seed=0)
    for _ in range(5):
        v.grad = v.detach().clone()
        opt.step()
    v.grad = v.detach().clone()
    before, m = v.detach().clone(), opt.momenta()[0][0].clone()
    opt.finalize()
    c = torch.exp(torch.tensor(-h / 2, dtype=torch.float64))
    torch.testing.assert_close(opt.momenta()[0][0], c * (m - h / 2 * v.grad))  # τ = 0
    assert torch.equal(v.detach(), before)


# ---------------------------------------------------------------- implementation in the state
def test_state_dict_records_the_implementation():
    for kw, expected in ((dict(), "fused" if kernel_available() else "foreach"),
                         (dict(rng="torch"), "foreach"), (dict(foreach=False), "reference")):
        layers = make_layers()
        opt = tt.BAOAB(_flat(layers), seed=0, **kw)
        run(opt, layers, 2)
        assert opt.state_dict()["implementation"] == [expected]


def test_presets_registry_has_explicit_signatures():
    assert set(tt.samplers.PRESETS) == {"baoab", "langevin", "sgld", "overdamped", "adaptive",
                                        "adlala", "lol", "lala"}
    for name, cls in tt.samplers.PRESETS.items():
        assert issubclass(cls, tt.PartitionedLangevin), name
        sig = inspect.signature(cls.__init__)
        named = [p for p in sig.parameters.values()
                 if p.kind is p.POSITIONAL_OR_KEYWORD][2:]  # self, params/model
        assert named and all(p.default is not p.empty for p in named), name
    assert "splitting" in inspect.signature(tt.Langevin.__init__).parameters


# ---------------------------------------------------------------- reliability (regressions)
@pytest.mark.parametrize("rng", ["philox", "torch"])
def test_a_momentum_of_another_shape_is_a_clear_error(rng):
    """Old code: with rng='philox' the kernel read/wrote out of bounds (heap corruption)."""
    w = torch.zeros(5, 3, requires_grad=True)
    opt = tt.BAOAB([w], seed=0, rng=rng)
    w.grad = torch.ones(5, 3)
    opt.step()
    other_w = torch.zeros(4, 3, requires_grad=True)
    other = tt.BAOAB([other_w], seed=0, rng=rng)
    other_w.grad = torch.ones(4, 3)
    other.step()
    with pytest.raises(ValueError, match=r"momentum of param 0 of group 0 \(shape \(5, 3\)\)"
                                         r" has shape \(4, 3\)"):
        opt.load_state_dict(other.state_dict())
    # a resized parameter: the step refuses instead of touching memory beyond the momentum
    w.data = torch.zeros(50, 3)
    w.grad = torch.ones(50, 3)
    with pytest.raises(ValueError, match="momentum of .* has shape"):
        opt.step()


@needs_kernel
def test_the_kernel_wrapper_validates_every_tensor():
    from thermotrain.samplers.reference import GroupView
    from thermotrain.samplers.splittings import get_scheme, program

    scheme = get_scheme("langevin")
    hp = {"lr": 0.1, "friction": 1.0, "temperature": 1.0}
    ops = program(scheme, None, hp)
    p, g, m = torch.zeros(10), torch.zeros(10), torch.zeros(3)
    view = GroupView([p], [g], [m], [], [10], [None], ["w"])
    opt = tt.BAOAB([torch.zeros(1, requires_grad=True)], seed=0)
    with pytest.raises(ValueError, match=r"w: its momentum has shape \(3,\)"):
        fused.run(view, ops, fused.pack_program(ops, 1), [[0]], opt._noise._keys, 0, 1, None,
                  False, {})
    view = GroupView([p], [g.double()], [torch.zeros(10)], [], [10], [None], ["w"])
    with pytest.raises(ValueError, match="w: its gradient is torch.float64"):
        fused.run(view, ops, fused.pack_program(ops, 1), [[0]], opt._noise._keys, 0, 1, None,
                  False, {})


@pytest.mark.parametrize("rng,foreach", PATHS, ids=[f"{r}-{'fast' if f else 'reference'}"
                                                    for r, f in PATHS])
def test_raise_leaves_the_state_as_before_and_training_continues(rng, foreach):
    layers = make_layers()
    opt = tt.AdLaLa(layers, lr=0.1, seed=0, rng=rng, foreach=foreach)
    run(opt, layers, 3)
    params = [p.detach().clone() for p in _flat(layers)]
    state = {k: v.clone() for p in _flat(layers) for k, v in opt.state[p].items()
             if isinstance(v, torch.Tensor)}
    noise = dict(opt.state_dict()["noise"])
    opt.zero_grad()
    loss(layers, 3).backward()
    _flat(layers)[3].grad[0] = float("nan")  # the second layer's bias
    with pytest.raises(FloatingPointError, match=r"non-finite gradient in param 1 of group 1"
                                                 r".*nothing was changed"):
        opt.step()
    for p, before in zip(_flat(layers), params, strict=True):
        assert torch.equal(p.detach(), before)
    after = {k: v for p in _flat(layers) for k, v in opt.state[p].items()
             if isinstance(v, torch.Tensor)}
    assert all(torch.equal(after[k], v) for k, v in state.items())
    assert opt.state_dict()["noise"].keys() == noise.keys()
    assert bool(opt.nonfinite_members().all())
    run(opt, layers, 3, start=4)  # the batch skipped, training continues
    assert all(torch.isfinite(p).all() for p in _flat(layers))
    assert not opt.nonfinite_members().any()


def test_loading_the_state_of_another_scheme_is_an_error():
    layers = make_layers()
    baoab = tt.BAOAB(_flat(layers), seed=0)
    run(baoab, layers, 2)
    sgld = tt.SGLD(_flat(make_layers()), seed=0)
    with pytest.raises(ValueError, match="scheme 'sgld' but the state was saved by scheme "
                                         "'langevin'"):
        sgld.load_state_dict(baoab.state_dict())
    assert sgld.param_groups[0]["scheme"] == "sgld"


@pytest.mark.parametrize("rng,foreach", PATHS, ids=[f"{r}-{'fast' if f else 'reference'}"
                                                    for r, f in PATHS])
def test_mask_freezes_diverged_members_and_the_rest_run_on(rng, foreach):
    K, seeds = 3, [5, 6, 7]
    ens, ref = make_layers(members=K), make_layers(members=K)
    opt = tt.AdLaLa(ens, lr=0.1, seed=seeds, ensemble_dim=0, rng=rng, foreach=foreach,
                    nan_policy="mask")
    clean = tt.AdLaLa(ref, lr=0.1, seed=seeds, ensemble_dim=0, rng=rng, foreach=foreach)
    run(opt, ens, 4)
    run(clean, ref, 4)
    frozen_at = [p.detach()[1].clone() for p in _flat(ens)]
    momenta_at = [m[1].clone() for g in opt.momenta() for m in g]
    for n in range(4, 10):
        for o, L in ((opt, ens), (clean, ref)):
            o.zero_grad()
            loss(L, n).backward()
        if n == 4:
            _flat(ens)[0].grad[1, 2, 0] = float("inf")  # member 1 diverges
        opt.step()
        clean.step()
        if n == 4:
            assert opt.nonfinite_members().tolist() == [False, True, False]
    assert opt.frozen_members.tolist() == [False, True, False]
    for p, q, before in zip(_flat(ens), _flat(ref), frozen_at, strict=True):
        assert torch.equal(p.detach()[1], before)  # frozen at its pre-step values
        for k in (0, 2):  # the others are unaffected
            assert torch.equal(p.detach()[k], q.detach()[k])
    for m, before in zip([m for g in opt.momenta() for m in g], momenta_at, strict=True):
        assert torch.equal(m[1], before)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    again = tt.AdLaLa(make_layers(members=K), seed=0, ensemble_dim=0, rng=rng,
                      nan_policy="mask")
    again.load_state_dict(torch.load(buffer, weights_only=False))
    assert again.frozen_members.tolist() == [False, True, False]


# ---------------------------------------------------------------- permutations
def test_permute_state_permutes_momenta_and_per_member_thermostats():
    K = 3
    ens = make_layers(members=K)
    opt = tt.AdaptiveLangevin(_flat(ens), lr=0.05, temperature=1e-3, ensemble_dim=0, seed=0,
                              xi_init=torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64))
    run(opt, ens, 3)
    w = ens[0][0]
    m, xi = opt.state[w]["momentum"].clone(), opt.state[w]["xi"].clone()
    assert not torch.equal(xi[0], xi[1])
    perm = torch.tensor([2, 0, 1])
    opt.permute_state(w, perm, dim=0)  # the ensemble axis: members exchange configurations
    assert torch.equal(opt.state[w]["momentum"], m[perm])
    assert torch.equal(opt.state[w]["xi"], xi[perm])
    rows = torch.tensor([4, 3, 2, 1, 0])
    opt.permute_state(w, rows, dim=1)  # hidden units: ξ (one per tensor) stays
    assert torch.equal(opt.state[w]["momentum"], m[perm][:, rows])
    assert torch.equal(opt.state[w]["xi"], xi[perm])


@pytest.mark.parametrize("make", [
    lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
    lambda ps: torch.optim.Adam(ps, lr=0.1, amsgrad=True),
    lambda ps: tt.BAOAB(ps, seed=0),
], ids=["SGD", "Adam", "BAOAB"])
def test_permute_optimizer_state_treats_every_optimizer_alike(make):
    w = torch.randn(4, 3, requires_grad=True)
    opt = make([w])
    for _ in range(2):
        w.grad = torch.randn(4, 3)
        opt.step()
    before = {k: v.clone() for k, v in opt.state[w].items()
              if isinstance(v, torch.Tensor) and v.shape == w.shape}
    assert before  # momentum_buffer / exp_avg, exp_avg_sq, max_exp_avg_sq / momentum
    perm = torch.tensor([3, 1, 0, 2])
    permute_optimizer_state(opt, w, perm, 0)
    for k, v in before.items():
        assert torch.equal(opt.state[w][k], v[perm]), k
    with pytest.raises(ValueError, match="not in this"):
        permute_optimizer_state(opt, torch.zeros(4, 3), perm, 0)


@needs_kernel
def test_the_kernel_itself_refuses_rows_beyond_a_tensor():
    """Below the Python checks: tt_program compares every job's rows with the sizes it is
    given and returns an error code instead of touching memory."""
    import ctypes

    from thermotrain.samplers.philox import _array, _library
    from thermotrain.samplers.reference import GroupView
    from thermotrain.samplers.splittings import get_scheme, program

    lib = _library()
    ops = program(get_scheme("langevin"), None, {"lr": 0.1, "friction": 1.0,
                                                 "temperature": 1.0})
    p, g, m = torch.zeros(2, 10), torch.zeros(2, 10), torch.zeros(2, 10)
    count, th, mp, gp, xi, rows, n, stride, numel = fused._packed_tensors(
        GroupView([p], [g], [m], [], [10], [0], ["w"]), 2)
    numel = _array(ctypes.c_int64, [20, 19, 20])  # the momentum one entry short
    keys = tt.BAOAB([torch.zeros(2, 1, requires_grad=True)], ensemble_dim=0, seed=0)._noise._keys
    nops, codes, draws, coef = fused.pack_program(ops, 2)
    rowok = (ctypes.c_int32 * 2)()
    status = lib.tt_program(count, th, mp, gp, xi, rows, n, stride, numel, nops, codes, draws,
                            coef, 1, _array(ctypes.c_uint64, [0]), keys.address(0), 0, None,
                            0, None, None, None, None, rowok, 0)
    assert status == -2  # job 0 does not fit
    assert torch.equal(m, torch.zeros(2, 10)) and torch.equal(p, torch.zeros(2, 10))


@needs_kernel
@pytest.mark.parametrize("make", [
    lambda m: tt.BAOAB(m.parameters(), lr=0.05, temperature=0.1, seed=3),
    lambda m: tt.AdLaLa(m, lr=0.05, seed=3),
], ids=["BAOAB", "AdLaLa"])
def test_fresh_gradient_tensors_each_step_equal_reused_ones(make):
    """The usual loop (``zero_grad()`` then ``backward()``) gives new gradient tensors every
    step; the cached kernel arguments must take their addresses each time (a stale address
    would read freed memory): bit for bit the same as gradients copied into reused tensors.
    A gradient the kernel cannot take (not contiguous) sends that step to the torch path."""
    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
    b = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
    b.load_state_dict(a.state_dict())
    oa, ob = make(a), make(b)
    g = torch.Generator().manual_seed(1)
    for p in b.parameters():
        p.grad = torch.zeros_like(p)
    for step in range(6):
        grads = [torch.randn(p.shape, generator=g) for p in a.parameters()]
        for p, gr in zip(a.parameters(), grads, strict=True):
            # step 3: a transposed copy, same values, not contiguous
            p.grad = gr.t().contiguous().t() if step == 3 and gr.dim() == 2 else gr.clone()
        for p, gr in zip(b.parameters(), grads, strict=True):
            p.grad.copy_(gr)
        oa.step()
        ob.step()
        expected = "foreach" if step == 3 else "fused"
        assert oa.state_dict()["implementation"][0] == expected
        for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
            if step < 3:
                assert torch.equal(pa, pb), step
            else:  # the torch path agrees to rounding
                torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)
