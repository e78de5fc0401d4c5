"""Fits of magnitude image series: polarity restoration for inversion and Look-Locker data.

Magnitude images of an inversion-recovery series, |a + b exp(-TI/T)|, lose the sign of the
signal before its null. A complex model fitted to them cannot follow the signal through the
null. The reduced-dimension non-linear least squares fit with polarity restoration
(RD-NLS-PR, Barral et al., MRM 64:1057, 2010) tries every null position between consecutive
delays: for null position k the first k samples (by delay) are negated, the real model
a + b exp(-TI/T) is fitted to the signed data, and the position with the least squares wins.

For a given T the model is linear in (a, b), so the fit reduces to a one-dimensional search
over T (a coarse log-spaced grid, a fine search around its best point and a parabola through
the best fine point and its neighbours), with (a, b) in closed form. All pixels and all null
positions are handled at once: for a fixed T, the normal equations of every polarity pattern
follow from prefix sums over the delays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pinqi._checks import check_real

#: Fine search points on each side of the best coarse grid point (one coarse step wide).
_REFINE = 8


@dataclass(frozen=True)
class MagnitudeFit:
    """Result of :func:`fit_magnitude_recovery`, every field ``(*spatial)``.

    Attributes
    ----------
    a, b
        Real coefficients of a + b exp(-TI/T) (a.u., signed: the polarity-restored signal).
    t
        The recovery time T in s (T1 for inversion recovery, the apparent T1* for
        Look-Locker series).
    residual
        Sum of squared residuals of the signed fit.
    null_index
        Number of samples (in ascending delay order) whose sign was restored.
    at_bound
        T lies on an end of the search range: not determined by the data.
    """

    a: torch.Tensor
    b: torch.Tensor
    t: torch.Tensor
    residual: torch.Tensor
    null_index: torch.Tensor
    at_bound: torch.Tensor

    def look_locker_t1(self) -> torch.Tensor:
        """T1 = T1* (-b/a - 1) in s, the Look-Locker correction for MOLLI-type series."""
        return self.t * (-self.b / self.a - 1)


def _check_series(magnitude: object, ti: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate ``magnitude`` ``(n_ti, *spatial)`` and ``ti`` ``(n_ti,)``; return float64 views."""
    magnitude = check_real("magnitude", magnitude, None, "(n_ti, *spatial)")
    ti = check_real("ti", ti, 1, "(n_ti,)")
    if magnitude.ndim < 1 or magnitude.shape[0] != ti.shape[0]:
        raise ValueError(
            f"magnitude has shape {tuple(magnitude.shape)} but there are {ti.shape[0]} delays; "
            "the delays must be on the first axis"
        )
    if ti.shape[0] < 3:
        raise ValueError(f"need at least 3 delays for a + b exp(-TI/T), got {ti.shape[0]}")
    if bool((ti < 0).any()):
        raise ValueError(f"delays must be non-negative (s), got {ti.tolist()}")
    return magnitude.to(torch.float64), ti.to(torch.float64)


