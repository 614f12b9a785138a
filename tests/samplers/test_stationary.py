"""Statistical tests against exact answers (STYLE §7).

Many independent chains run in parallel; each chain's time average is one i.i.d. sample of the
estimator, so the Monte Carlo standard error (SE) is the spread over chains / √chains — no
autocorrelation model needed. Every assertion allows 5 SE (a false alarm has probability
< 1e-6 per entry) and, for schemes without an exact discrete answer, nothing else: their step
size is chosen so that the known O(h²) bias is far below the SE.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.linalg import solve_discrete_lyapunov
from scipy.special import gamma as gamma_fn

import thermotrain as tt

ANGLE = math.pi / 6
ROT = np.array([[math.cos(ANGLE), -math.sin(ANGLE)], [math.sin(ANGLE), math.cos(ANGLE)]])
A = ROT @ np.diag([1.0, 4.0]) @ ROT.T  # anisotropic, correlated
A_T = torch.tensor(A)
TAU = 0.5


# --------------------------------------------------------------------- exact answers
def exact_linear_covariance(schemes: list[tuple], h: float) -> np.ndarray:
    """Exact stationary covariance of θ for a linear scheme on U = ½θᵀAθ, coordinate i run by
    ``schemes[i] = (name, friction, temperature)``, one step of SPEC §2 (steady state, kick h),
    written from SPEC §1/§3 as a linear map z' = M z + N R on z = (θ, q)."""
    d = len(schemes)
    size = 2 * d
    M = np.eye(size)
    N = np.zeros((size, d))

    def apply(op_m, op_n=None):
        nonlocal M, N
        M = op_m @ M
        N = op_m @ N
        if op_n is not None:
            N = N + op_n

    # kick (all momentum coordinates; gradient at θ_n); SGLD coordinates do θ -= h Aθ
    K = np.eye(size)
    for i, (name, _, _) in enumerate(schemes):
        if name == "sgld":
            K[i, :d] -= h * A[i]
        else:
            K[d + i, :d] -= h * A[i]
    apply(K)
    # first drift
    D = np.eye(size)
    for i, (name, _, _) in enumerate(schemes):
        if name != "sgld":
            D[i, d + i] += h / 2
    apply(D)
    # O / resample / SGLD noise
    O = np.eye(size)
    ON = np.zeros((size, d))
    for i, (name, friction, temperature) in enumerate(schemes):
        if name == "langevin":
            O[d + i, d + i] = math.exp(-friction * h)
            ON[d + i, i] = math.sqrt((1 - math.exp(-2 * friction * h)) * temperature)
        elif name == "overdamped":
            O[d + i, d + i] = 0.0
            ON[d + i, i] = math.sqrt(temperature)
        else:  # SGLD keeps no momentum
            O[d + i, d + i] = 0.0
            ON[i, i] = math.sqrt(2 * temperature * h)
    apply(O, ON)
    apply(D)
    cov = solve_discrete_lyapunov(M, N @ N.T)
    return cov[:d, :d]


# --------------------------------------------------------------------- simulation
def sample_covariance(build, h: float, chains: int, burn: int, steps: int, seed: int = 0):
    """Run ``chains`` chains on U = ½θᵀAθ with θ = (x, y) held as two (chains, 1) tensors
    (two "layers"); return per-entry (mean, SE) of Cov(θ) as 2×2 numpy arrays."""
    x = torch.zeros(chains, 1, dtype=torch.float64, requires_grad=True)
    y = torch.zeros(chains, 1, dtype=torch.float64, requires_grad=True)
    opt = build([[x], [y]], seed)
    acc = torch.zeros(chains, 2, 2, dtype=torch.float64)
    for n in range(burn + steps):
        theta = torch.cat([x.detach(), y.detach()], dim=1)
        grad = theta @ A_T
        x.grad, y.grad = grad[:, :1].contiguous(), grad[:, 1:].contiguous()
        opt.step()
        if n >= burn:
            theta = torch.cat([x.detach(), y.detach()], dim=1)
            acc += theta[:, :, None] * theta[:, None, :]
    per_chain = (acc / steps).numpy()
    return per_chain.mean(0), per_chain.std(0, ddof=1) / math.sqrt(chains)


