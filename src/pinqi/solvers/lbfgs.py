"""The paper's signal-fit solver: L-BFGS on trigonometrically transformed variables."""

from __future__ import annotations

import torch

from pinqi.solvers.bounds import TrigBounds
from pinqi.solvers.convergence import SolverInfo
from pinqi.solvers.fit_objective import FitObjective, projected_gradient_norm


def lbfgs_solve(
    objective: FitObjective,
    p0: torch.Tensor,
    bounds: TrigBounds,
    *,
    max_iter: int,
    tol: float,
    history_size: int = 10,
) -> tuple[torch.Tensor, SolverInfo]:
    """Minimise the summed objective with ``torch.optim.LBFGS`` in z, p = bounds.constrain(z).

    As in the paper (Sec. 2.3.2, 3.2), all pixels of the batch form one vector for L-BFGS with a
    strong-Wolfe line search. It stops when the largest |dF/dz| is <= ``tol`` or after
    ``max_iter`` iterations. Only the objective's value and autograd gradients are used, so any
    differentiable signal model works.

    Parameters
    ----------
    objective
        The per-pixel objective (pixels-last arrays, detached from any graph).
    p0
        Start ``(batch, P, N)``.
    bounds
        The variable transform that keeps p in the open box.
    max_iter
        Maximum number of L-BFGS iterations.
    tol
        Gradient tolerance in z, and the per-pixel convergence threshold reported in ``info``
        (norm of the projected gradient dF/dp).
    history_size
        L-BFGS memory.

    Returns
    -------
    p
        Solution ``(batch, P, N)``.
    info
        Iterations, worst per-pixel gradient norm per batch element, convergence flags.
    """
    z = bounds.unconstrain(p0).detach().clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [z],
        lr=1,
        max_iter=max_iter,
        max_eval=2 * max_iter,
        history_size=history_size,
        tolerance_grad=tol,
        tolerance_change=0,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = objective.value(bounds.constrain(z)).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    iterations = int(optimizer.state[z].get("n_iter", 0))
    p = bounds.constrain(z.detach())
    residual = objective.residual(p)
    grad = objective.gradient(p, residual, objective.jacobian(p))
    lower = bounds.lower.to(p).reshape(1, -1, 1)
    upper = bounds.upper.to(p).reshape(1, -1, 1)
    pg_norm = projected_gradient_norm(p, grad, lower, upper)
    converged_pixel = pg_norm <= tol
    info = SolverInfo(
        iterations=iterations,
        residual=pg_norm.amax(1),
        converged=converged_pixel.all(1),
        not_converged=int((~converged_pixel).sum()),
    )
    return p, info
