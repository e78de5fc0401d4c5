"""Reading measured image series (NIfTI, DICOM) with their delays and voxel grid.

Users mostly hold reconstructed multi-delay images, often magnitude only. This module reads
them as they are, without resampling: the parameter maps of ``pinqi fit --images`` are written
on the same grid with the same affine, so they lie beside the scan in any viewer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

#: DICOM ImageType values that name the component of an image.
_KINDS = {
    "M": "magnitude",
    "MAGNITUDE": "magnitude",
    "P": "phase",
    "PHASE": "phase",
    "R": "real",
    "REAL": "real",
    "I": "imaginary",
    "IMAGINARY": "imaginary",
}


@dataclass(frozen=True)
class ImageSeries:
    """A multi-delay image series on its scanner grid.

    Attributes
    ----------
    images
        ``(n_tau, *grid)``: complex64 for complex data, float32 for magnitude data; ``grid``
        is the file's voxel order, ``(x, y)`` or ``(x, y, z)``.
    tau
        Delays in s ``(n_tau,)``, ascending, or None when the files do not carry them.
    affine
        ``(4, 4)`` voxel index -> RAS+ position in mm (the NIfTI convention).
    source
        Where the series came from (for the outputs' provenance).
    """

    images: np.ndarray
    tau: np.ndarray | None
    affine: np.ndarray
    source: str

    @property
    def magnitude(self) -> bool:
        """True for real-valued (magnitude) images."""
        return not np.iscomplexobj(self.images)

    @property
    def grid(self) -> tuple[int, ...]:
        """The spatial shape."""
        return tuple(self.images.shape[1:])


def read_series(path: str | Path, tau: Sequence[float] | None = None) -> ImageSeries:
    """Read a series from a 3D/4D NIfTI file (delays on the last axis) or a DICOM folder.

    Parameters
    ----------
    path
        NIfTI file ``(x, y, n_tau)`` or ``(x, y, z, n_tau)``, complex or real (= magnitude),
        or a folder of single-frame DICOM files (see :func:`read_dicom_series`).
    tau
        Delays in s, in the order of the images (NIfTI: along the last axis; DICOM: by
        InstanceNumber); required for NIfTI, optional for DICOM files that carry
        InversionTime.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        For an unreadable file, a wrong number of delays, infinite or all-zero images (NaN
        voxels are allowed: the fit refuses them unless a mask leaves them out).
    """
    path = Path(path)
    if path.is_dir():
        series = read_dicom_series(path, tau)
    elif path.is_file():
        series = _read_nifti_series(path, tau)
    else:
        raise FileNotFoundError(f"image series not found: {path}")
    _check_images(series.images, str(path))
    return series


def series_from_arrays(
    images: np.ndarray,
    tau: Sequence[float],
    affine: np.ndarray | None = None,
    source: str = "the images",
) -> ImageSeries:
    """A series from arrays, with :func:`read_series`'s checks.

    Parameters
    ----------
    images
        ``(n_tau, x, y)`` or ``(n_tau, x, y, z)``, complex or real (= magnitude).
    tau
        Delays in s, one per image (any order; the series is sorted by delay).
    affine
        ``(4, 4)`` voxel -> RAS+ mm; default identity (1 mm voxels).
    source
        Name used in error messages and provenance.
    """
    images = np.asarray(images)
    if images.ndim not in (3, 4):
        raise ValueError(
            f"{source}: expected (n_tau, x, y) or (n_tau, x, y, z) images, got shape {images.shape}"
        )
    if not (np.iscomplexobj(images) or np.issubdtype(images.dtype, np.number)):
        raise ValueError(f"{source}: images must be numeric, got dtype {images.dtype}")
    images = images.astype(np.complex64 if np.iscomplexobj(images) else np.float32)
    _check_images(images, source)
    values = _check_tau(tau, len(images), Path(source))
    order = np.argsort(values, kind="stable")
    affine = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be (4, 4), got {affine.shape}")
    return ImageSeries(np.ascontiguousarray(images[order]), values[order], affine, source)


def _check_images(images: np.ndarray, source: str) -> None:
    """Refuse infinite values and images without signal; NaN voxels stay (masked later)."""
    if np.isinf(images).any():
        raise ValueError(f"{source}: the images contain infinite values")
    if not np.any(np.nan_to_num(images)):
        raise ValueError(f"{source}: the images are zero (or NaN) everywhere")


def _check_tau(tau: Sequence[float] | None, n_tau: int, source: Path) -> np.ndarray | None:
    if tau is None:
        return None
    values = np.asarray(tau, dtype=np.float64)
    if values.ndim != 1 or len(values) != n_tau:
        raise ValueError(f"{source} holds {n_tau} images but {len(values)} delays were given")
    if not (np.isfinite(values).all() and (values >= 0).all()):
        raise ValueError(f"delays must be finite and >= 0 s, got {values.tolist()}")
    return values


def _read_nifti_series(path: Path, tau: Sequence[float] | None) -> ImageSeries:
    try:
        image = nib.load(path)
        volume = np.asarray(image.dataobj)
    except Exception as error:  # nibabel raises several types for unreadable files
        raise ValueError(f"{path} is not a readable NIfTI file ({error})") from None
    if volume.ndim not in (3, 4):
        raise ValueError(
            f"{path}: expected a 3D (x, y, delay) or 4D (x, y, z, delay) volume, got shape "
            f"{volume.shape}"
        )
    images = np.moveaxis(volume, -1, 0)
    images = images.astype(np.complex64 if np.iscomplexobj(images) else np.float32)
    if tau is None:
        raise ValueError(
            f"{path}: NIfTI files carry no delays; give them (tau in s; on the command line --tau)"
        )
    values = _check_tau(tau, len(images), path)
    order = np.argsort(values, kind="stable")
    affine = np.asarray(image.affine, dtype=np.float64)
    return ImageSeries(np.ascontiguousarray(images[order]), values[order], affine, str(path))


def read_dicom_series(folder: Path, tau: Sequence[float] | None = None) -> ImageSeries:
    """A series from a folder of single-frame DICOM images.

    Images are grouped by delay (the InversionTime tag, ms) and slice position; magnitude and
    phase (ImageType M/P; phase in rad or in the integer range +-4096, scaled to +-pi) or real
    and imaginary (R/I) images of the same delay and slice are combined into complex data.
    The series is sorted by delay. Without InversionTime, the k-th image of each kind and
    slice (by InstanceNumber) belongs to the k-th delay of ``tau``; with it, a given ``tau``
    must agree with the files.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    frames = []
    for file in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            dataset = pydicom.dcmread(file)
        except (InvalidDicomError, OSError):
            continue
        if "PixelData" not in dataset:
            continue
        frames.append((file.name, dataset))
    if not frames:
        raise ValueError(f"{folder} holds no readable DICOM images")
    shapes = {d.pixel_array.shape for _, d in frames}
    if len(shapes) != 1:
        raise ValueError(f"{folder}: the DICOM images have different sizes {sorted(shapes)}")
    normal = _slice_normal(frames[0][1])
    has_delays = all("InversionTime" in d for _, d in frames)
    if tau is None and not has_delays:
        raise ValueError(f"{folder}: the DICOM files carry no InversionTime; give --tau")
    groups: dict[tuple[float, float], dict[str, np.ndarray]] = defaultdict(dict)
    counts: dict[tuple[str, float], int] = defaultdict(int)
    for name, dataset in sorted(frames, key=_instance_order):
        position = round(float(np.dot(normal, _position(dataset))), 3)
        kind = _kind(dataset)
        if has_delays:
            delay = round(float(dataset.InversionTime) / 1000, 6)
        else:  # the k-th image of each kind and slice, by InstanceNumber
            delay, counts[(kind, position)] = counts[(kind, position)], counts[(kind, position)] + 1
        if kind in groups[(delay, position)]:
            raise ValueError(
                f"{folder}: two {kind} images for delay {delay:g} s at slice position "
                f"{position:g} mm ({name})"
            )
        groups[(delay, position)][kind] = _pixels(dataset)
    delays = sorted({d for d, _ in groups})
    positions = sorted({p for _, p in groups})
    if len(groups) != len(delays) * len(positions):
        raise ValueError(f"{folder}: not every slice has an image at every delay")
    images = np.stack(
        [np.stack([_combine(groups[(d, p)], folder) for p in positions], -1) for d in delays]
    )
    values = np.asarray(delays, dtype=np.float64)
    if tau is not None:
        given = _check_tau(tau, len(delays), folder)
        if has_delays and not np.allclose(np.sort(given), values, atol=1e-3):
            raise ValueError(
                f"--tau {given.tolist()} does not match the files' InversionTime "
                f"{values.tolist()} s"
            )
        values = given if not has_delays else values
    order = np.argsort(values, kind="stable")
    images = images[order]
    if len(positions) == 1:
        images = images[..., 0]
    first = min(frames, key=lambda f: float(np.dot(normal, _position(f[1]))))[1]
    spacing = (positions[1] - positions[0]) if len(positions) > 1 else _thickness(first)
    affine = _dicom_affine(first, normal, spacing)
    return ImageSeries(np.ascontiguousarray(images), values[order], affine, str(folder))


def _instance_order(frame: tuple) -> tuple[int, str]:
    name, dataset = frame
    return int(getattr(dataset, "InstanceNumber", 0) or 0), name


def _kind(dataset) -> str:
    for value in getattr(dataset, "ImageType", []):
        if str(value).upper() in _KINDS:
            return _KINDS[str(value).upper()]
    return "magnitude"


def _pixels(dataset) -> np.ndarray:
    """Rescaled pixel values, transposed to voxel order (column, row)."""
    slope = float(getattr(dataset, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(dataset, "RescaleIntercept", 0.0) or 0.0)
    return (dataset.pixel_array.astype(np.float64) * slope + intercept).T


def _combine(parts: dict[str, np.ndarray], folder: Path) -> np.ndarray:
    if "real" in parts and "imaginary" in parts:
        return (parts["real"] + 1j * parts["imaginary"]).astype(np.complex64)
    if "magnitude" in parts and "phase" in parts:
        phase = parts["phase"]
        limit = float(np.abs(phase).max())
        if limit > 2 * np.pi:  # integer-coded phase, e.g. -4096..4095 for -pi..pi
            phase = phase * (np.pi / max(4096.0, limit))
        return (parts["magnitude"] * np.exp(1j * phase)).astype(np.complex64)
    if "magnitude" in parts:
        return parts["magnitude"].astype(np.float32)
    raise ValueError(f"{folder}: images of kinds {sorted(parts)} cannot be combined")


def _orientation(dataset) -> tuple[np.ndarray, np.ndarray]:
    values = getattr(dataset, "ImageOrientationPatient", None) or [1, 0, 0, 0, 1, 0]
    cosines = np.asarray(values, dtype=np.float64)
    return cosines[:3], cosines[3:]


def _slice_normal(dataset) -> np.ndarray:
    row, column = _orientation(dataset)
    return np.cross(row, column)


def _position(dataset) -> np.ndarray:
    return np.asarray(getattr(dataset, "ImagePositionPatient", None) or [0, 0, 0], np.float64)


def _thickness(dataset) -> float:
    return float(getattr(dataset, "SliceThickness", 1.0) or 1.0)


def _dicom_affine(dataset, normal: np.ndarray, spacing: float) -> np.ndarray:
    """Voxel (column, row, slice) -> RAS+ mm from the DICOM patient (LPS) geometry."""
    row, column = _orientation(dataset)
    dy, dx = (float(v) for v in (getattr(dataset, "PixelSpacing", None) or [1.0, 1.0]))
    lps = np.eye(4)
    lps[:3, 0] = row * dx
    lps[:3, 1] = column * dy
    lps[:3, 2] = normal * spacing
    lps[:3, 3] = _position(dataset)
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
