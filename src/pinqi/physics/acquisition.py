"""The multi-coil Cartesian acquisition operator A = S F C (paper Eq. 1).

Shapes: images complex ``(batch, n_tau, H, W)``; k-space complex
``(batch, n_tau, n_coils, H, W)``; coil maps complex ``(batch, n_coils, H, W)``; sampling mask
real or bool, broadcastable to ``(batch, n_tau, H, W)`` (e.g. ``(batch, n_tau, 1, W)`` for
whole phase-encoding lines along W).
"""

from __future__ import annotations

import torch

from pinqi._checks import (
    check_broadcastable,
    check_complex,
    check_tensor,
    real_dtype_of,
)
from pinqi.physics.fft import fft1c, fft2c, ifft1c, ifft2c


def check_mask(mask: object, shape: tuple[int, int, int, int], dtype: torch.dtype) -> torch.Tensor:
    """Validate a sampling mask and return it as a real tensor of ``dtype``.

    Parameters
    ----------
    mask
        Bool or 0/1 real tensor broadcastable to ``shape`` = ``(batch, n_tau, H, W)``.
    shape
        The image shape the mask must broadcast to.
    dtype
        Real dtype of the returned mask.
    """
    mask = check_tensor("mask", mask)
    if mask.is_complex():
        raise ValueError(f"mask must be bool or real, got dtype {mask.dtype}")
    check_broadcastable("mask", mask, shape, "(batch, n_tau, H, W)")
    mask = mask.to(dtype)
    if not bool(torch.isfinite(mask).all()):
        raise ValueError("mask contains NaN or Inf values")
    if bool(((mask != 0) & (mask != 1)).any()):
        raise ValueError("mask must hold only 0 (not sampled) and 1 (sampled)")
    per_frame = mask.flatten(2).sum(-1)
    if bool((per_frame == 0).any()):
        raise ValueError("mask samples nothing in at least one frame (an all-zero mask)")
    return mask


class CartesianAcquisition:
    """Undersampled multi-coil Cartesian Fourier encoding, A y = S F (C y), per frame.

    Parameters
    ----------
    coil_maps
        Complex coil sensitivities ``(batch, n_coils, H, W)``. Not required to be normalized.
    mask
        Sampling mask of 0/1 values (bool or real), broadcastable to ``(batch, n_tau, H, W)``.
        A mask that is constant along H (shape ``(..., 1, W)``) marks whole phase-encoding
        lines along W; then :meth:`gram` needs FFTs along W only.

    Notes
    -----
    F is the centered orthonormal 2D FFT, so A^H A has eigenvalues in [0, max|C|^2 * max S].
    The operator is differentiable by autograd in its input and in ``coil_maps``.
    """

    def __init__(self, coil_maps: torch.Tensor, mask: torch.Tensor) -> None:
        coil_maps = check_complex("coil_maps", coil_maps, 4, "(batch, n_coils, H, W)")
        energy = (coil_maps.detach().abs() ** 2).sum(1)
        if bool((energy.flatten(1).amax(1) == 0).any()):
            raise ValueError("coil_maps are zero everywhere for at least one batch element")
        mask = check_tensor("mask", mask)
        if mask.ndim != 4:
            raise ValueError(
                f"mask must have 4 dims broadcastable to (batch, n_tau, H, W), got shape "
                f"{tuple(mask.shape)}"
            )
        batch, _, height, width = coil_maps.shape
        n_tau = mask.shape[1]
        self.coil_maps = coil_maps
        self.mask = check_mask(mask, (batch, n_tau, height, width), real_dtype_of(coil_maps.dtype))
        self.image_shape = (batch, n_tau, height, width)
        self.lines_along_w = self.mask.shape[-2] == 1

    @property
    def kspace_shape(self) -> tuple[int, int, int, int, int]:
        """Shape of the k-space ``(batch, n_tau, n_coils, H, W)``."""
        batch, n_tau, height, width = self.image_shape
        return batch, n_tau, self.coil_maps.shape[1], height, width

    def check_images(self, name: str, y: object) -> torch.Tensor:
        """Validate complex images of shape ``(batch, n_tau, H, W)`` for this operator."""
        y = check_complex(name, y, 4, "(batch, n_tau, H, W)")
        if tuple(y.shape) != self.image_shape:
            raise ValueError(
                f"{name} has shape {tuple(y.shape)} but the acquisition expects images "
                f"(batch, n_tau, H, W) = {self.image_shape}"
            )
        return y

    def check_kspace(self, name: str, k: object) -> torch.Tensor:
        """Validate complex k-space of shape ``(batch, n_tau, n_coils, H, W)``."""
        k = check_complex(name, k, 5, "(batch, n_tau, n_coils, H, W)")
        if tuple(k.shape) != self.kspace_shape:
            raise ValueError(
                f"{name} has shape {tuple(k.shape)} but coil_maps and mask imply "
                f"(batch, n_tau, n_coils, H, W) = {self.kspace_shape}"
            )
        return k

    def _coil_mask(self) -> torch.Tensor:
        return self.mask.unsqueeze(2)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """Apply A: images ``(batch, n_tau, H, W)`` -> k-space ``(batch, n_tau, n_coils, H, W)``."""
        coil_images = y.unsqueeze(2) * self.coil_maps.unsqueeze(1)
        return self._coil_mask() * fft2c(coil_images)

    __call__ = forward

    def adjoint(self, k: torch.Tensor) -> torch.Tensor:
        """Apply A^H: k-space ``(batch, n_tau, n_coils, H, W)`` -> images ``(batch, n_tau, H, W)``.

        With a 0/1 mask, A^H applies the mask again (S^H = S = S^2).
        """
        coil_images = ifft2c(self._coil_mask() * k)
        return (self.coil_maps.conj().unsqueeze(1) * coil_images).sum(2)

    def gram(self, y: torch.Tensor) -> torch.Tensor:
        """Apply A^H A to images ``(batch, n_tau, H, W)``.

        For masks of whole lines along W, the FFT along H cancels (F_H^H F_H = I), so only
        1D FFTs along W are needed.
        """
        coil_images = y.unsqueeze(2) * self.coil_maps.unsqueeze(1)
        mask = self._coil_mask()
        if self.lines_along_w:
            coil_images = ifft1c(mask * fft1c(coil_images, dim=-1), dim=-1)
        else:
            coil_images = ifft2c(mask * fft2c(coil_images))
        return (self.coil_maps.conj().unsqueeze(1) * coil_images).sum(2)
