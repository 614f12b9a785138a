r"""The Gaussian non-equilibrium steady state of SGD near a minimum (docs/science.md §5,
``docs/thermo.md``).

Linearized at a minimum (Hessian H), with-replacement SGD is the linear recursion
:math:`\delta w_{n+1} = (I - hH)\delta w_n + \xi_n`, :math:`\mathrm{Cov}(\xi_n) = 2D`
(:func:`~thermotrain.thermo.minibatch_diffusion`). To first order in h its stationary
covariance solves the Lyapunov equation :math:`H\Sigma + \Sigma H = \tfrac2h D`. When D is not
proportional to H the state is out of equilibrium: it carries a probability current with
velocity :math:`v(w) = -C\Sigma^{-1}(w - \mu)`, circulation :math:`C = \tfrac h2(H\Sigma -
\Sigma H)`, and produces entropy :math:`\sigma_n = v(w_n)^\top D^{-1}(w_{n+1} - w_n)` per step,
on average :math:`\langle\sigma\rangle = -\mathrm{tr}(CD^{-1}C\Sigma^{-1})`.

Everything is float64 numpy/scipy (the numbers are ~1e-10).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.linalg
import torch
from torch import Tensor

__all__ = ["GaussianNESS", "areal_velocity", "minimize_newton"]


def _matrix(name: str, value: object) -> np.ndarray:
    if isinstance(value, Tensor):
        value = value.detach().cpu().to(torch.float64).numpy()
    a = np.asarray(value, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise ValueError(f"{name} must be a square (P, P) matrix, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} has non-finite entries")
    return a


def _array(value: object) -> np.ndarray:
    if isinstance(value, Tensor):
        value = value.detach().cpu().to(torch.float64).numpy()
    return np.asarray(value, dtype=np.float64)


class GaussianNESS:
    r"""The linearized stationary state of SGD at a minimum: Σ, C, v, σ (docs/science.md §5).

    Args:
        hessian: :math:`H` ``(P, P)``, symmetric positive definite (the loss's Hessian at the
            minimum).
        diffusion: :math:`D` ``(P, P)``, symmetric positive definite (per-step minibatch
            diffusion, :func:`~thermotrain.thermo.minibatch_diffusion`).
        lr: the step size :math:`h > 0`.
        mean: :math:`\mu` ``(P,)``, the centre of the cloud for :meth:`current_velocity` and
            :meth:`entropy_production` (default: zero, i.e. pass displacements; the authors
            use the trajectory's empirical mean).

    Attributes:
        covariance: :math:`\Sigma`, solving :math:`H\Sigma + \Sigma H = \tfrac2h D`
            (``scipy.linalg.solve_continuous_lyapunov``).
        circulation: :math:`C = \tfrac h2(H\Sigma - \Sigma H)` (antisymmetric; zero iff the
            state is an equilibrium).
        mean_entropy_production: :math:`\langle\sigma\rangle = -\mathrm{tr}(CD^{-1}C\Sigma^{-1})`
            per step (≥ 0).

    Example:
        >>> import numpy as np
        >>> ness = GaussianNESS(np.diag([1.0, 2.0]), [[1e-3, 5e-4], [5e-4, 1e-3]], lr=0.01)
        >>> bool(ness.mean_entropy_production > 0), ness.lyapunov_residual() < 1e-12
        (True, True)
    """

    def __init__(self, hessian: object, diffusion: object, lr: float, mean: object = None):
        self.hessian = _matrix("hessian", hessian)
        self.diffusion = _matrix("diffusion", diffusion)
        p = self.hessian.shape[0]
        if self.diffusion.shape != (p, p):
            raise ValueError(f"diffusion must be ({p}, {p}) like the hessian, got "
                             f"{self.diffusion.shape}")
        self.lr = float(lr)
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        for name, m in (("hessian", self.hessian), ("diffusion", self.diffusion)):
            if not np.allclose(m, m.T, rtol=1e-8, atol=1e-12 * np.abs(m).max()):
                raise ValueError(f"{name} must be symmetric")
            eig = np.linalg.eigvalsh(m)
            if eig.min() <= 0:
                raise ValueError(f"{name} must be positive definite; its smallest eigenvalue is "
                                 f"{eig.min():.3g} (for D: more samples than parameters, and no "
                                 "exact symmetry of the loss)")
        self.mean = np.zeros(p) if mean is None else _array(mean).reshape(p)
        self.covariance = scipy.linalg.solve_continuous_lyapunov(
            self.hessian, 2.0 / self.lr * self.diffusion)
        self.covariance = 0.5 * (self.covariance + self.covariance.T)
        self.circulation = 0.5 * self.lr * (self.hessian @ self.covariance
                                            - self.covariance @ self.hessian)
        self._d_inv = np.linalg.inv(self.diffusion)
        self._sigma_inv = np.linalg.inv(self.covariance)
        self.mean_entropy_production = float(-np.trace(
            self.circulation @ self._d_inv @ self.circulation @ self._sigma_inv))

    @property
    def dim(self) -> int:
        """P, the number of parameters."""
        return self.hessian.shape[0]

    def lyapunov_residual(self) -> float:
        r""":math:`\lVert H\Sigma + \Sigma H - \tfrac2h D\rVert_F / \lVert\tfrac2h D\rVert_F`."""
        q = 2.0 / self.lr * self.diffusion
        r = self.hessian @ self.covariance + self.covariance @ self.hessian - q
        return float(np.linalg.norm(r) / np.linalg.norm(q))

    def current_velocity(self, w: object) -> np.ndarray:
        r""":math:`v(w) = -C\Sigma^{-1}(w - \mu)`, for ``w`` of shape ``(..., P)``."""
        dw = _array(w) - self.mean
        return -dw @ (self.circulation @ self._sigma_inv).T

    def entropy_production(self, w: object, w_next: object) -> np.ndarray:
        r"""Entropy produced by each step :math:`w \to w'`:
        :math:`\sigma = v(w)^\top D^{-1}(w' - w)`, batched over leading axes (``(..., P)`` →
        ``(...)``); e.g. a trajectory ``traj (K, T, P)`` gives
        ``entropy_production(traj[:, :-1], traj[:, 1:])`` of shape ``(K, T - 1)``."""
        w, w_next = _array(w), _array(w_next)
        if w.shape != w_next.shape or w.shape[-1] != self.dim:
            raise ValueError(f"w and w_next must both have shape (..., {self.dim}), got "
                             f"{w.shape} and {w_next.shape}")
        v = self.current_velocity(w)
        return np.einsum("...i,ij,...j->...", v, self._d_inv, w_next - w)

    def sample(self, n: int, generator: np.random.Generator) -> np.ndarray:
        """``n`` draws from :math:`N(\\mu, \\Sigma)`, ``(n, P)``."""
        return generator.multivariate_normal(self.mean, self.covariance, size=n)


def areal_velocity(trajectory: object, mean: object = None) -> np.ndarray:
    r"""The empirical areal velocity of a trajectory (docs/science.md §5),

    .. math:: A_{ij} = \frac1{2(T-1)}\sum_{n=1}^{T-1}\bigl[\delta w_i(n)\,\delta w_j(n+1)
        - \delta w_j(n)\,\delta w_i(n+1)\bigr],\qquad \delta w = w - \mu,

    the counterpart of the circulation :math:`C`. ``trajectory`` is ``(T, P)`` or ``(K, T,
    P)`` (K independent chains: their A's are averaged). ``mean`` defaults to the empirical
    mean over all samples. Returns ``(P, P)``, antisymmetric, float64.
    """
    w = _array(trajectory)
    if w.ndim == 2:
        w = w[None]
    if w.ndim != 3 or w.shape[1] < 2:
        raise ValueError(f"trajectory must be (T, P) or (K, T, P) with T >= 2, got "
                         f"{_array(trajectory).shape}")
    mu = w.reshape(-1, w.shape[-1]).mean(0) if mean is None else _array(mean)
    dw = w - mu
    a, b = dw[:, :-1], dw[:, 1:]
    m = np.einsum("kti,ktj->ij", a, b) / (2.0 * w.shape[0] * (w.shape[1] - 1))
    return m - m.T


def minimize_newton(f: Callable[[Tensor], Tensor], start: Tensor, steps: int = 20,
                    tol: float = 1e-14) -> Tensor:
    r"""Newton's method :math:`\theta \leftarrow \theta - [\nabla^2 f]^{-1}\nabla f` on a
    scalar function of a flat float64 vector (gradient and Hessian by ``torch.func``); stops
    after ``steps`` iterations or when the step's relative size is below ``tol``. For the
    minimum w* of a loss and of :func:`~thermotrain.thermo.effective_loss` (docs/science.md §4)."""
    theta = start.detach().to(torch.float64).clone()
    g_fn, h_fn = torch.func.grad(f), torch.func.hessian(f)
    for _ in range(int(steps)):
        step = torch.linalg.solve(h_fn(theta), g_fn(theta))
        theta = theta - step
        if float(step.norm()) <= tol * float(theta.norm()):
            break
    return theta