def _flat(layers):
    return [p for layer in layers for p in layer]


LINEAR_CASES = [
    ("BAOAB", lambda L, s: tt.BAOAB(_flat(L), lr=0.3, friction=1.0, temperature=TAU, seed=s),
     [("langevin", 1.0, TAU)] * 2, 0.3),
    ("OverdampedLangevin",
     lambda L, s: tt.OverdampedLangevin(_flat(L), lr=0.4, temperature=TAU, seed=s),
     [("overdamped", 0.0, TAU)] * 2, 0.4),
    ("SGLD", lambda L, s: tt.SGLD(_flat(L), lr=0.1, temperature=TAU, seed=s),
     [("sgld", 0.0, TAU)] * 2, 0.1),
    ("LaLa", lambda L, s: tt.LaLa(L, lr=0.3, friction=[0.5, 3.0], temperature=TAU, seed=s),
     [("langevin", 0.5, TAU), ("langevin", 3.0, TAU)], 0.3),
    ("LOL", lambda L, s: tt.LOL(L, lr=0.3, friction=1.0, temperature=TAU, seed=s),
     [("langevin", 1.0, TAU), ("overdamped", 0.0, TAU)], 0.3),
    # the counter-based noise source must sample the same laws
    ("BAOAB-philox", lambda L, s: tt.BAOAB(_flat(L), lr=0.3, friction=1.0, temperature=TAU,
                                           seed=s, rng="philox"),
     [("langevin", 1.0, TAU)] * 2, 0.3),
    ("SGLD-philox", lambda L, s: tt.SGLD(_flat(L), lr=0.1, temperature=TAU, seed=s,
                                         rng="philox"),
     [("sgld", 0.0, TAU)] * 2, 0.1),
]


@pytest.mark.parametrize("name,build,schemes,h", LINEAR_CASES, ids=[c[0] for c in LINEAR_CASES])
def test_linear_schemes_match_exact_discrete_covariance(name, build, schemes, h):
    exact = exact_linear_covariance(schemes, h)
    mean, se = sample_covariance(build, h, chains=2000, burn=300, steps=2500)
    assert np.all(np.abs(mean - exact) < 5 * se), (mean, exact, se)
    if name.startswith("SGLD"):
        # ULA's exact covariance τ[A(I − hA/2)]⁻¹ (SPEC §4), visibly different from τA⁻¹
        ula = TAU * np.linalg.inv(A @ (np.eye(2) - h * A / 2))
        np.testing.assert_allclose(exact, ula, rtol=1e-10)
        assert np.any(np.abs(mean - TAU * np.linalg.inv(A)) > 10 * se)
    else:
        # BAOAB-type splittings are exact for Gaussians: the answer is τA⁻¹ itself
        np.testing.assert_allclose(exact, TAU * np.linalg.inv(A), rtol=1e-8, atol=1e-12)


CHAINS = 2000
# ξ is one scalar per tensor, here shared by all chains of a (CHAINS, 1) tensor: its equation
# dξ = ε(‖p‖² − Nτ)dt sums over N = CHAINS entries, so ε is scaled by 1/N.
ADAPTIVE_CASES = [
    ("AdaptiveLangevin",
     lambda L, s: tt.AdaptiveLangevin(_flat(L), lr=0.05, temperature=TAU, noise=1.0,
                                      coupling=1.0 / CHAINS, seed=s)),
    ("AdLaLa",
     lambda L, s: tt.AdLaLa(L, lr=0.05, friction=1.0, temperature=TAU, noise=1.0,
                            coupling=1.0 / CHAINS, seed=s)),
]


@pytest.mark.parametrize("name,build", ADAPTIVE_CASES, ids=[c[0] for c in ADAPTIVE_CASES])
def test_adaptive_schemes_sample_the_gibbs_covariance(name, build):
    mean, se = sample_covariance(build, 0.05, chains=CHAINS, burn=400, steps=4000)
    assert np.all(np.abs(mean - TAU * np.linalg.inv(A)) < 5 * se), (mean, se)


