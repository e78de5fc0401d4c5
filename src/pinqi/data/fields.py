"""Random smooth fields for augmentation: low-order polynomials and filtered noise."""

from __future__ import annotations

import math

import torch


def _unit_grid(shape: tuple[int, int], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Coordinates y, x in [-1, 1] of an image of ``shape``, each ``(H, W)``."""
    y = torch.linspace(-1, 1, shape[0], dtype=dtype)
    x = torch.linspace(-1, 1, shape[1], dtype=dtype)
    return torch.meshgrid(y, x, indexing="ij")


def random_polynomial(
    shape: tuple[int, int],
    scales: tuple[float, float, float],
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """A random 2D polynomial sum_{i,j<=2} c_ij x^i y^j on [-1, 1]^2.

    The coefficients are c_ij ~ U(-1, 1) sqrt(s_i s_j) with ``scales`` = (s_0, s_1, s_2), so
    ``s_k`` sets the variance of the terms of degree k per axis.

    Returns
    -------
    torch.Tensor
        ``(H, W)``.
    """
    y, x = _unit_grid(shape, dtype)
    s = torch.tensor(scales, dtype=dtype)
    coefficients = (2 * torch.rand(3, 3, generator=generator, dtype=dtype) - 1) * torch.sqrt(
        s[:, None] * s[None, :]
    )
    powers_x = torch.stack([torch.ones_like(x), x, x * x])
    powers_y = torch.stack([torch.ones_like(y), y, y * y])
    return torch.einsum("ij,ihw,jhw->hw", coefficients, powers_x, powers_y)


def smooth_noise(
    shape: tuple[int, int],
    generator: torch.Generator,
    width: tuple[float, float] = (1 / 12, 1 / 6),
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Gaussian-filtered white noise, standardised to zero mean and unit standard deviation.

    Parameters
    ----------
    shape
        ``(H, W)``.
    generator
        Source of the noise and of the filter widths.
    width
        Range of the Gaussian filter's standard deviation per axis, relative to min(H, W).

    Returns
    -------
    torch.Tensor
        ``(H, W)``.
    """
    noise = torch.rand(shape, generator=generator, dtype=dtype) - 0.5
    low, high = width
    sigma = (low + (high - low) * torch.rand(2, generator=generator, dtype=dtype)) * min(shape)
    fy = torch.fft.fftfreq(shape[0], dtype=dtype)[:, None]
    fx = torch.fft.fftfreq(shape[1], dtype=dtype)[None, :]
    response = torch.exp(-2 * math.pi**2 * ((sigma[0] * fy) ** 2 + (sigma[1] * fx) ** 2))
    field = torch.fft.ifft2(torch.fft.fft2(noise) * response).real
    return (field - field.mean()) / field.std().clamp(min=torch.finfo(dtype).tiny)
