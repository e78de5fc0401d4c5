"""NIfTI output of parameter maps."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from pinqi.io.grid import SourceGrid, resize_maps


def simulation_grid(pixel_mm: float, size: int) -> SourceGrid:
    """The grid of simulated data: ``pixel_mm`` in-plane, axis-aligned, no scan position."""
    return SourceGrid(np.diag([pixel_mm, pixel_mm, 1.0, 1.0]), (size, size))


def write_nifti(
    path: str | Path,
    maps: np.ndarray,
    grid: SourceGrid,
    description: str = "",
    quantity: str = "",
) -> Path:
    """Write maps ``(n, H, W)`` as one NIfTI volume ``(nx, ny, n)`` on ``grid``.

    The samples (slices) follow along the third axis, 1 mm apart; ``description`` (e.g. the
    quantity, unit and method) goes into the header's ``descrip`` (at most 79 characters);
    ``quantity`` with its unit (e.g. ``"T1 [s]"``, at most 15 characters) into the intent
    name, with the intent code ``estimate`` (the voxels estimate that quantity).
    """
    if len(quantity) > 15:
        raise ValueError(f"quantity {quantity!r} is longer than the 15 characters NIfTI keeps")
    volume = np.moveaxis(grid.from_model(np.asarray(maps, dtype=np.float32)), 0, -1)
    image = nib.Nifti1Image(volume, grid.affine)
    image.header["descrip"] = description[:79].encode()
    if quantity:
        image.header.set_intent("estimate", (), name=quantity)
    image.header.set_xyzt_units("mm")
    path = Path(path)
    nib.save(image, path)
    return path


#: Quantity and unit of each map written by :func:`write_maps`.
MAP_DESCRIPTIONS = {
    "t1": "T1 [s]",
    "m0": "|M0| [input intensity]",
    "residual": "|A^H (A q(p) - k)| [input intensity]",
    "residual_fit": "|A^H (A q(p) - k)| of CG-SENSE + fit [input intensity]",
    "residual_excess": "local residual power over CG-SENSE + fit's, minus 1",
}

#: The NIfTI intent name of each map of :func:`write_maps` (quantity and unit, <= 15 chars).
MAP_QUANTITIES = {
    "t1": "T1 [s]",
    "m0": "|M0|",
    "residual": "data residual",
    "residual_fit": "fit residual",
    "residual_excess": "excess residual",
}


def write_maps(
    out: Path,
    maps: dict[str, np.ndarray],
    grid: SourceGrid,
    method: str,
    input_grid: SourceGrid | None = None,
) -> list[Path]:
    """Write each map ``(n, H, W)`` as ``out/<name>.nii.gz`` with its quantity and unit.

    Parameters
    ----------
    out
        Output folder.
    maps
        Names from :data:`MAP_DESCRIPTIONS` -> maps on ``grid``.
    grid
        The grid of the maps (:meth:`pinqi.data.datasets.H5Dataset.output_grid`).
    method
        What made the maps, e.g. ``"pinqi reconstruct, delays 0.5,1,1.5,2,8 s"``; prefixed to
        each file's description.
    input_grid
        If given, the maps are resampled (bilinear) onto this grid (the scan's own matrix)
        and written with its affine instead.
    """
    written = []
    for name, values in maps.items():
        target = grid
        if input_grid is not None and input_grid.shape != grid.shape:
            nx, ny = input_grid.shape
            values, target = resize_maps(values, (ny, nx)), input_grid
        description = f"{method}: {MAP_DESCRIPTIONS[name]}"
        path = out / f"{name}.nii.gz"
        written.append(write_nifti(path, values, target, description, MAP_QUANTITIES[name]))
    return written
