"""Retrospective undersampling of reconstructed image series (real data without raw k-space).

The standard way to test the transfer to real data when no raw k-space exists: simulated
bird-cage coils and the training mask generator are applied to measured multi-delay images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pinqi.data.simulation import SimulationConfig
from pinqi.io.grid import SourceGrid
from pinqi.io.series import ImageSeries
from pinqi.physics import CartesianAcquisition, birdcage_maps, variable_density_mask

#: The intensity normalisation maps this percentile of |image| of the longest delay to 1.
NORMALISATION_PERCENTILE = 99.0


def series_images(series: ImageSeries) -> tuple[torch.Tensor, SourceGrid]:
    """Model images ``(n_tau, H, W)`` complex64 of a single-slice series, and its grid.

    Magnitude series get zero phase. The grid maps the images back onto the scan
    (:class:`~pinqi.io.grid.SourceGrid`).
    """
    grid_shape = series.grid
    if len(grid_shape) == 3 and grid_shape[2] == 1:
        grid_shape = grid_shape[:2]
    if len(grid_shape) != 2:
        raise ValueError(
            f"{series.source}: pinqi undersample takes one slice, the series has "
            f"{grid_shape[2]} (pick one, e.g. with nibabel, and write it as (x, y, delay))"
        )
    grid = SourceGrid(series.affine, grid_shape)
    voxels = series.images.reshape(len(series.images), *grid_shape)
    images = torch.from_numpy(grid.to_model(voxels)).to(torch.complex64)
    return images, grid


def normalise_intensity(images: torch.Tensor, longest: int) -> tuple[torch.Tensor, float]:
    """Scale images so that the 99th percentile of |image| of the longest delay is 1.

    Training data have |M0| <= ~1 with the brightest tissue (CSF) near 1, and at the longest
    delay (8 s) the signal is close to M0; this maps a scanner's arbitrary scale into that
    range. Returns the scaled images and the factor divided out.
    """
    reference = intensity_scale(images[longest].abs())
    return images / reference, reference


def intensity_scale(magnitude: torch.Tensor) -> float:
    """The normalisation factor: the 99th percentile of a magnitude image of the longest delay.

    Raises if it is zero (an empty image cannot be normalised).
    """
    scale = float(np.percentile(magnitude.numpy(), NORMALISATION_PERCENTILE))
    if not scale > 0:
        raise ValueError("the image of the longest delay is empty: cannot normalise intensity")
    return scale


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Complex images ``(n_tau, H, W)`` resampled to ``size x size`` (antialiased bilinear)."""
    parts = torch.stack([images.real, images.imag], 1)
    out = F.interpolate(
        parts, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return torch.complex(out[:, 0], out[:, 1])


@dataclass
class RealSample:
    """One sample of real data (no ground truth), a sequence for :func:`~.datasets.write_h5`."""

    sample: dict[str, torch.Tensor]
    config: SimulationConfig
    seed: int
    split: str = "real"

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.sample


def undersample(
    images: torch.Tensor, tau: list[float], config: SimulationConfig, seed: int
) -> tuple[dict[str, torch.Tensor], float]:
    """Simulated coils and masks applied to measured images; no noise is added.

    Parameters
    ----------
    images
        ``(n_tau, H, W)`` complex, any scale.
    tau
        Delays in s, one per frame.
    config
        Size, coils and acceleration (as in training).
    seed
        Seed of the coil orientation and the masks.

    Returns
    -------
    sample
        ``kspace``, ``mask``, ``coil_maps``, ``tau`` and ``noise_sigma`` (0: unknown).
    scale
        The intensity normalisation factor that was divided out.
    """
    if len(tau) != images.shape[0]:
        raise ValueError(f"{len(tau)} delays given but the series has {images.shape[0]} frames")
    images, scale = normalise_intensity(resize(images, config.size), int(np.argmax(tau)))
    generator = torch.Generator().manual_seed(seed)
    coils = birdcage_maps(config.n_coils, (config.size,) * 2, generator=generator)
    mask = variable_density_mask(
        1, len(tau), config.size, acceleration=config.acceleration, generator=generator
    )
    kspace = CartesianAcquisition(coils, mask).forward(images[None])[0]
    sample = {
        "kspace": kspace,
        "mask": mask[0],
        "coil_maps": coils[0],
        "tau": torch.tensor(tau, dtype=torch.float32),
        "noise_sigma": torch.tensor(0.0),
    }
    return sample, scale