def test_baoab_configurational_error_is_second_order():
    """U(θ) = θ⁴/4 at τ = 1/4: exact ⟨θ²⟩ = √τ·2Γ(3/4)/Γ(1/4). BAOAB's bias must scale like h²
    (log-log slope in [1.4, 2.6]; first order would give 1)."""
    tau = 0.25
    exact = math.sqrt(tau) * 2 * gamma_fn(0.75) / gamma_fn(0.25)
    chains = 40000
    hs = [0.6, 0.42, 0.3]
    errors, ses = [], []
    for h in hs:
        x = torch.zeros(chains, dtype=torch.float64, requires_grad=True)
        opt = tt.BAOAB([x], lr=h, friction=1.0, temperature=tau, seed=3)
        burn, steps = int(10 / h), int(300 / h)
        acc = torch.zeros(chains, dtype=torch.float64)
        for n in range(burn + steps):
            x.grad = x.detach() ** 3
            opt.step()
            if n >= burn:
                acc += x.detach() ** 2
        est = acc / steps
        errors.append(est.mean().item() - exact)
        ses.append(est.std().item() / math.sqrt(chains))
    errors, ses = np.array(errors), np.array(ses)
    assert np.all(np.abs(errors) > 3 * ses), (errors, ses)  # the bias is resolved
    assert np.all(np.sign(errors) == np.sign(errors[0]))
    slope = np.polyfit(np.log(hs), np.log(np.abs(errors)), 1)[0]
    assert 1.4 < slope < 2.6, (slope, errors)


def test_adaptive_langevin_thermalizes_momenta_and_xi():
    """With clean gradients AdL's invariant measure has ⟨‖p‖²⟩/N = τ and ξ centred at
    σ_A²/(2τ) (fluctuation–dissipation). One ξ per member: 64 members on the ensemble axis."""
    members, n, tau, sigma, h = 64, 40, 0.1, 0.3, 0.05
    stiffness = torch.linspace(0.5, 3.0, n, dtype=torch.float64)
    theta = torch.zeros(members, n, dtype=torch.float64, requires_grad=True)
    opt = tt.AdaptiveLangevin([theta], lr=h, temperature=tau, noise=sigma, coupling=2.0,
                              xi_init=2.0, seed=0, ensemble_dim=0)
    burn, steps = 2000, 6000
    xi_sum = torch.zeros(members, dtype=torch.float64)
    kin_sum = torch.zeros(members, dtype=torch.float64)
    for k in range(burn + steps):
        theta.grad = stiffness * theta.detach()
        opt.step()
        if k >= burn:
            xi_sum += opt.thermostats()[0][0].reshape(-1)
            theta.grad = stiffness * theta.detach()
            p = opt.momenta()[0][0] - (h / 2) * theta.grad  # true (full-step) momenta
            kin_sum += (p * p).sum(1) / n
    xi_mean, kin_mean = xi_sum / steps, kin_sum / steps
    xi_target = sigma**2 / (2 * tau)
    xi_se = xi_mean.std().item() / math.sqrt(members)
    kin_se = kin_mean.std().item() / math.sqrt(members)
    assert abs(xi_mean.mean().item() - xi_target) < 5 * xi_se + 0.01 * xi_target
    assert abs(kin_mean.mean().item() - tau) < 5 * kin_se + 0.005 * tau
    assert abs(xi_mean.mean().item() - 2.0) > 20 * xi_se  # ξ moved from its start and settled


# --------------------------------------------------------------------- splittings (SPEC §1)
def exact_splitting_covariance(cycle: str, fractions: list[float], friction: float, h: float,
                               boundary_drift: float = 0.0):
    """Exact stationary covariance of θ for the one-gradient cycle of a splitting on
    U = ½θᵀAθ, written from SPEC §1 as the linear map z' = M z + N R on z = (θ, p), one
    matrix per sub-step: A_t, B_t, O_t (a fresh R per O). ``boundary_drift`` reports
    θ − t·p instead of θ (ABOBA's boundary positions)."""
    d = 2
    M, N = np.eye(2 * d), np.zeros((2 * d, 0))
    for letter, f in zip(cycle, fractions, strict=True):
        t = f * h
        S, add = np.eye(2 * d), None
        if letter == "A":
            S[:d, d:] = t * np.eye(d)
        elif letter == "B":
            S[d:, :d] = -t * A
        elif letter == "O":
            c = math.exp(-friction * t)
            S[d:, d:] = c * np.eye(d)
            add = np.zeros((2 * d, d))
            add[d:, :] = math.sqrt((1 - c * c) * TAU) * np.eye(d)
        M, N = S @ M, S @ N
        if add is not None:
            N = np.hstack([N, add])
    cov = solve_discrete_lyapunov(M, N @ N.T)
    P = np.hstack([np.eye(d), -boundary_drift * np.eye(d)])
    return P @ cov @ P.T