def fit_magnitude_recovery(
    magnitude: torch.Tensor,
    ti: torch.Tensor,
    *,
    t_range: tuple[float, float] = (0.02, 10.0),
    n_grid: int = 64,
    restore_polarity: bool = True,
) -> MagnitudeFit:
    """Fit |a + b exp(-TI/T)| to a magnitude series by RD-NLS-PR.

    Parameters
    ----------
    magnitude
        Real, non-negative magnitudes ``(n_ti, *spatial)``, any delay order.
    ti
        Delays ``(n_ti,)`` in s.
    t_range
        Search range of T in s.
    n_grid
        Points of the log-spaced coarse grid; the best one is refined by a fine search over
        one coarse step on each side and a parabola through the best fine point.
    restore_polarity
        Try every null position (inversion recovery, Look-Locker); False fits the data as
        they are (k = 0 only).

    Returns
    -------
    MagnitudeFit
        Coefficients, T, residual, null position and bound flags per pixel.
    """
    magnitude, ti = _check_series(magnitude, ti)
    if not 0 < t_range[0] < t_range[1] or n_grid < 3:
        raise ValueError(f"need 0 < t_min < t_max and n_grid >= 3, got {t_range}, {n_grid}")
    spatial = magnitude.shape[1:]
    order = torch.argsort(ti)
    ti, y = ti[order], magnitude.reshape(len(ti), -1)[order]
    n_ti = len(ti)
    patterns = n_ti if restore_polarity else 1
    log_min, log_max = math.log(t_range[0]), math.log(t_range[1])
    coarse = torch.linspace(log_min, log_max, n_grid, dtype=ti.dtype)
    prefix_y = torch.cat([torch.zeros_like(y[:1]), y.cumsum(0)])[:patterns]
    step = coarse[1] - coarse[0]
    g_best, _ = _search(ti, y, coarse[:, None].expand(-1, y.shape[1]), prefix_y)
    offsets = torch.linspace(-1, 1, 2 * _REFINE + 1, dtype=ti.dtype)
    fine = (coarse[g_best] + offsets[:, None] * step).clamp(log_min, log_max)
    f_best, k_best = _search(ti, y, fine, prefix_y)
    pixels = torch.arange(y.shape[1])
    inner = f_best.clamp(1, len(offsets) - 2)
    around = torch.stack(
        [
            _explained(ti, y, fine[inner + d, pixels], prefix_y).gather(0, k_best[None])[0]
            for d in (-1, 0, 1)
        ]
    )
    vertex = _parabola_vertex(around, fine[inner, pixels], offsets[1] * step - offsets[0] * step)
    at_bound = (fine[f_best, pixels] <= log_min) | (fine[f_best, pixels] >= log_max)
    t = torch.exp(torch.where(at_bound, fine[f_best, pixels], vertex.clamp(log_min, log_max)))
    a, b = _coefficients(ti, y, t, k_best)
    signed = torch.where(torch.arange(n_ti)[:, None] < k_best, -y, y)
    model = a + b * torch.exp(-ti[:, None] / t)
    residual = ((signed - model) ** 2).sum(0)
    at_bound = (g_best == 0) | (g_best == n_grid - 1)
    return MagnitudeFit(
        *(x.reshape(spatial) for x in (a, b, t, residual, k_best, at_bound)),
    )


def _search(
    ti: torch.Tensor, y: torch.Tensor, log_t: torch.Tensor, prefix_y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Index into the candidates ``log_t`` ``(C, M)`` and null position of the best fit."""
    best = torch.full(y.shape[1:], -math.inf, dtype=y.dtype)
    c_best = torch.zeros(y.shape[1:], dtype=torch.long)
    k_best = torch.zeros(y.shape[1:], dtype=torch.long)
    for c in range(len(log_t)):
        value, k = _explained(ti, y, log_t[c], prefix_y).max(0)
        better = value > best
        best = torch.where(better, value, best)
        c_best = torch.where(better, c, c_best)
        k_best = torch.where(better, k, k_best)
    return c_best, k_best


def _explained(
    ti: torch.Tensor, y: torch.Tensor, log_t: torch.Tensor, prefix_y: torch.Tensor
) -> torch.Tensor:
    """u^T (B^T B)^-1 u for every null position at a per-pixel T: ``(patterns, M)``.

    ``log_t`` ``(M,)``. B = [1, e] with e = exp(-TI/T); u = B^T s for the signed data s (the
    first k samples negated), so u = (sum y - 2 prefix_k(y), sum e y - 2 prefix_k(e y)), from
    prefix sums. The residual of the fit is ||y||^2 minus this.
    """
    e = torch.exp(-ti[:, None] / torch.exp(log_t))
    ey = e * y
    prefix_ey = torch.cat([torch.zeros_like(ey[:1]), ey.cumsum(0)])[: len(prefix_y)]
    u = y.sum(0) - 2 * prefix_y
    v = ey.sum(0) - 2 * prefix_ey
    n, se, see = len(ti), e.sum(0), (e * e).sum(0)
    return (see * u * u - 2 * se * u * v + n * v * v) / (n * see - se * se)


def _parabola_vertex(
    values: torch.Tensor, centre: torch.Tensor, step: torch.Tensor
) -> torch.Tensor:
    """Abscissa of the maximum of the parabola through ``values`` ``(3, M)``.

    The three values are taken at ``centre - step``, ``centre``, ``centre + step``, with
    ``centre`` ``(M,)``.
    """
    left, middle, right = values
    curvature = left - 2 * middle + right
    shift = torch.where(curvature < 0, 0.5 * (left - right) / curvature.clamp(max=-1e-300), 0)
    return centre + shift.clamp(-1, 1) * step


def _coefficients(
    ti: torch.Tensor, y: torch.Tensor, t: torch.Tensor, k: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares (a, b) of the signed data at T ``(M,)``, null position ``k`` ``(M,)``."""
    e = torch.exp(-ti[:, None] / t)
    s = torch.where(torch.arange(len(ti))[:, None] < k, -y, y)
    n, se, see = len(ti), e.sum(0), (e * e).sum(0)
    u, v = s.sum(0), (e * s).sum(0)
    det = n * see - se * se
    return (see * u - se * v) / det, (n * v - se * u) / det
