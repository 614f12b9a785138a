r"""Generated regression sets with exact answers: the Bayesian linear regression of
docs/science.md §4 (the SGWORLD check) and the 1-2-1 tanh regression of docs/science.md §5
(the fluctuation-theorem system).

Random numbers as in :mod:`.synthetic`: an explicit CPU :class:`torch.Generator`, drawn in
float64, then cast to ``dtype`` and moved to ``device``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .._checks import check_device, check_float, check_float_dtype, check_int, make_generator

__all__ = [
    "BayesianLinearRegression",
    "bayesian_linear_regression",
    "tanh_regression",
    "TANH_GRID_START",
    "TANH_GRID_STEP",
    "TANH_GRID_SIZE",
]


@dataclass(frozen=True, eq=False)
class BayesianLinearRegression:
    r"""A Bayesian linear-regression problem with its exact Gaussian posterior (docs/science.md §4).

    Model: :math:`y_i = x_i^\top w + \sigma\varepsilon_i`, prior :math:`w \sim N(0, s_0^2 I)`.
    The posterior is :math:`N(\mu, H^{-1})` with

    .. math::

        H = X^\top X/\sigma^2 + I/s_0^2, \qquad \mu = H^{-1} X^\top y / \sigma^2 .

    Attributes:
        X: design matrix, shape ``(n, d)``.
        y: targets, shape ``(n,)``.
        weights_true: the weights :math:`w^\star` the data were generated with, ``(d,)``.
        noise_std: :math:`\sigma`.
        prior_std: :math:`s_0`.
        precision: :math:`H`, ``(d, d)``.
        mean: :math:`\mu`, ``(d,)``.
        covariance: :math:`\Sigma = H^{-1}`, ``(d, d)``.

    All tensors share the ``dtype`` and ``device`` the problem was generated with; the
    posterior is computed in float64 from ``X`` and ``y`` *as stored* (after rounding to
    ``dtype``), so it is exact for the data a sampler actually sees.
    """

    X: Tensor
    y: Tensor
    weights_true: Tensor
    noise_std: float
    prior_std: float
    precision: Tensor
    mean: Tensor
    covariance: Tensor

    @property
    def n(self) -> int:
        """Number of data points :math:`N`."""
        return int(self.X.shape[0])

    @property
    def dim(self) -> int:
        """Dimension :math:`d` of the weights."""
        return int(self.X.shape[1])

    def _precision64(self) -> Tensor:
        X = self.X.to(torch.float64)
        eye = torch.eye(self.dim, dtype=torch.float64, device=X.device)
        return X.T @ X / self.noise_std**2 + eye / self.prior_std**2

    def max_stable_step(self) -> float:
        r"""The ULA stability bound :math:`2/\lambda_{\max}(H)`: ULA diverges for larger ``h``."""
        return 2.0 / float(torch.linalg.eigvalsh(self._precision64()).max())

    def ula_covariance(self, h: float) -> Tensor:
        r"""Exact stationary covariance of full-gradient Langevin (ULA) at step ``h``
        (docs/science.md §4).

        ULA, :math:`w_{k+1} = w_k - h\nabla U(w_k) + \sqrt{2h}\,\xi_k` with
        :math:`U = -\log(\text{posterior})` (τ = 1), is a linear recursion
        :math:`w_{k+1} - \mu = (I - hH)(w_k - \mu) + \sqrt{2h}\,\xi_k` whose stationary
        covariance solves :math:`\Sigma_h = (I - hH)\Sigma_h(I - hH) + 2hI`, i.e.

        .. math:: \Sigma_h = \bigl[H (I - hH/2)\bigr]^{-1} = H^{-1} + \tfrac{h}{2} I + O(h^2).

        Args:
            h: step size, ``0 < h < 2/λ_max(H)`` (see :meth:`max_stable_step`).

        Returns:
            :math:`\Sigma_h`, shape ``(d, d)``, in the problem's dtype and device.
        """
        h = check_float("h", h, minimum=0.0, strict=True)
        limit = self.max_stable_step()
        if h >= limit:
            raise ValueError(
                f"h must be < 2/lambda_max(H) = {limit:.6g} for ULA to have a stationary "
                f"distribution, got h={h}"
            )
        H = self._precision64()
        eye = torch.eye(self.dim, dtype=torch.float64, device=H.device)
        cov = torch.linalg.inv(H @ (eye - 0.5 * h * H))
        cov = 0.5 * (cov + cov.T)
        return cov.to(dtype=self.X.dtype)

    def _batch(self, theta: Tensor, idx: Tensor | None) -> tuple[Tensor, Tensor, float]:
        if not isinstance(theta, Tensor):
            raise TypeError(f"theta must be a torch.Tensor of shape (..., {self.dim})")
        if theta.ndim == 0 or theta.shape[-1] != self.dim:
            raise ValueError(f"theta must have shape (..., {self.dim}), got {tuple(theta.shape)}")
        if idx is None:
            Xb, yb = self.X, self.y
        else:
            Xb, yb = self.X[idx], self.y[idx]
        scale = self.n / Xb.shape[-2]
        if Xb.ndim == 2:  # one batch shared by every chain: plain matmuls
            residual = yb - theta @ Xb.T
        else:  # per-chain batches (..., B, d)
            residual = yb - (Xb @ theta.unsqueeze(-1)).squeeze(-1)
        return Xb, residual, scale

    def neg_log_posterior(self, theta: Tensor, idx: Tensor | None = None) -> Tensor:
        r"""The sum-scaled minibatch loss of SGWORLD (docs/science.md §4), up to an additive
        constant.

        .. math::

            L_B(\theta) = \frac{N}{B}\sum_{i \in B}\frac{(y_i - x_i^\top\theta)^2}{2\sigma^2}
                + \frac{\lVert\theta\rVert^2}{2 s_0^2},

        which for ``idx=None`` (B = all N points) is :math:`-\log` posterior + const, whose
        Hessian is :math:`H`.

        Args:
            theta: weights of shape ``(..., d)`` (e.g. ``(K, d)`` for K chains).
            idx: ``None`` (full batch), indices ``(B,)`` shared by all chains, or ``(..., B)``
                matching ``theta``'s leading shape (as from :class:`Minibatcher`).

        Returns:
            :math:`L_B(\theta)` of shape ``theta.shape[:-1]``.
        """
        _, residual, scale = self._batch(theta, idx)
        data_term = scale * residual.square().sum(-1) / (2 * self.noise_std**2)
        return data_term + theta.square().sum(-1) / (2 * self.prior_std**2)

    def grad_neg_log_posterior(self, theta: Tensor, idx: Tensor | None = None) -> Tensor:
        r"""Gradient of :meth:`neg_log_posterior` in closed form.

        .. math::

            \nabla L_B(\theta) = -\frac{N}{B\sigma^2}\sum_{i\in B} x_i (y_i - x_i^\top\theta)
                + \theta / s_0^2 .

        Same arguments as :meth:`neg_log_posterior`; returns a tensor shaped like ``theta``.
        """
        Xb, residual, scale = self._batch(theta, idx)
        if Xb.ndim == 2:
            data_grad = residual @ Xb
        else:
            data_grad = (Xb.transpose(-1, -2) @ residual.unsqueeze(-1)).squeeze(-1)
        return -scale * data_grad / self.noise_std**2 + theta / self.prior_std**2


def bayesian_linear_regression(
    n: int = 200,
    d: int = 2,
    *,
    noise_std: float = 1.0,
    prior_std: float = 1.0,
    seed: int | torch.Generator,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> BayesianLinearRegression:
    r"""Draw a Bayesian linear-regression problem with an exact posterior (docs/science.md §4).

    How the data are drawn (our choice; docs/science.md §4 only fixes the model): rows of the design
    matrix :math:`x_i \sim N(0, I_d)`, true weights from the prior
    :math:`w^\star \sim N(0, s_0^2 I_d)` (so the model is well specified), and
    :math:`y_i = x_i^\top w^\star + \sigma\varepsilon_i`, :math:`\varepsilon_i \sim N(0, 1)`.
    Random draws, in order: ``X`` (n·d normals), ``w*`` (d), ``ε`` (n).

    The exact posterior (see :class:`BayesianLinearRegression`) is
    :math:`H = X^\top X/\sigma^2 + I/s_0^2`, :math:`\mu = H^{-1}X^\top y/\sigma^2`,
    :math:`\Sigma = H^{-1}`; full-gradient Langevin has stationary covariance
    :math:`[H(I - hH/2)]^{-1}` (:meth:`BayesianLinearRegression.ula_covariance`).

    Args:
        n: number of data points :math:`N` (docs/science.md §4 reference: 200).
        d: dimension (docs/science.md §4 reference: 2).
        noise_std: :math:`\sigma > 0`.
        prior_std: :math:`s_0 > 0`.
        seed: int seed or CPU :class:`torch.Generator`.
        device, dtype: where and in which floating dtype all tensors are returned.

    Example:
        >>> problem = bayesian_linear_regression(seed=0)
        >>> problem.X.shape, problem.covariance.shape
        (torch.Size([200, 2]), torch.Size([2, 2]))
    """
    n = check_int("n", n, minimum=1)
    d = check_int("d", d, minimum=1)
    noise_std = check_float("noise_std", noise_std, minimum=0.0, strict=True)
    prior_std = check_float("prior_std", prior_std, minimum=0.0, strict=True)
    dtype, device = check_float_dtype(dtype), check_device(device)
    generator = make_generator(seed)

    X = torch.randn(n, d, generator=generator, dtype=torch.float64)
    w_true = prior_std * torch.randn(d, generator=generator, dtype=torch.float64)
    y = X @ w_true + noise_std * torch.randn(n, generator=generator, dtype=torch.float64)
    X, y = X.to(dtype=dtype), y.to(dtype=dtype)

    # Posterior from the data as stored (rounded to dtype), computed in float64.
    X64, y64 = X.to(torch.float64), y.to(torch.float64)
    precision = X64.T @ X64 / noise_std**2 + torch.eye(d, dtype=torch.float64) / prior_std**2
    mean = torch.linalg.solve(precision, X64.T @ y64 / noise_std**2)
    covariance = torch.linalg.inv(precision)
    covariance = 0.5 * (covariance + covariance.T)

    def out(t: Tensor) -> Tensor:
        return t.to(device=device, dtype=dtype)

    return BayesianLinearRegression(
        X=out(X),
        y=out(y),
        weights_true=out(w_true),
        noise_std=noise_std,
        prior_std=prior_std,
        precision=out(precision),
        mean=out(mean),
        covariance=out(covariance),
    )


#: The fixed input grid of docs/science.md §5: x_k = -3.0 + 0.03 k, k = 0..199.
TANH_GRID_START, TANH_GRID_STEP, TANH_GRID_SIZE = -3.0, 0.03, 200


def tanh_regression(
    seed: int | torch.Generator,
    *,
    noise_std: float = 0.1,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    r"""The 1-D regression data of the fluctuation-theorem study (docs/science.md §5).

    :math:`N = 200` inputs on the grid :math:`x_k = -3.0 + 0.03\,k`, :math:`k = 0..199`
    (i.e. −3.0, −2.97, …, 2.97), and targets

    .. math:: y_k = e^{-x_k^2} + \sigma\varepsilon_k,\qquad \varepsilon_k \sim N(0, 1),

    with :math:`\sigma` = ``noise_std`` = 0.1 by default. The grid is deterministic; only the
    noise depends on ``seed``.

    Args:
        seed: int seed or CPU :class:`torch.Generator`.
        noise_std: :math:`\sigma \ge 0`.
        device, dtype: placement and floating dtype of the outputs.

    Returns:
        ``(x, y)``, both column vectors of shape ``(200, 1)``, so that ``y - model(x)`` with a
        ``Linear(1, ·)``-based model never broadcasts to ``(200, 200)``.

    Example:
        >>> x, y = tanh_regression(0)
        >>> x.shape, round(float(x[1, 0]), 2)
        (torch.Size([200, 1]), -2.97)
    """
    noise_std = check_float("noise_std", noise_std, minimum=0.0)
    dtype, device = check_float_dtype(dtype), check_device(device)
    generator = make_generator(seed)
    k = torch.arange(TANH_GRID_SIZE, dtype=torch.float64)
    x = TANH_GRID_START + TANH_GRID_STEP * k
    y = torch.exp(-x.square()) + noise_std * torch.randn(
        TANH_GRID_SIZE, generator=generator, dtype=torch.float64
    )
    return (
        x.unsqueeze(1).to(device=device, dtype=dtype),
        y.unsqueeze(1).to(device=device, dtype=dtype),
    )