H_SPLIT = 0.6  # h²λ_max/4 = 0.36: far from h → 0, the answers differ visibly
SPLITTING_CASES = [
    # word, one-gradient cycle (SPEC §1), fractions of h, the closed form of SPEC §1
    ("BAOAB", "BAOA", [1.0, 0.5, 1.0, 0.5], "exact"),
    ("BAOA", "BAOA", [1.0, 0.5, 1.0, 0.5], "exact"),
    ("OBABO", "BOBA", [0.5, 1.0, 0.5, 1.0], "obabo"),
    ("ABOBA", "BOBA", [0.5, 1.0, 0.5, 1.0], "obabo"),  # the parameters: mid-drift
]


@pytest.mark.parametrize("word,cycle,fractions,form", SPLITTING_CASES,
                         ids=[c[0] for c in SPLITTING_CASES])
def test_splittings_sample_their_exact_gaussian_covariance(word, cycle, fractions, form):
    exact = exact_splitting_covariance(cycle, fractions, 1.0, H_SPLIT)
    closed = TAU * np.linalg.inv(A) if form == "exact" else TAU * np.linalg.inv(
        A @ (np.eye(2) - H_SPLIT**2 * A / 4))
    np.testing.assert_allclose(exact, closed, rtol=1e-8, atol=1e-12)

    def build(L, s):
        return tt.Langevin(_flat(L), lr=H_SPLIT, friction=1.0, temperature=TAU, splitting=word,
                           seed=s)
    mean, se = sample_covariance(build, H_SPLIT, chains=2000, burn=300, steps=2500)
    assert np.all(np.abs(mean - exact) < 5 * se), (mean, exact, se)
    if form == "obabo":  # resolved: not τA⁻¹
        assert np.any(np.abs(mean - TAU * np.linalg.inv(A)) > 10 * se)


def test_aboba_boundary_positions_have_the_exact_covariance():
    """ABOBA's boundary positions θ − (h/2)p (SPEC §1): τA⁻¹ at any stable h."""
    exact = exact_splitting_covariance("BOBA", [0.5, 1.0, 0.5, 1.0], 1.0, H_SPLIT,
                                       boundary_drift=H_SPLIT / 2)
    np.testing.assert_allclose(exact, TAU * np.linalg.inv(A), rtol=1e-8, atol=1e-12)
    chains, burn, steps = 2000, 300, 2500
    x = torch.zeros(chains, 1, dtype=torch.float64, requires_grad=True)
    y = torch.zeros(chains, 1, dtype=torch.float64, requires_grad=True)
    opt = tt.Langevin([x, y], lr=H_SPLIT, friction=1.0, temperature=TAU, splitting="ABOBA",
                      seed=1)
    acc = torch.zeros(chains, 2, 2, dtype=torch.float64)
    for n in range(burn + steps):
        grad = torch.cat([x.detach(), y.detach()], dim=1) @ A_T
        x.grad, y.grad = grad[:, :1].contiguous(), grad[:, 1:].contiguous()
        opt.step()
        if n >= burn:
            bx, by = opt.boundary_positions()[0]
            theta = torch.cat([bx, by], dim=1)
            acc += theta[:, :, None] * theta[:, None, :]
    per_chain = (acc / steps).numpy()
    mean, se = per_chain.mean(0), per_chain.std(0, ddof=1) / math.sqrt(chains)
    assert np.all(np.abs(mean - exact) < 5 * se), (mean, exact, se)
