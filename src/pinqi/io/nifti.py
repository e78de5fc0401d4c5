"""NIfTI output of parameter maps."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np


def write_nifti(path: str | Path, maps: np.ndarray, pixel_mm: float) -> Path:
    """Write maps ``(n, H, W)`` as one NIfTI volume ``(W, H, n)`` (one slice per sample).

    The affine has ``pixel_mm`` in-plane and 1 mm between samples; the image rows run from
    anterior (top) to posterior as displayed.
    """
    volume = np.ascontiguousarray(np.transpose(maps, (2, 1, 0))[:, ::-1]).astype(np.float32)
    affine = np.diag([pixel_mm, pixel_mm, 1.0, 1.0])
    path = Path(path)
    nib.save(nib.Nifti1Image(volume, affine), path)
    return path
