"""Centered, orthonormal discrete Fourier transforms over the last image axes."""

from __future__ import annotations

import torch


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centered orthonormal 2D FFT over the last two axes (k-space centre at ``(H//2, W//2)``)."""
    dims = (-2, -1)
    x = torch.fft.ifftshift(x, dim=dims)
    return torch.fft.fftshift(torch.fft.fft2(x, dim=dims, norm="ortho"), dim=dims)


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`fft2c` (its adjoint, since the transform is unitary)."""
    dims = (-2, -1)
    k = torch.fft.ifftshift(k, dim=dims)
    return torch.fft.fftshift(torch.fft.ifft2(k, dim=dims, norm="ortho"), dim=dims)


def centered_fft(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Centered orthonormal 1D FFT along ``dim`` (k-space centre at index ``n // 2``)."""
    x = torch.fft.ifftshift(x, dim=dim)
    return torch.fft.fftshift(torch.fft.fft(x, dim=dim, norm="ortho"), dim=dim)


def centered_ifft(k: torch.Tensor, dim: int) -> torch.Tensor:
    """Inverse (and adjoint) of :func:`centered_fft`."""
    k = torch.fft.ifftshift(k, dim=dim)
    return torch.fft.fftshift(torch.fft.ifft(k, dim=dim, norm="ortho"), dim=dim)
