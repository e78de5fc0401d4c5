"""Per-pixel projected Newton / Levenberg-Marquardt solver for the signal fit."""

from __future__ import annotations

import torch

from pinqi.solvers.convergence import SolverInfo
from pinqi.solvers.fit_objective import FitObjective, active_bounds, projected_gradient_norm
from pinqi.solvers.small_linalg import cholesky_solve, restrict_to_free

_MU_START = 1e-3
_MU_MIN = 1e-9
_MU_MAX = 1e12


def _add_diagonal(matrix: torch.Tensor, diagonal: torch.Tensor) -> torch.Tensor:
    """Return ``matrix + diag(diagonal)`` for ``(batch, P, P, N)`` and ``(batch, P, N)``."""
    eye = torch.eye(matrix.shape[1], dtype=matrix.dtype, device=matrix.device)
    return matrix + eye.reshape(1, *eye.shape, 1) * diagonal.unsqueeze(2)


def newton_solve(
    objective: FitObjective,
    p0: torch.Tensor,
    lower: torch.Tensor,
    upper: torch.Tensor,
    *,
    max_iter: int,
    tol: float,
) -> tuple[torch.Tensor, SolverInfo]:
    """Minimise the per-pixel objective in the box [lower, upper] by damped Newton steps.

    Every pixel is an independent problem with P unknowns. Each iteration solves, per pixel,
    (K + mu D) s = -g on the components not held by a bound (projected Newton), where g is the
    gradient, K the exact Hessian where it is positive definite (quadratic convergence near the
    minimum) and the Gauss-Newton matrix 2 Re(J^H J) + 2 lambda I elsewhere, and D the diagonal
    of the Gauss-Newton matrix (Levenberg-Marquardt). The step is projected onto the box and
    accepted where it does not increase F (up to rounding); mu shrinks after an accepted step
    and grows after a rejected one, per pixel.

    Parameters
    ----------
    objective
        The per-pixel objective (pixels-last arrays).
    p0
        Start ``(batch, P, N)``; projected onto the box.
    lower, upper
        Bounds broadcastable to ``(batch, P, N)``.
    max_iter
        Maximum number of iterations.
    tol
        A pixel has converged when the norm of its projected gradient is <= tol.

    Returns
    -------
    p
        Solution ``(batch, P, N)``.
    info
        Iterations, worst projected gradient norm per batch element, convergence flags.
    """
    eps = torch.finfo(p0.dtype).eps
    p = torch.clamp(p0, lower, upper)
    residual = objective.residual(p)
    value = objective.value(p, residual)
    jac = objective.jacobian(p)
    grad = objective.gradient(p, residual, jac)
    scale = (objective.images**2).sum(1) + value
    mu = torch.full_like(value, _MU_START)
    iterations = 0
    for iterations in range(1, max_iter + 1):
        pg_norm = projected_gradient_norm(p, grad, lower, upper)
        running = (pg_norm > tol) & (mu < _MU_MAX)
        if not bool(running.any()):
            iterations -= 1
            break
        fixed = active_bounds(p, grad, lower, upper)
        gauss_newton = objective.gauss_newton(jac)
        damping = mu.unsqueeze(1) * (torch.diagonal(gauss_newton, dim1=1, dim2=2).mT + eps)
        hessian = _add_diagonal(objective.hessian(p, residual, jac), damping)
        step, newton_ok = cholesky_solve(*restrict_to_free(hessian, -grad, fixed))
        fallback, _ = cholesky_solve(
            *restrict_to_free(_add_diagonal(gauss_newton, damping), -grad, fixed)
        )
        step = torch.where(newton_ok.unsqueeze(1), step, fallback)
        trial = torch.clamp(p + step, lower, upper)
        trial_residual = objective.residual(trial)
        trial_value = objective.value(trial, trial_residual)
        accept = running & (trial_value <= value + 16 * eps * scale)
        p = torch.where(accept.unsqueeze(1), trial, p)
        residual = torch.where(accept.unsqueeze(1), trial_residual, residual)
        value = torch.where(accept, trial_value, value)
        mu = torch.where(accept, torch.clamp(mu / 3, min=_MU_MIN), mu * 8)
        jac = objective.jacobian(p)
        grad = objective.gradient(p, residual, jac)
    pg_norm = projected_gradient_norm(p, grad, lower, upper)
    converged_pixel = pg_norm <= tol
    info = SolverInfo(
        iterations=iterations,
        residual=pg_norm.amax(1),
        converged=converged_pixel.all(1),
        not_converged=int((~converged_pixel).sum()),
    )
    return p, info
