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

    Building a report costs no host synchronisation; :attr:`not_converged` syncs when read.

    Attributes
    ----------
    iterations
        Iterations performed (the maximum over the batch).
    residual
        Final convergence measure per batch element ``(batch,)``: the relative residual norm
        for CG, the largest per-pixel projected gradient norm for the signal fit.
    converged
        Per batch element ``(batch,)``: whether every system (pixel) reached the tolerance.
    unconverged
        Per batch element ``(batch,)``: number of systems (1 per batch element for CG, one per
        pixel for the signal fit) that did not reach the tolerance.
    systems
        Number of systems per batch element.
    """

    iterations: int
    residual: torch.Tensor
    converged: torch.Tensor
    unconverged: torch.Tensor
    systems: int = 1

    @classmethod
    def from_pixels(
        cls, iterations: int, residual: torch.Tensor, converged: torch.Tensor
    ) -> SolverInfo:
        """Summarise per-pixel ``residual`` and ``converged`` ``(batch, N)`` per batch element."""
        return cls(
            iterations=iterations,
            residual=residual.amax(1),
            converged=converged.all(1),
            unconverged=(~converged).sum(1),
            systems=converged.shape[1],
        )

    @property
    def not_converged(self) -> int:
        """Number of systems (batch elements for CG, pixels for the fit) that did not converge."""
        return int(self.unconverged.sum())

    @property
    def unconverged_share(self) -> torch.Tensor:
        """Share of all systems of the batch that did not converge, a 0-dim tensor in [0, 1]."""
        return self.unconverged.sum() / (self.unconverged.numel() * self.systems)


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
