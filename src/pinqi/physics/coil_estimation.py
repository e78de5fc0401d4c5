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


def align_phase(maps: torch.Tensor, coil_images: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Move the image's smooth phase into the coil maps: c exp(i phi), phi = angle of S(c^H x).

    The split of a complex signal into sensitivity and image is unique only up to a phase per
    pixel: c y = (c exp(i phi)) (y exp(-i phi)). Walsh maps take the phase of one coil, so the
    images they imply carry that coil's phase, which can span +-pi across the field of view;
    pinqi's training images have a nearly real M0. With phi the phase of the coil-combined
    ``coil_images`` (smoothed over ``window`` pixels), the implied images are nearly real
    again, and the k-space model A y is unchanged.

    Parameters
    ----------
    maps
        Complex sensitivities ``(batch, n_coils, H, W)``.
    coil_images
        Complex coil images ``(batch, n_coils, H, W)`` (e.g. :func:`calibration_images`).
    window
        Odd smoothing window in pixels.
    """
    coil_images = _check_inputs(coil_images, window)
    combined = _box_filter((maps.conj() * coil_images).sum(1, keepdim=True), window)
    return maps * torch.exp(1j * combined.angle())


def calibration_images(
    kspace: torch.Tensor, mask: torch.Tensor, frame: int = -1, lines: str = "union"
) -> torch.Tensor:
    """Low-resolution coil images from the k-space centre.

    ``ifft2c`` of :func:`calibration_kspace` (same arguments).

    Returns
    -------
    torch.Tensor
        Complex coil images ``(batch, n_coils, H, W)``.
    """
    return ifft2c(calibration_kspace(kspace, mask, frame, lines))


def calibration_kspace(
    kspace: torch.Tensor, mask: torch.Tensor, frame: int = -1, lines: str = "union"
) -> torch.Tensor:
    """The fully sampled k-space centre the data offer for coil calibration.

    Parameters
    ----------
    kspace
        ``(batch, n_tau, n_coils, H, W)``, zero where not sampled.
    mask
        Broadcastable to ``(batch, n_tau, H, W)``, phase-encoding lines along W.
    frame
        With ``lines="common"``: the frame whose data are used (default: the last).
    lines
        ``"union"`` (default): the time-averaged k-space centre. Every phase-encoding line
        sampled by any frame is averaged over the frames that sampled it (each frame first
        scaled to the same energy on the lines all frames share, so that the contrasts mix
        evenly), and the widest band of consecutive covered lines around the centre is kept:
        with per-frame random masks this band is several times wider than the lines all
        frames share. ``"common"``: only the lines sampled in every frame, from ``frame``.

    Returns
    -------
    torch.Tensor
        Complex k-space ``(batch, n_coils, H, W)``, zero outside the calibration lines.
    """
    mask = mask.to(torch.bool)
    common = mask.all(1)
    if not bool(common.any()):
        raise ValueError("the masks have no k-space lines in common to calibrate from")
    if lines == "common":
        return kspace[:, frame] * common.unsqueeze(1)
    if lines != "union":
        raise ValueError(f"lines must be 'union' or 'common', got {lines!r}")
    shared = common.unsqueeze(1).unsqueeze(2)
    energy = (kspace * shared).abs().square().flatten(2).sum(-1)  # (batch, n_tau)
    weights = (energy[:, -1:] / energy.clamp(min=torch.finfo(energy.dtype).tiny)).sqrt()
    sampled = mask.expand(kspace.shape[0], kspace.shape[1], *mask.shape[2:]).to(kspace.real.dtype)
    count = sampled.sum(1)
    average = (kspace * weights[..., None, None, None]).sum(1) / count.clamp(min=1).unsqueeze(1)
    return average * _central_band(count > 0).unsqueeze(1)


def calibration_width(calibration: torch.Tensor) -> int:
    """Width in lines along W of the fully sampled band symmetric about W // 2.

    ``calibration`` is k-space ``(batch, n_coils, H, W)`` (:func:`calibration_kspace`); the
    smallest width over the batch is returned, 0 if a centre line is missing.
    """
    lines = (calibration != 0).flatten(1, 2).any(1)  # (batch, W)
    centre, width = lines.shape[-1] // 2, lines.shape[-1]
    inside = lines[:, centre]
    half = torch.zeros_like(inside, dtype=torch.long)
    for offset in range(1, min(centre, width - 1 - centre) + 1):
        inside = inside & lines[:, centre - offset] & lines[:, centre + offset]
        half += inside.long()
    return 0 if not bool(lines[:, centre].all()) else int(2 * half.min() + 1)


def _central_band(covered: torch.Tensor) -> torch.Tensor:
    """The consecutive covered positions along W around the centre, per batch element.

    ``covered`` bool ``(batch, H or 1, W)``; returns the same shape, True inside the band.
    """
    lines = covered.any(-2)  # (batch, W)
    width = lines.shape[-1]
    centre = width // 2
    index = torch.arange(width, device=lines.device)
    gaps = ~lines
    left = torch.where(gaps & (index < centre), index, -1).amax(-1, keepdim=True)
    right = torch.where(gaps & (index > centre), index, width).amin(-1, keepdim=True)
    band = (index > left) & (index < right) & lines[:, centre : centre + 1]
    return band.unsqueeze(-2).expand_as(covered)
