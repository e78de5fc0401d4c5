"""The per-pixel objective of the signal fit and its derivatives (paper Eq. 13/14).

F(p) = sum_t |q_t(p) - y_t|^2 + sum_k lambda_k (p_k - p_reg,k)^2, independently per pixel.
All arrays here are "pixels last": parameters ``(batch, P, N)``. Complex images are handled as
real vectors of length 2 n_tau (real parts, then imaginary parts): residuals ``(batch, 2T, N)``
and Jacobians ``(batch, 2T, P, N)``, which keeps every operation a contiguous real one.
"""

from __future__ import annotations

import torch

from pinqi.physics.signal_models import SignalModel
from pinqi.solvers.small_linalg import add_diagonal


def take_pixels(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Gather pixels: ``x`` ``(batch, C, N)``, ``index`` ``(batch, K)`` -> ``(batch, C, K)``."""
    return x.gather(-1, index.unsqueeze(1).expand(-1, x.shape[1], -1))


class FitObjective:
    """F and its derivatives for fixed data ``images``, ``p_reg`` and ``lam``.

    Parameters
    ----------
    model
        The signal model q.
    images
        Stacked real images ``(batch, 2 n_tau, N)`` (see
        :func:`~pinqi.physics.signal_models.stack_complex`).
    p_reg
        Real ``(batch, P, N)``.
    lam
        Real ``(batch, P)``: the strength of each parameter's penalty.
    """

    def __init__(
        self, model: SignalModel, images: torch.Tensor, p_reg: torch.Tensor, lam: torch.Tensor
    ) -> None:
        self.model = model
        self.images = images
        self.p_reg = p_reg
        self.lam = lam.reshape(*lam.shape, 1)

    def subset(self, index: torch.Tensor) -> FitObjective:
        """The objective of the pixels ``index`` ``(batch, K)`` only."""
        return FitObjective(
            self.model,
            take_pixels(self.images, index),
            take_pixels(self.p_reg, index),
            self.lam[..., 0],
        )

    def residual(self, p: torch.Tensor) -> torch.Tensor:
        """Stacked image residual q(p) - y, real ``(batch, 2T, N)``."""
        return self.model.stacked_forward(p) - self.images

    def value(self, p: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """F per pixel, ``(batch, N)``."""
        r = self.residual(p) if residual is None else residual
        return (r * r).sum(1) + (self.lam * (p - self.p_reg) ** 2).sum(1)

    def derivatives(
        self, p: torch.Tensor, residual: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Gradient, Gauss-Newton matrix and exact Hessian of F at ``p``.

        Returns
        -------
        gradient
            dF/dp = 2 Re(J^H r) + 2 lambda (p - p_reg) (lambda per component), ``(batch, P, N)``.
        gauss_newton
            2 Re(J^H J) + 2 lambda I, ``(batch, P, P, N)``: positive semi-definite.
        hessian
            The exact d^2F/dp^2: Gauss-Newton plus 2 Re(sum_t conj(r_t) d^2q_t/dp^2).
        """
        jtr, jtj, curvature = self.model.normal_terms(p, residual)
        gradient = 2 * jtr + 2 * self.lam * (p - self.p_reg)
        gauss_newton = add_diagonal(2 * jtj, (2 * self.lam).expand_as(p))
        return gradient, gauss_newton, gauss_newton + 2 * curvature


def active_bounds(
    p: torch.Tensor, grad: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor
) -> torch.Tensor:
    """Components held by a bound: on the lower bound with dF/dp > 0 or on the upper with < 0."""
    return ((p <= lower) & (grad > 0)) | ((p >= upper) & (grad < 0))


def projected_gradient_norm(
    p: torch.Tensor, grad: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor
) -> torch.Tensor:
    """Norm of the gradient without the components held by a bound, ``(batch, N)``."""
    free = torch.where(active_bounds(p, grad, lower, upper), 0, grad)
    return torch.sqrt((free * free).sum(1))
