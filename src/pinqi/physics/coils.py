"""Simulated receiver coil sensitivities."""

from __future__ import annotations

import math

import torch

from pinqi._checks import complex_dtype_of


def birdcage_maps(
    n_coils: int,
    shape: tuple[int, int],
    rotation: float | torch.Tensor | None = None,
    *,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    radius: float = 1.6,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Bird-cage-like coil sensitivity maps with a random orientation (paper Sec. 2.1, 3.1.1).

    ``n_coils`` loop coils sit evenly spaced on a circle around the field of view, the whole
    array turned by ``rotation``. Coil c at angle theta_c has the sensitivity
    ``exp(i phi_c(r)) / |r - r_c|``, where ``phi_c`` is the azimuth of the pixel seen from the
    coil relative to theta_c (the circularly polarised B1 pattern of a birdcage mode). The maps
    are normalized by their root-sum-of-squares, so ``sum_c |c|^2 = 1`` at every pixel.

    Parameters
    ----------
    n_coils
        Number of coils, >= 1.
    shape
        Image size ``(H, W)`` in pixels.
    rotation
        Orientation of the array in radians: a float, a ``(batch,)`` tensor, or None to draw
        one angle per batch element uniformly in [0, 2 pi) from ``generator``.
    batch_size
        Number of maps to return when ``rotation`` is None or a float (default 1).
    generator
        Seeded generator of the random orientation; required when ``rotation`` is None.
    radius
        Radius of the coil circle relative to half the field of view; > sqrt(2), so that the
        coils lie outside the square field of view, corners included.
    dtype
        Real dtype; the maps have the matching complex dtype.
    device
        Device of the result.

    Returns
    -------
    torch.Tensor
        Complex coil maps ``(batch, n_coils, H, W)``.
    """
    if not isinstance(n_coils, int) or n_coils < 1:
        raise ValueError(f"n_coils must be a positive integer, got {n_coils!r}")
    if len(shape) != 2 or any(not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"shape must be (H, W) with positive integers, got {shape!r}")
    if not radius > math.sqrt(2):
        raise ValueError(
            f"radius must be > sqrt(2) (coils outside the field of view), got {radius}"
        )
    if rotation is None:
        if generator is None:
            raise ValueError("birdcage_maps needs a rotation or a seeded generator to draw one")
        n = 1 if batch_size is None else batch_size
        angle = 2 * math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
    else:
        angle = torch.as_tensor(rotation, dtype=torch.float64).reshape(-1)
        if batch_size is not None and angle.numel() == 1:
            angle = angle.expand(batch_size)
        if not bool(torch.isfinite(angle).all()):
            raise ValueError("rotation must be finite (radians)")
    height, width = shape
    half = max(height, width) / 2
    y = (torch.arange(height, dtype=torch.float64) - height / 2 + 0.5) / half
    x = (torch.arange(width, dtype=torch.float64) - width / 2 + 0.5) / half
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    theta = angle[:, None] + 2 * math.pi * torch.arange(n_coils, dtype=torch.float64) / n_coils
    cy = radius * torch.sin(theta)[..., None, None]
    cx = radius * torch.cos(theta)[..., None, None]
    dy, dx = yy - cy, xx - cx
    phase = torch.atan2(dy, dx) - theta[..., None, None]
    maps = torch.polar(1 / torch.sqrt(dx * dx + dy * dy), phase)
    maps = maps / torch.sqrt((maps.abs() ** 2).sum(1, keepdim=True))
    return maps.to(device=device, dtype=complex_dtype_of(dtype))
