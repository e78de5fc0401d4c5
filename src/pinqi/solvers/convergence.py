"""Convergence reports of the iterative solvers."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch


class ConvergenceWarning(UserWarning):
    """A solver stopped at its iteration limit before reaching its tolerance."""


@dataclass(frozen=True)
class SolverInfo:
    """What an iterative solver did.

    Attributes
    ----------
    iterations
        Iterations performed (the maximum over the batch).
    residual
        Final convergence measure per batch element ``(batch,)``: the relative residual norm
        for CG, the largest per-pixel projected gradient norm for the signal fit.
    converged
        Per batch element ``(batch,)``: whether every system (pixel) reached the tolerance.
    not_converged
        Number of systems (batch elements for CG, pixels for the signal fit) that did not.
    """

    iterations: int
    residual: torch.Tensor
    converged: torch.Tensor
    not_converged: int

    @classmethod
    def from_pixels(
        cls, iterations: int, residual: torch.Tensor, converged: torch.Tensor
    ) -> SolverInfo:
        """Summarise per-pixel ``residual`` and ``converged`` ``(batch, N)`` per batch element."""
        return cls(
            iterations=iterations,
            residual=residual.amax(1),
            converged=converged.all(1),
            not_converged=int((~converged).sum()),
        )


def warn_if_not_converged(info: SolverInfo, what: str, unit: str, stacklevel: int = 3) -> None:
    """Emit a :class:`ConvergenceWarning` naming ``what`` if some ``unit`` did not converge."""
    if info.not_converged:
        warnings.warn(
            f"{what}: {info.not_converged} {unit}(s) did not reach the tolerance in "
            f"{info.iterations} iterations (worst residual {float(info.residual.max()):.3g}); "
            "increase max_iter or tol",
            ConvergenceWarning,
            stacklevel=stacklevel,
        )
