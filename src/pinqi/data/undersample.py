"""Retrospective undersampling of reconstructed image series (real data without raw k-space).

The standard way to test the transfer to real data when no raw k-space exists: simulated
bird-cage coils and the training mask generator are applied to measured multi-delay images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from pinqi.data.simulation import SimulationConfig
from pinqi.physics import CartesianAcquisition, birdcage_maps, variable_density_mask

#: The intensity normalisation maps this percentile of |image| of the longest delay to 1.
NORMALISATION_PERCENTILE = 99.0


def load_dicom_series(folder: Path) -> torch.Tensor:
    """Magnitude images ``(n_tau, H, W)`` of a folder of single-frame DICOM files.

    The frames are ordered by InstanceNumber (then file name); give the delays in that order.
    Phase is not read (DICOM magnitude series), so the images get zero phase.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    files = sorted(p for p in folder.iterdir() if p.is_file())
    frames = []
    for file in files:
        try:
            dataset = pydicom.dcmread(file)
        except InvalidDicomError:
            continue
        if "PixelData" not in dataset:
            continue
        number = int(getattr(dataset, "InstanceNumber", 0) or 0)
        slope = float(getattr(dataset, "RescaleSlope", 1.0) or 1.0)
        intercept = float(getattr(dataset, "RescaleIntercept", 0.0) or 0.0)
        frames.append(
            (number, file.name, dataset.pixel_array.astype(np.float32) * slope + intercept)
        )
    if not frames:
        raise ValueError(f"{folder} holds no readable DICOM images")
    shapes = {f[2].shape for f in frames}
    if len(shapes) != 1:
        raise ValueError(f"{folder}: the DICOM images have different sizes {sorted(shapes)}")
    frames.sort(key=lambda f: (f[0], f[1]))
    return torch.from_numpy(np.stack([f[2] for f in frames])).to(torch.complex64)


def load_series(path: str | Path) -> torch.Tensor:
    """Multi-delay images ``(n_tau, H, W)`` complex64 from a 3D NIfTI or a DICOM folder.

    NIfTI: delays on the last axis; complex data keep their phase, magnitude data get zero
    phase; rows are flipped like :func:`pinqi.io.nifti.write_nifti` writes them, so files of
    ``pinqi reconstruct`` round-trip. DICOM: a folder of single-frame images, one per delay,
    ordered by InstanceNumber (:func:`load_dicom_series`).
    """
    path = Path(path)
    if path.is_dir():
        return load_dicom_series(path)
    if not path.is_file():
        raise FileNotFoundError(f"image series not found: {path}")
    volume = np.asarray(nib.load(path).dataobj)
    if volume.ndim != 3:
        raise ValueError(f"{path}: expected a 3D volume (x, y, delay), got shape {volume.shape}")
    if not np.isfinite(volume).all():
        raise ValueError(f"{path} contains NaN or Inf values")
    images = np.transpose(volume, (2, 1, 0))[:, ::-1]
    return torch.from_numpy(np.ascontiguousarray(images)).to(torch.complex64)


def series_fov(path: str | Path, shape: tuple[int, int]) -> tuple[float, float]:
    """Field of view ``(height, width)`` in mm of the images ``load_series(path)`` returns.

    From the NIfTI voxel size (rows = the file's second axis) or the DICOM PixelSpacing;
    1 mm pixels when the file carries none.
    """
    path = Path(path)
    spacing = (1.0, 1.0)
    if path.is_dir():
        import pydicom

        for file in sorted(p for p in path.iterdir() if p.is_file()):
            try:
                dataset = pydicom.dcmread(file, stop_before_pixels=True)
            except Exception:  # not DICOM: the loader skips it too
                continue
            if "PixelSpacing" in dataset:
                spacing = tuple(float(v) for v in dataset.PixelSpacing)
                break
    else:
        zooms = nib.load(path).header.get_zooms()
        spacing = (float(zooms[1]), float(zooms[0]))
    return shape[0] * spacing[0], shape[1] * spacing[1]


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
