"""Many tiny symmetric linear systems, one per pixel, solved with vectorised Cholesky.

The systems are stored "pixels last": matrices ``(batch, P, P, N)`` and vectors
``(batch, P, N)`` for ``N`` pixels with ``P`` unknowns each. The loops run over the ``P``
unknowns (3 or 5 here) and every operation is an element-wise operation over all pixels, which
is much faster than batched LAPACK calls on millions of 3x3 matrices.
"""

from __future__ import annotations

import torch


def cholesky_solve(matrix: torch.Tensor, rhs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve ``matrix @ x = rhs`` per pixel for symmetric positive definite matrices.

    Parameters
    ----------
    matrix
        Symmetric matrices ``(batch, P, P, N)``.
    rhs
        Right-hand sides ``(batch, P, N)``.

    Returns
    -------
    x
        Solutions ``(batch, P, N)``; zero where the matrix is not positive definite.
    positive_definite
        Bool ``(batch, N)``: where the factorisation succeeded.
    """
    n_params = matrix.shape[1]
    tiny = torch.finfo(matrix.dtype).tiny
    lower: list[list[torch.Tensor]] = [[] for _ in range(n_params)]
    ok = torch.ones_like(matrix[:, 0, 0], dtype=torch.bool)
    for i in range(n_params):
        for j in range(i + 1):
            s = matrix[:, i, j]
            for k in range(j):
                s = s - lower[i][k] * lower[j][k]
            if i == j:
                ok = ok & (s > 0)
                lower[i].append(torch.sqrt(torch.clamp(s, min=tiny)))
            else:
                lower[i].append(s / lower[j][j])
    z: list[torch.Tensor] = []
    for i in range(n_params):
        s = rhs[:, i]
        for k in range(i):
            s = s - lower[i][k] * z[k]
        z.append(s / lower[i][i])
    x: list[torch.Tensor] = [torch.empty(0)] * n_params
    for i in reversed(range(n_params)):
        s = z[i]
        for k in range(i + 1, n_params):
            s = s - lower[k][i] * x[k]
        x[i] = s / lower[i][i]
    solution = torch.stack(x, dim=1)
    return torch.where(ok.unsqueeze(1), solution, 0), ok


def restrict_to_free(
    matrix: torch.Tensor, rhs: torch.Tensor, fixed: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Remove fixed unknowns from per-pixel systems.

    Rows and columns of the fixed unknowns are replaced by those of the identity and their
    right-hand side by zero, so the solution is zero there and the free unknowns solve the
    reduced system.

    Parameters
    ----------
    matrix
        ``(batch, P, P, N)``.
    rhs
        ``(batch, P, N)``.
    fixed
        Bool ``(batch, P, N)``.
    """
    free = ~fixed
    pair = free.unsqueeze(2) & free.unsqueeze(1)
    eye = torch.eye(matrix.shape[1], dtype=matrix.dtype, device=matrix.device)
    eye = eye.reshape(1, *eye.shape, 1)
    return torch.where(pair, matrix, eye * fixed.unsqueeze(2)), torch.where(free, rhs, 0)


def add_diagonal(matrix: torch.Tensor, diagonal: torch.Tensor) -> torch.Tensor:
    """Return ``matrix + diag(diagonal)`` for ``(batch, P, P, N)`` and ``(batch, P, N)``."""
    eye = torch.eye(matrix.shape[1], dtype=matrix.dtype, device=matrix.device)
    return matrix + eye.reshape(1, *eye.shape, 1) * diagonal.unsqueeze(2)
