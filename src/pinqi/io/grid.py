"""The scan's grid: between a series' voxel order and the images the model sees.

A single-slice series in voxel order ``(n_tau, nx, ny)`` (NIfTI convention, as
:func:`pinqi.io.series.read_series` returns it) becomes model images ``(n_tau, H, W)`` with
``H = ny`` rows along the voxel y axis and ``W = nx`` columns: ``image[r, c] = voxel[c, j]``
with ``j = ny - 1 - r`` when the y axis points up in patient space (anterior or superior,
e.g. NIfTI RAS), else ``j = r`` (e.g. DICOM rows), so that figures show the slice upright.
Maps go back by the inverse, and a resampling to ``size x size`` over the same field of view
scales the affine, so every output lies on the scan in any viewer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class SourceGrid:
    """The in-plane grid of a scan.

    Attributes
    ----------
    affine
        ``(4, 4)`` voxel index -> RAS+ position in mm.
    shape
        ``(nx, ny)``: voxels along the first and second index.
    """

    affine: np.ndarray
    shape: tuple[int, int]

    @property
    def voxel_mm(self) -> tuple[float, float]:
        """Voxel size ``(dx, dy)`` in mm along the first and second index."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :2], axis=0))

    @property
    def fov_mm(self) -> tuple[float, float]:
        """Field of view ``(height, width)`` in mm of the model images (rows = y)."""
        (dx, dy), (nx, ny) = self.voxel_mm, self.shape
        return ny * dy, nx * dx

    @property
    def rows_flipped(self) -> bool:
        """True when the voxel y axis points up (its largest RAS component is positive)."""
        axis = self.affine[:3, 1]
        return bool(axis[np.argmax(np.abs(axis))] > 0)

    def to_model(self, voxels: np.ndarray) -> np.ndarray:
        """``(..., nx, ny)`` in voxel order -> ``(..., H, W)`` model images."""
        images = np.swapaxes(voxels, -1, -2)
        return np.ascontiguousarray(images[..., ::-1, :] if self.rows_flipped else images)

    def from_model(self, images: np.ndarray) -> np.ndarray:
        """``(..., H, W)`` model images -> ``(..., nx, ny)`` voxel order (inverse of to_model)."""
        images = images[..., ::-1, :] if self.rows_flipped else images
        return np.ascontiguousarray(np.swapaxes(images, -1, -2))

    def resampled(self, size: int) -> SourceGrid:
        """The ``size x size`` grid over the same field of view.

        Pixel centres as in bilinear resampling with ``align_corners=False``.
        """
        nx, ny = self.shape
        sx, sy = nx / size, ny / size
        scale = np.array(
            [[sx, 0, 0, (sx - 1) / 2], [0, sy, 0, (sy - 1) / 2], [0, 0, 1, 0], [0, 0, 0, 1]]
        )
        return SourceGrid(self.affine @ scale, (size, size))

    def to_attributes(self) -> dict:
        """HDF5 attributes ``source_affine`` and ``source_shape``."""
        return {"source_affine": self.affine, "source_shape": np.asarray(self.shape)}

    @classmethod
    def from_attributes(cls, attributes) -> SourceGrid | None:
        """The grid stored by :meth:`to_attributes`, or None when the file has none."""
        if "source_affine" not in attributes or "source_shape" not in attributes:
            return None
        shape = tuple(int(v) for v in attributes["source_shape"])
        return cls(np.asarray(attributes["source_affine"], dtype=np.float64), shape)


def resize_maps(maps: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Real maps ``(n, H, W)`` resampled to ``(n, *shape)`` over the same field of view.

    Bilinear, antialiased when shrinking.
    """
    tensor = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))[:, None]
    shrink = shape[0] < maps.shape[-2] or shape[1] < maps.shape[-1]
    resized = F.interpolate(
        tensor, size=shape, mode="bilinear", align_corners=False, antialias=shrink
    )
    return resized[:, 0].numpy()
