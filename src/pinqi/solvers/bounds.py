"""Box bounds on the parameters as an invertible trigonometric variable transform."""

from __future__ import annotations

from collections.abc import Sequence

import torch


class TrigBounds:
    """Map unconstrained z to x in the open box (lower, upper): x = c + h sin(z).

    With c = (lower + upper) / 2 and h = (upper - lower) / 2 (Gill, Murray and Wright, the
    transform of the paper's Sec. 3.2). :meth:`unconstrain` is its inverse on the principal
    branch z in [-pi/2, pi/2]; points on or outside the box are first moved a relative
    ``margin`` inside it.

    Parameters
    ----------
    bounds
        ``(lower, upper)`` per parameter, ``P`` pairs, ``lower < upper``.
    margin
        Relative distance from the bounds that :meth:`unconstrain` keeps.
    """

    def __init__(self, bounds: Sequence[tuple[float, float]], margin: float = 1e-6) -> None:
        if any(not lo < hi for lo, hi in bounds):
            raise ValueError(f"every bound needs lower < upper, got {list(bounds)}")
        self.bounds = tuple((float(lo), float(hi)) for lo, hi in bounds)
        self.margin = margin

    def box(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Lower and upper bounds shaped ``(1, P, 1, ...)`` on the device and dtype of ``like``."""
        shape = (1, -1, *(1,) * (like.ndim - 2))
        lower, upper = torch.tensor(self.bounds, dtype=like.dtype, device=like.device).unbind(1)
        return lower.reshape(shape), upper.reshape(shape)

    def _centre_half(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lower, upper = self.box(like)
        return (lower + upper) / 2, (upper - lower) / 2

    def constrain(self, z: torch.Tensor) -> torch.Tensor:
        """Map z ``(batch, P, ...)`` into the box."""
        centre, half = self._centre_half(z)
        return centre + half * torch.sin(z)

    def unconstrain(self, x: torch.Tensor, margin: float | None = None) -> torch.Tensor:
        """Inverse of :meth:`constrain` for x ``(batch, P, ...)``, clamped into the box.

        ``margin`` overrides the relative distance kept from the bounds; 0 maps a point on a
        bound to z = +-pi/2 exactly.
        """
        margin = self.margin if margin is None else margin
        centre, half = self._centre_half(x)
        s = torch.clamp((x - centre) / half, -1 + margin, 1 - margin)
        return torch.asin(s)

    def derivative(self, z: torch.Tensor) -> torch.Tensor:
        """dx/dz = h cos(z), ``(batch, P, ...)``."""
        _, half = self._centre_half(z)
        return half * torch.cos(z)
