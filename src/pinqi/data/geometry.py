"""Resampling of tissue-fraction slices onto the image grid, with geometric augmentation."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class SliceTransform:
    """A similarity transform of the field of view (identity by default).

    Attributes
    ----------
    rotation
        In-plane rotation in radians.
    scale
        Zoom factor (> 1 enlarges the anatomy).
    shift
        Translation ``(dy, dx)`` of the field of view in mm.
    flip_y, flip_x
        Mirror the image along y (rows) or x (columns).
    """

    rotation: float = 0.0
    scale: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)
    flip_y: bool = False
    flip_x: bool = False

    @classmethod
    def random(
        cls,
        generator: torch.Generator,
        max_rotation_deg: float,
        scale_range: tuple[float, float],
        max_shift_mm: float,
        flips: bool,
    ) -> SliceTransform:
        """A random transform: rotation U(-max, max), scale U(range), shift, flips p=0.5."""
        u = torch.rand(6, generator=generator, dtype=torch.float64).tolist()
        return cls(
            rotation=math.radians(max_rotation_deg) * (2 * u[0] - 1),
            scale=scale_range[0] + (scale_range[1] - scale_range[0]) * u[1],
            shift=(max_shift_mm * (2 * u[2] - 1), max_shift_mm * (2 * u[3] - 1)),
            flip_y=flips and u[4] < 0.5,
            flip_x=flips and u[5] < 0.5,
        )


def resample_fractions(
    fractions: torch.Tensor,
    spacing: tuple[float, float],
    size: int,
    fov_mm: float,
    transform: SliceTransform = SliceTransform(),
    oversampling: int = 3,
) -> torch.Tensor:
    """Resample per-class fractions of a slice onto a ``size x size`` grid covering ``fov_mm``.

    The grid is centred on the centre of mass of the non-background tissue. Each output pixel
    averages ``oversampling^2`` bilinear samples (area averaging), so boundaries get
    partial-volume fractions. Outside the input, the fractions are background.

    Parameters
    ----------
    fractions
        ``(n_classes, Y, X)``, class 0 = background, summing to 1 over the classes.
    spacing
        Input pixel size ``(dy, dx)`` in mm.
    size
        Output size in pixels.
    fov_mm
        Output field of view in mm (square).
    transform
        Geometric augmentation.
    oversampling
        Samples per output pixel and axis.

    Returns
    -------
    torch.Tensor
        ``(n_classes, size, size)`` fractions.
    """
    dtype = torch.float64
    n_in_y, n_in_x = fractions.shape[-2:]
    tissue = 1 - fractions[0].to(dtype)
    total = tissue.sum().clamp(min=1e-12)
    iy = torch.arange(n_in_y, dtype=dtype)
    ix = torch.arange(n_in_x, dtype=dtype)
    centre_y = float((tissue.sum(1) * iy).sum() / total) * spacing[0]
    centre_x = float((tissue.sum(0) * ix).sum() / total) * spacing[1]

    n = size * oversampling
    u = ((torch.arange(n, dtype=dtype) + 0.5) / n - 0.5) * fov_mm
    uy, ux = torch.meshgrid(u, u, indexing="ij")
    uy = -uy if transform.flip_y else uy
    ux = -ux if transform.flip_x else ux
    cos, sin = math.cos(transform.rotation), math.sin(transform.rotation)
    py = (cos * uy - sin * ux) / transform.scale + centre_y + transform.shift[0]
    px = (sin * uy + cos * ux) / transform.scale + centre_x + transform.shift[1]
    grid = torch.stack(
        [(2 * px / spacing[1] + 1) / n_in_x - 1, (2 * py / spacing[0] + 1) / n_in_y - 1], -1
    )
    sampled = F.grid_sample(
        fractions[None].to(torch.float32),
        grid[None].to(torch.float32),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )
    out = F.avg_pool2d(sampled, oversampling)[0]
    out[0] += (1 - out.sum(0)).clamp(min=0)
    return out
