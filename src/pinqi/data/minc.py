"""A reader for MINC1 volumes (NetCDF-3 classic files), the format of the BrainWeb models."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
from scipy.io import netcdf_file


class MincError(ValueError):
    """A file is missing, not MINC1, or lacks a field pinqi needs."""


def _open_netcdf(path: Path) -> netcdf_file:
    if not path.is_file():
        raise MincError(f"MINC file not found: {path}")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise MincError(f"{path} is not a readable gzip file: {error}") from error
    if raw[:3] != b"CDF":
        raise MincError(f"{path} is not a MINC1 (NetCDF classic) file: wrong signature")
    try:
        return netcdf_file(io.BytesIO(raw), "r", mmap=False)
    except (TypeError, ValueError, IndexError) as error:
        raise MincError(f"{path} is a corrupt MINC1 file: {error}") from error


def read_minc(path: str | Path, *, scaled: bool = True) -> tuple[np.ndarray, tuple[float, ...]]:
    """Read the image of a MINC1 file (optionally gzip-compressed).

    Parameters
    ----------
    path
        ``.mnc`` or ``.mnc.gz`` file.
    scaled
        If True, map the stored integers to real values with MINC's ``valid_range`` and
        ``image-min``/``image-max`` (scalars or per slice). If False, return the stored integers
        (the labels of BrainWeb's crisp models are stored this way).

    Returns
    -------
    volume
        ``(z, y, x)`` array as stored (``float32`` if scaled, else the stored integer type,
        unsigned where the file says so).
    spacing
        Voxel size per axis in mm (the dimensions' ``step`` attributes).
    """
    path = Path(path)
    with _open_netcdf(path) as netcdf:
        if "image" not in netcdf.variables:
            raise MincError(f"{path} has no 'image' variable")
        image = netcdf.variables["image"]
        if len(image.dimensions) != 3:
            raise MincError(f"{path}: expected a 3D image, got dimensions {image.dimensions}")
        data = np.array(image.data)
        if getattr(image, "signtype", b"signed") == b"unsigned" and data.dtype.kind == "i":
            unsigned = np.dtype(f"u{data.dtype.itemsize}")
            data = data.view(unsigned.newbyteorder(data.dtype.byteorder)).astype(unsigned)
        spacing = tuple(
            abs(float(getattr(netcdf.variables[d], "step", 1.0))) if d in netcdf.variables else 1.0
            for d in image.dimensions
        )
        if not scaled:
            return data, spacing
        valid = getattr(image, "valid_range", None)
        if valid is None:
            info = np.iinfo(data.dtype) if data.dtype.kind in "iu" else None
            valid = (info.min, info.max) if info else (0.0, 1.0)
        vmin, vmax = (float(v) for v in np.asarray(valid).ravel()[:2])
        imin = _slice_values(netcdf, "image-min", 0.0, data.ndim)
        imax = _slice_values(netcdf, "image-max", 1.0, data.ndim)
    fraction = (data.astype(np.float32) - vmin) / (vmax - vmin)
    return (imin + fraction * (imax - imin)).astype(np.float32), spacing


def _slice_values(netcdf: netcdf_file, name: str, default: float, ndim: int) -> np.ndarray:
    """``image-min``/``image-max``: a scalar or per-slice values, shaped to broadcast."""
    if name not in netcdf.variables:
        return np.float32(default)
    values = np.asarray(netcdf.variables[name].data, dtype=np.float32)
    return values.reshape(values.shape + (1,) * (ndim - values.ndim))
