"""Differentiable optimization layers: CG data consistency and the pixel-wise signal fit."""

from pinqi.solvers.cg import conjugate_gradient
from pinqi.solvers.convergence import ConvergenceWarning, SolverInfo
from pinqi.solvers.data_consistency import data_consistency
from pinqi.solvers.signal_fit import signal_fit

__all__ = [
    "ConvergenceWarning",
    "SolverInfo",
    "conjugate_gradient",
    "data_consistency",
    "signal_fit",
]
