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
    strong-Wolfe line search. The objective is summed in float64, which keeps its rounding noise
    below the line search's decrease tests (with a float32 sum, L-BFGS stalls early). It stops
    when the largest |dF/dz| is <= ``tol`` or after ``max_iter`` iterations; when the line
    search fails, L-BFGS restarts with an empty memory as long as that still lowers F. Only the
    objective's value and its autograd gradient are used, so any differentiable signal model
    works.

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
    z = bounds.unconstrain(p0).detach().clone(memory_format=torch.contiguous_format)
    z.requires_grad_(True)

    def closure() -> torch.Tensor:
        z.grad = None
        loss = objective.value(bounds.constrain(z)).sum(dtype=torch.float64)
        loss.backward()
        return loss.detach()

    iterations = 0
    best = float("inf")
    with torch.enable_grad():
        while iterations < max_iter:
            optimizer = torch.optim.LBFGS(
                [z],
                lr=1,
                max_iter=max_iter - iterations,
                history_size=history_size,
                tolerance_grad=tol,
                tolerance_change=0,
                line_search_fn="strong_wolfe",
            )
            optimizer.step(closure)
            iterations += int(optimizer.state[z].get("n_iter", 0))
            with torch.no_grad():
                loss = float(objective.value(bounds.constrain(z)).sum(dtype=torch.float64))
            if not loss < best or float(z.grad.abs().max()) <= tol:
                break
            best = loss
    p = bounds.constrain(z.detach())
    grad, _, _ = objective.derivatives(p, objective.residual(p))
    lower, upper = bounds.box(p)
    pg_norm = projected_gradient_norm(p, grad, lower, upper)
    return p, SolverInfo.from_pixels(iterations, pg_norm, pg_norm <= tol)
