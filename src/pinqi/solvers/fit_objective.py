"""The per-pixel objective of the signal fit and its derivatives (paper Eq. 13/14).

F(p) = sum_t |q_t(p) - y_t|^2 + lambda sum_k (p_k - p_reg,k)^2, independently per pixel.
All arrays here are "pixels last": parameters ``(batch, P, N)``. Complex images are handled as
real vectors of length 2 n_tau (real parts, then imaginary parts): residuals ``(batch, 2T, N)``
and Jacobians ``(batch, 2T, P, N)``, which keeps every operation a contiguous real one.
"""

from __future__ import annotations

import torch

from pinqi.physics.signal_models import SignalModel


def stack_complex(x: torch.Tensor) -> torch.Tensor:
    """Real parts, then imaginary parts of ``x`` ``(batch, T, ...)`` along axis 1: ``(batch, 2T, ...)``."""
    return torch.view_as_real(x).movedim(-1, 1).reshape(x.shape[0], -1, *x.shape[2:])


def unstack_complex(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`stack_complex`."""
    re, im = torch.chunk(x, 2, dim=1)
    return torch.complex(re, im)


class FitObjective:
    """F and its derivatives for fixed data ``images``, ``p_reg`` and ``lam``.

    Parameters
    ----------
    model
        The signal model q.
    images
        Complex ``(batch, n_tau, N)``.
    p_reg
        Real ``(batch, P, N)``.
    lam
        Real ``(batch,)``.
    """

    def __init__(
        self, model: SignalModel, images: torch.Tensor, p_reg: torch.Tensor, lam: torch.Tensor
    ) -> None:
        self.model = model
        self.images = stack_complex(images)
        self.p_reg = p_reg
        self.lam = lam.reshape(-1, 1, 1)

    def residual(self, p: torch.Tensor) -> torch.Tensor:
        """Stacked image residual q(p) - y, real ``(batch, 2T, N)``."""
        return stack_complex(self.model(p)) - self.images

    def jacobian(self, p: torch.Tensor) -> torch.Tensor:
        """Stacked Jacobian dq/dp, real ``(batch, 2T, P, N)``."""
        return stack_complex(self.model.jacobian(p))

    def value(self, p: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """F per pixel, ``(batch, N)``."""
        r = self.residual(p) if residual is None else residual
        return (r * r).sum(1) + self.lam[:, 0] * ((p - self.p_reg) ** 2).sum(1)

    def gradient(self, p: torch.Tensor, residual: torch.Tensor, jac: torch.Tensor) -> torch.Tensor:
        """dF/dp = 2 Re(J^H r) + 2 lambda (p - p_reg), ``(batch, P, N)``."""
        return 2 * (jac * residual.unsqueeze(2)).sum(1) + 2 * self.lam * (p - self.p_reg)

    def gauss_newton(self, jac: torch.Tensor) -> torch.Tensor:
        """Gauss-Newton matrix 2 Re(J^H J) + 2 lambda I, ``(batch, P, P, N)``."""
        batch, _, n_params, n_pixels = jac.shape
        matrix = jac.new_empty(batch, n_params, n_params, n_pixels)
        for k in range(n_params):
            for m in range(k + 1):
                entry = 2 * (jac[:, :, k] * jac[:, :, m]).sum(1)
                if k == m:
                    entry = entry + 2 * self.lam[:, 0]
                matrix[:, k, m] = entry
                matrix[:, m, k] = entry
        return matrix

    def hessian(self, p: torch.Tensor, residual: torch.Tensor, jac: torch.Tensor) -> torch.Tensor:
        """Exact Hessian: Gauss-Newton matrix + 2 Re(sum_t conj(r_t) d^2q_t/dp^2)."""
        curvature = self.model.residual_curvature(p, unstack_complex(residual))
        return self.gauss_newton(jac) + 2 * curvature


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
