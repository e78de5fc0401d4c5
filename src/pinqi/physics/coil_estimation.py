"""Estimation of coil sensitivities from data (paper Sec. 3.1.2: Walsh et al., ref. [44])."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pinqi._checks import check_complex
from pinqi.physics.fft import ifft2c


def _box_filter(x: torch.Tensor, window: int) -> torch.Tensor:
    """Mean over ``window x window`` neighbourhoods of complex ``(..., H, W)`` (same size)."""
    shape = x.shape
    flat = torch.view_as_real(x).movedim(-1, -3).reshape(-1, 2, *shape[-2:])
    smooth = F.avg_pool2d(flat, window, stride=1, padding=window // 2, count_include_pad=False)
    return torch.view_as_complex(
        smooth.reshape(*shape[:-2], 2, *shape[-2:]).movedim(-3, -1).contiguous()
    )


def _check_inputs(coil_images: object, window: int) -> torch.Tensor:
    """Validate coil images ``(batch, n_coils, H, W)`` and an odd window size."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd number of pixels, got {window}")
    return check_complex("coil_images", coil_images, 4, "(batch, n_coils, H, W)")


def _normalise(maps: torch.Tensor) -> torch.Tensor:
    """sum_c |c|^2 = 1 per pixel, phase relative to the coil with the most energy."""
    reference = (maps.abs() ** 2).flatten(-2).sum(-1).argmax(-1)
    ref = torch.gather(
        maps, -3, reference[..., None, None, None].expand(*maps.shape[:-3], 1, *maps.shape[-2:])
    )
    maps = maps * torch.exp(-1j * ref.angle())
    return maps / torch.sqrt((maps.abs() ** 2).sum(-3, keepdim=True)).clamp(min=1e-12)


def walsh_maps(coil_images: torch.Tensor, window: int = 7, iterations: int = 12) -> torch.Tensor:
    """Walsh's adaptive estimate: the dominant eigenvector of the local coil correlation.

    For each pixel, R = sum over a ``window x window`` neighbourhood of x x^H (x: the coil
    images); the sensitivities are its dominant eigenvector (power iteration), normalised to
    sum_c |c|^2 = 1 with the phase of the strongest coil removed (the eigenvector is defined
    only up to a phase per pixel).

    Parameters
    ----------
    coil_images
        Complex ``(batch, n_coils, H, W)``.
    window
        Odd neighbourhood size in pixels.
    iterations
        Power iterations.

    Returns
    -------
    torch.Tensor
        Complex ``(batch, n_coils, H, W)``.
    """
    coil_images = _check_inputs(coil_images, window)
    correlation = _box_filter(coil_images[:, :, None] * coil_images[:, None].conj(), window)
    vector = correlation.sum(2)  # a start with the right phase structure
    for _ in range(iterations):
        vector = torch.einsum("bijhw,bjhw->bihw", correlation, vector)
        vector = vector / torch.sqrt((vector.abs() ** 2).sum(1, keepdim=True)).clamp(min=1e-30)
    return _normalise(vector)


def ratio_maps(coil_images: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Sensitivities as smoothed coil images over their root-sum-of-squares.

    The classic low-resolution estimate: c = S(x_c) / sqrt(sum_c |S(x_c)|^2) with S a
    ``window``-pixel box filter, phase relative to the strongest coil.

    Parameters
    ----------
    coil_images
        Complex ``(batch, n_coils, H, W)``.
    window
        Odd smoothing window in pixels.
    """
    coil_images = _check_inputs(coil_images, window)
    return _normalise(_box_filter(coil_images, window))


def calibration_images(kspace: torch.Tensor, mask: torch.Tensor, frame: int = -1) -> torch.Tensor:
    """Low-resolution coil images from the fully sampled k-space centre of one frame.

    The phase-encoding lines sampled in every frame (the always-sampled centre of the masks)
    are kept, the rest zeroed, and the result transformed back.

    Parameters
    ----------
    kspace
        ``(batch, n_tau, n_coils, H, W)``.
    mask
        Broadcastable to ``(batch, n_tau, H, W)``.
    frame
        Frame whose data are used (default: the last, the longest delay, as in the paper).
    """
    common = mask.to(torch.bool).all(1)
    if not bool(common.any()):
        raise ValueError("the masks have no k-space lines in common to calibrate from")
    return ifft2c(kspace[:, frame] * common.unsqueeze(1))
