"""Per-pixel projected Newton / Levenberg-Marquardt solver for the signal fit."""

from __future__ import annotations

import torch

from pinqi.solvers.convergence import SolverInfo
from pinqi.solvers.fit_objective import (
    FitObjective,
    active_bounds,
    projected_gradient_norm,
    take_pixels,
)
from pinqi.solvers.small_linalg import add_diagonal, cholesky_solve, restrict_to_free

_MU_START = 1e-3
_MU_MIN = 1e-9
_MU_MAX = 1e12
#: Pixels still running are gathered into smaller arrays once they are fewer than this
#: fraction of the arrays being iterated (most pixels converge in a few iterations).
_COMPACT_BELOW = 0.25


def _iterate(
    objective: FitObjective,
    p: torch.Tensor,
    mu: torch.Tensor,
    stalled: torch.Tensor,
    lower: torch.Tensor,
    upper: torch.Tensor,
    *,
    max_iter: int,
    tol: float,
    sync_free: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Run damped Newton iterations until done, ``max_iter``, or few pixels keep running.

    ``mu`` ``(batch, N)`` is the damping per pixel; ``stalled`` ``(batch, N)`` marks pixels
    whose undamped Newton step has fallen below rounding (converged to working precision).
    Returns the updated ``p``, ``mu`` and ``stalled``, the projected gradient norm per pixel
    ``(batch, N)`` and the iterations made. With ``sync_free``, exactly ``max_iter`` iterations
    without reading a value back: converged pixels are frozen by their mask, and the
    Gauss-Newton fallback is computed for every pixel.
    """
    eps = torch.finfo(p.dtype).eps
    residual = objective.residual(p)
    value = objective.value(p, residual)
    grad, gauss_newton, hessian = objective.derivatives(p, residual)
    scale = (objective.images**2).sum(1) + value
    size = value.numel()
    iterations = 0
    while True:
        pg_norm = projected_gradient_norm(p, grad, lower, upper)
        running = (pg_norm > tol) & (mu < _MU_MAX) & ~stalled
        if iterations == max_iter:
            return p, mu, stalled, pg_norm, iterations
        if not sync_free:
            n_running = int(running.sum())
            if n_running == 0 or (iterations > 0 and n_running < _COMPACT_BELOW * size):
                return p, mu, stalled, pg_norm, iterations
        iterations += 1
        fixed = active_bounds(p, grad, lower, upper)
        damping = mu.unsqueeze(1) * (torch.diagonal(gauss_newton, dim1=1, dim2=2).mT + eps)
        step, newton_ok = cholesky_solve(
            *restrict_to_free(add_diagonal(hessian, damping), -grad, fixed)
        )
        if sync_free or not bool(newton_ok.all()):
            fallback, _ = cholesky_solve(
                *restrict_to_free(add_diagonal(gauss_newton, damping), -grad, fixed)
            )
            step = torch.where(newton_ok.unsqueeze(1), step, fallback)
        negligible = (step.abs() <= 8 * eps * (p.abs() + 1)).all(1)
        stalled = stalled | (running & newton_ok & (mu <= _MU_START) & negligible)
        trial = torch.clamp(p + step, lower, upper)
        trial_residual = objective.residual(trial)
        trial_value = objective.value(trial, trial_residual)
        accept = running & (trial_value <= value + 16 * eps * scale)
        p = torch.where(accept.unsqueeze(1), trial, p)
        residual = torch.where(accept.unsqueeze(1), trial_residual, residual)
        value = torch.where(accept, trial_value, value)
        mu = torch.where(accept, torch.clamp(mu / 3, min=_MU_MIN), torch.where(running, mu * 8, mu))
        grad, gauss_newton, hessian = objective.derivatives(p, residual)


def newton_solve(
    objective: FitObjective,
    p0: torch.Tensor,
    lower: torch.Tensor,
    upper: torch.Tensor,
    *,
    max_iter: int,
    tol: float,
    sync_free: bool = False,
) -> tuple[torch.Tensor, SolverInfo]:
    """Minimise the per-pixel objective in the box [lower, upper] by damped Newton steps.

    Every pixel is an independent problem with P unknowns. Each iteration solves, per pixel,
    (K + mu D) s = -g on the components not held by a bound (projected Newton), where g is the
    gradient, K the exact Hessian where it is positive definite (quadratic convergence near the
    minimum) and the Gauss-Newton matrix 2 Re(J^H J) + 2 lambda I elsewhere, and D the diagonal
    of the Gauss-Newton matrix (Levenberg-Marquardt). The step is projected onto the box and
    accepted where it does not increase F (up to a few rounding errors of F's scale); mu shrinks
    after an accepted step and grows after a rejected one, per pixel. Once most pixels have
    converged, the remaining ones are gathered into smaller arrays, so late iterations cost
    little; ``sync_free`` instead runs ``max_iter`` iterations on all pixels with converged ones
    frozen by a mask, without host synchronisation (for networks, CUDA graphs and
    ``torch.compile``).

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
        A pixel has converged when the norm of its projected gradient is <= tol, or when its
        undamped Newton step is below rounding (converged to working precision: in float32
        the gradient cannot always get below ~1e-6).
    sync_free
        No data-dependent control flow: fixed iterations, no compaction, no value read back.

    Returns
    -------
    p
        Solution ``(batch, P, N)``.
    info
        Iterations, worst projected gradient norm per batch element, convergence flags.
    """
    p = torch.clamp(p0, lower, upper)
    mu = torch.full_like(p[:, 0], _MU_START)
    stalled = torch.zeros_like(mu, dtype=torch.bool)
    p, mu, stalled, pg_norm, iterations = _iterate(
        objective, p, mu, stalled, lower, upper, max_iter=max_iter, tol=tol, sync_free=sync_free
    )
    while iterations < max_iter:
        running = (pg_norm > tol) & (mu < _MU_MAX) & ~stalled
        if not bool(running.any()):
            break
        n_keep = int(running.sum(1).max())
        index = torch.argsort((~running).to(torch.uint8), dim=1, stable=True)[:, :n_keep]
        sub_p, sub_mu, sub_stalled, sub_pg_norm, sub_iterations = _iterate(
            objective.subset(index),
            take_pixels(p, index),
            take_pixels(mu.unsqueeze(1), index)[:, 0],
            take_pixels(stalled.unsqueeze(1), index)[:, 0],
            lower,
            upper,
            max_iter=max_iter - iterations,
            tol=tol,
        )
        p = p.scatter(-1, index.unsqueeze(1).expand_as(sub_p), sub_p)
        mu = mu.scatter(-1, index, sub_mu)
        stalled = stalled.scatter(-1, index, sub_stalled)
        pg_norm = pg_norm.scatter(-1, index, sub_pg_norm)
        iterations += sub_iterations
    return p, SolverInfo.from_pixels(iterations, pg_norm, (pg_norm <= tol) | stalled)
