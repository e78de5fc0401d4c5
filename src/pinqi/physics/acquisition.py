"""The multi-coil Cartesian acquisition operator A = S F C (paper Eq. 1).

Shapes: images complex ``(batch, n_tau, H, W)``; k-space complex
``(batch, n_tau, n_coils, H, W)``; coil maps complex ``(batch, n_coils, H, W)``; sampling mask
real or bool, broadcastable to ``(batch, n_tau, H, W)`` (e.g. ``(batch, n_tau, 1, W)`` for
whole phase-encoding lines along W).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

import torch

from pinqi._checks import (
    check_broadcastable,
    check_complex,
    check_tensor,
    real_dtype_of,
    require,
)
from pinqi.physics.fft import fft2c, ifft2c


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
    require(torch.isfinite(mask).all(), "mask contains NaN or Inf values")
    require(
        ((mask == 0) | (mask == 1)).all(), "mask must hold only 0 (not sampled) and 1 (sampled)"
    )
    require(
        (mask.flatten(2).sum(-1) > 0).all(),
        "mask samples nothing in at least one frame (an all-zero mask)",
    )
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
        require(
            (energy.flatten(1).amax(1) > 0).all(),
            "coil_maps are zero everywhere for at least one batch element",
        )
        mask = check_tensor("mask", mask)
        if mask.ndim != 4:
            raise ValueError(
                f"mask must have 4 dims broadcastable to (batch, n_tau, H, W), got shape "
                f"{tuple(mask.shape)}"
            )
        batch, _, height, width = coil_maps.shape
        shape = (batch, mask.shape[1], height, width)
        self._set(coil_maps, check_mask(mask, shape, real_dtype_of(coil_maps.dtype)))

    def _set(self, coil_maps: torch.Tensor, mask: torch.Tensor) -> None:
        batch, _, height, width = coil_maps.shape
        self.coil_maps = coil_maps
        self.mask = mask
        self.image_shape = (batch, mask.shape[1], height, width)
        self._gram_mask = torch.fft.ifftshift(mask, dim=(-2, -1))
        #: Process all frames in one batched call also on the CPU (the path of GPUs).
        self.frames_at_once = False

    @classmethod
    def unchecked(cls, coil_maps: torch.Tensor, mask: torch.Tensor) -> CartesianAcquisition:
        """The operator of already validated inputs, without checks or host synchronisation.

        For use inside layers and networks that validated ``coil_maps`` and ``mask`` once at
        their public entry point; ``mask`` must already be the real 0/1 :attr:`mask` of a
        checked operator.
        """
        acquisition = cls.__new__(cls)
        acquisition._set(coil_maps, mask)
        return acquisition

    @cached_property
    def coil_maps_conj(self) -> torch.Tensor:
        """conj(coil maps) ``(batch, n_coils, H, W)``, materialised once per operator.

        A lazily conjugated tensor (``Tensor.conj``) is copied again in every product with it;
        the adjoint and the Gram operator use this one copy instead.
        """
        return self.coil_maps.conj().resolve_conj()

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

    def _per_frame(
        self,
        frame_op: Callable[..., torch.Tensor],
        mask: torch.Tensor,
        *xs: torch.Tensor,
    ) -> torch.Tensor:
        """Apply ``frame_op(coil_maps, coil_maps_conj, mask, *xs)`` per frame of ``xs``.

        ``xs`` are ``(batch, n_tau, ...)``.

        On the CPU the frames are processed one at a time, which keeps the coil images of a
        frame in cache and is several times faster than one batched call; elsewhere (or with
        :attr:`frames_at_once`) the whole batch goes through ``frame_op`` at once, with
        coil maps ``(batch, 1, n_coils, H, W)`` and the mask ``(batch, n_tau, H or 1, W)``
        broadcast like one frame's.
        """
        maps = (self.coil_maps, self.coil_maps_conj)
        if self.frames_at_once or xs[0].device.type != "cpu":
            return frame_op(*(m.unsqueeze(1) for m in maps), mask, *xs)
        batch, n_tau = xs[0].shape[:2]
        frames = [
            frame_op(
                *(m[b] for m in maps),
                mask[min(b, mask.shape[0] - 1), min(t, mask.shape[1] - 1)],
                *(x[b, t] for x in xs),
            )
            for b in range(batch)
            for t in range(n_tau)
        ]
        return torch.stack(frames).reshape(batch, n_tau, *frames[0].shape)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """Apply A: images ``(batch, n_tau, H, W)`` -> k-space ``(batch, n_tau, n_coils, H, W)``."""
        return self._per_frame(_forward_frames, self.mask, y)

    __call__ = forward

    def adjoint(self, k: torch.Tensor) -> torch.Tensor:
        """Apply A^H: k-space ``(batch, n_tau, n_coils, H, W)`` -> images ``(batch, n_tau, H, W)``.

        With a 0/1 mask, A^H applies the mask again (S^H = S = S^2).
        """
        return self._per_frame(_adjoint_frames, self.mask, k)

    def gram(self, y: torch.Tensor) -> torch.Tensor:
        """Apply A^H A to images ``(batch, n_tau, H, W)``.

        Per frame, A^H A = sum_c conj(c) F_c^H S F_c c with the centered FFT F_c. Since
        F^H S F is a circular convolution, it commutes with the centering shifts, so
        F_c^H S F_c = F^H S' F with S' the ifftshift-ed mask: no shifts are needed. For masks
        of whole lines along W, the FFT along H cancels as well (1D FFTs along W only).
        """
        return self._per_frame(_gram_frames, self._gram_mask, y)

    def coil_map_gradient(
        self, y: torch.Tensor, g: torch.Tensor, kspace: torch.Tensor | None
    ) -> torch.Tensor:
        """Gradient of Re <g, A^H (k - A y)> with respect to the coil maps (paper Eq. 18).

        This is the coil-map part of the implicit backward of data consistency, for the
        solution ``y`` and the adjoint solution ``g``:
        -sum_tau [F^H (A_j y - S k_j) conj(g) + F^H (A_j g) conj(y)] per coil j, in PyTorch's
        convention for complex gradients (dL/dRe + i dL/dIm).

        Parameters
        ----------
        y, g
            Complex images ``(batch, n_tau, H, W)``.
        kspace
            Complex k-space ``(batch, n_tau, n_coils, H, W)``; None leaves out its term (the
            gradient of -Re <g, A^H A y> only, for a caller that differentiates A^H k itself).

        Returns
        -------
        torch.Tensor
            Complex ``(batch, n_coils, H, W)``.
        """
        if kspace is None:
            return self._per_frame(_coil_map_gradient_frames, self._gram_mask, y, g).sum(1)
        return self._per_frame(_coil_map_gradient_frames, self.mask, y, g, kspace).sum(1)


def _forward_frames(
    coil_maps: torch.Tensor, coil_maps_conj: torch.Tensor, mask: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """A of images ``(..., H, W)``, coil maps ``(..., n_coils, H, W)``, centered mask."""
    return mask.unsqueeze(-3) * fft2c(y.unsqueeze(-3) * coil_maps)


def _adjoint_frames(
    coil_maps: torch.Tensor, coil_maps_conj: torch.Tensor, mask: torch.Tensor, k: torch.Tensor
) -> torch.Tensor:
    """A^H of k-space ``(..., n_coils, H, W)``."""
    return (coil_maps_conj * ifft2c(mask.unsqueeze(-3) * k)).sum(-3)


def _projected_coil_images(
    coil_maps: torch.Tensor, gram_mask: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """F^H S F (c y) per coil ``(..., n_coils, H, W)`` with the ifftshift-ed mask (no shifts).

    A mask of one row (``(..., 1, W)``: whole lines along W) needs FFTs along W only, since
    the FFT along H cancels.
    """
    coil_images = y.unsqueeze(-3) * coil_maps
    mask = gram_mask.unsqueeze(-3)
    if gram_mask.shape[-2] == 1:
        kspace = torch.fft.fft(coil_images, dim=-1, norm="ortho")
        return torch.fft.ifft(mask * kspace, dim=-1, norm="ortho")
    return torch.fft.ifft2(mask * torch.fft.fft2(coil_images, norm="ortho"), norm="ortho")


def _gram_frames(
    coil_maps: torch.Tensor, coil_maps_conj: torch.Tensor, gram_mask: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """A^H A of images ``(..., H, W)`` with the ifftshift-ed mask (see ``gram``)."""
    return (coil_maps_conj * _projected_coil_images(coil_maps, gram_mask, y)).sum(-3)


def _coil_map_gradient_frames(
    coil_maps: torch.Tensor,
    coil_maps_conj: torch.Tensor,
    mask: torch.Tensor,
    y: torch.Tensor,
    g: torch.Tensor,
    kspace: torch.Tensor | None = None,
) -> torch.Tensor:
    """One frame of :meth:`CartesianAcquisition.coil_map_gradient`: (..., n_coils, H, W).

    Without ``kspace``, ``mask`` is the ifftshift-ed mask of :meth:`CartesianAcquisition.gram`
    and F^H S F needs no shifts (and FFTs along W only for whole lines); with it, the centered
    mask.
    """
    g_conj, y_conj = g.conj().resolve_conj().unsqueeze(-3), y.conj().resolve_conj().unsqueeze(-3)
    if kspace is None:
        return -(
            _projected_coil_images(coil_maps, mask, y) * g_conj
            + _projected_coil_images(coil_maps, mask, g) * y_conj
        )
    residual = _forward_frames(coil_maps, coil_maps_conj, mask, y) - mask.unsqueeze(-3) * kspace
    a_g = _forward_frames(coil_maps, coil_maps_conj, mask, g)
    return -(ifft2c(residual) * g_conj + ifft2c(a_g) * y_conj)
