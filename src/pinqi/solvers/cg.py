"""Batched conjugate gradient for Hermitian positive (semi-)definite systems."""

from __future__ import annotations

from collections.abc import Callable

import torch

from pinqi.solvers.convergence import SolverInfo


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample real part of <a, b> = sum conj(a) b over all but the first axis: ``(batch,)``.

    For complex inputs Re(conj(a) b) = Re a Re b + Im a Im b: one real product of the
    interleaved values instead of a complex one.
    """
    if a.is_complex():
        a, b = torch.view_as_real(a), torch.view_as_real(b)
    return (a * b).flatten(1).sum(1)


def per_sample(scalar: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a ``(batch,)`` scalar to broadcast against ``like``."""
    return scalar.reshape(-1, *(1,) * (like.ndim - 1))


def conjugate_gradient(
    operator: Callable[[torch.Tensor], torch.Tensor],
    rhs: torch.Tensor,
    x0: torch.Tensor | None = None,
    *,
    max_iter: int,
    tol: float,
    early_exit: bool = True,
) -> tuple[torch.Tensor, SolverInfo]:
    """Solve ``operator(x) = rhs`` independently for every batch element by CG.

    Each batch element has its own step sizes, so the systems do not influence each other.
    An element stops updating once its relative residual ``||r|| / ||rhs||`` is below ``tol``
    (tracked on the device by a mask). The loop has no host synchronisation except the
    early-exit test, made every ``10`` iterations on accelerators (every iteration on the CPU);
    without ``early_exit`` it always runs ``max_iter`` iterations and never synchronises, so
    that it can be captured (CUDA graphs, ``torch.compile``). Runs out of place, so autograd
    can differentiate through the iterations (the unrolled reference).

    Parameters
    ----------
    operator
        Hermitian positive semi-definite linear map, applied batch-wise.
    rhs
        Right-hand side ``(batch, ...)``, real or complex.
    x0
        Start ``(batch, ...)``; zero if None.
    max_iter
        Maximum number of iterations.
    tol
        Relative residual tolerance.
    early_exit
        Stop once every element has converged (one host read per test).

    Returns
    -------
    x
        Solution, same shape as ``rhs``.
    info
        Iterations, final relative residual per element and convergence flags.
    """
    rhs_norm = torch.sqrt(_dot(rhs, rhs))
    threshold = tol * rhs_norm
    if x0 is None:
        x = torch.zeros_like(rhs)
        r = rhs
    else:
        x = x0
        r = rhs - operator(x0)
    p = r
    rs = _dot(r, r)
    active = torch.sqrt(rs) > threshold
    check_every = 1 if rhs.device.type == "cpu" else 10
    iterations = 0
    for iterations in range(1, max_iter + 1):
        if early_exit and (iterations - 1) % check_every == 0 and not bool(active.any()):
            iterations -= 1
            break
        ap = operator(p)
        pap = _dot(p, ap)
        alpha = torch.where(active & (pap > 0), rs / torch.where(pap > 0, pap, 1), 0)
        x = torch.addcmul(x, per_sample(alpha, x), p)
        r = torch.addcmul(r, per_sample(alpha, r), ap, value=-1)
        rs_new = _dot(r, r)
        beta = torch.where(active, rs_new / torch.where(rs > 0, rs, 1), 0)
        p = torch.addcmul(r, per_sample(beta, p), p)
        rs = torch.where(active, rs_new, rs)
        active = active & (torch.sqrt(rs) > threshold)
    residual = torch.sqrt(rs.detach()) / torch.where(rhs_norm > 0, rhs_norm, 1).detach()
    converged = ~active
    info = SolverInfo(
        iterations=iterations,
        residual=residual,
        converged=converged,
        unconverged=active.long(),
    )
    return x, info
