"""``pinqi fit --images``: pixel-wise maps of a measured image series, on the scanner's grid.

Complex series are fitted with the complex signal models (:func:`~pinqi.solvers.signal_fit`).
Magnitude series of the inversion models and Look-Locker (MOLLI-type) series are fitted with
polarity restoration (:func:`~pinqi.evaluation.magnitude.fit_magnitude_recovery`), because a
complex model cannot follow a magnitude signal through its null; magnitude saturation-recovery
data have no null and are fitted as real data with the complex model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import torch
from tqdm.auto import tqdm

from pinqi.evaluation.fit import fit_images
from pinqi.evaluation.magnitude import fit_magnitude_recovery
from pinqi.evaluation.signal_check import bound_share_problem, signal_model_problems
from pinqi.io.series import ImageSeries
from pinqi.io.staging import staged_folder
from pinqi.metrics import t1_from_r1
from pinqi.physics import SIGNAL_MODELS, signal_model

#: Models of ``pinqi fit --images``: the signal models plus the Look-Locker correction.
SERIES_MODELS = (*sorted(SIGNAL_MODELS), "look-locker")

#: Model -> its real unknowns per voxel in a magnitude fit (T1 and the amplitudes): the least
#: number of distinct delays that can determine them.
UNKNOWNS = {
    "saturation": ("M0", "T1"),
    "inversion": ("M0", "T1"),
    "inversion-ab": ("a", "b", "T1"),
    "look-locker": ("A", "B", "T1*"),
}

#: The automatic mask keeps voxels whose |signal| at the longest delay exceeds this fraction of
#: the 99th percentile of |signal| at the longest delay.
AUTO_MASK_FRACTION = 0.05

#: Pull of the complex fit towards its data-derived start, for intensities normalised to a
#: 99th percentile of 1: small enough not to bias T1 where the delays determine it.
FIT_PULL = 1e-7

#: Voxels fitted per step (memory and progress granularity).
CHUNK = 16384

UNITS = {
    "t1": "s",
    "t1_star": "s",
    "m0": "input intensity",
    "m0_phase": "rad",
    "b": "input intensity",
    "inversion_efficiency": "1",
}

DESCRIPTIONS = {
    "t1": "T1",
    "t1_star": "apparent T1* (Look-Locker)",
    "m0": "|M0| (|a| for a + b exp(-TI/T1))",
    "m0_phase": "phase of M0",
    "b": "b of a + b exp(-TI/T1) (signed, polarity restored)",
    "inversion_efficiency": "-b/a - 1",
}


@dataclass
class SeriesMaps:
    """Parameter maps of a series on its grid, with what the fit could not determine.

    Attributes
    ----------
    maps
        Name (``t1``, ``m0``, ...; see :data:`UNITS`) -> map ``grid``, zero outside ``mask``.
    mask
        Bool ``grid``: the voxels that were fitted.
    at_bound
        Bool ``grid``: T1 (or T1*) lies on a bound of the fit (not determined by the data).
    method
        How the maps were fitted (one line).
    unconverged
        Voxels whose complex fit did not reach its tolerance (0 for the magnitude fits, which
        search T on a grid).
    problems
        Where the series does not look like the model, one sentence each
        (:func:`~pinqi.evaluation.signal_check.signal_model_problems`, a share of voxels on a
        bound above a few percent); empty if none.
    """

    maps: dict[str, np.ndarray]
    mask: np.ndarray
    at_bound: np.ndarray
    method: str
    unconverged: int = 0
    problems: list[str] = field(default_factory=list)


def auto_mask(series: ImageSeries) -> np.ndarray:
    """Voxels with signal: |image| at the longest delay > 5 % of its 99th percentile.

    Voxels that are NaN in any image are left out.
    """
    longest = np.abs(series.images[int(np.argmax(series.tau))])
    finite = np.isfinite(series.images).all(axis=0)
    level = np.percentile(longest[finite], 99) if finite.any() else 0.0
    return finite & (np.nan_to_num(longest) > AUTO_MASK_FRACTION * level)


def _refuse_nan_voxels(series: ImageSeries, mask: np.ndarray) -> None:
    """A clear error for masked voxels that are NaN in some image: count and first place."""
    bad = mask & ~np.isfinite(series.images).all(axis=0)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{series.source}: {int(bad.sum())} voxel(s) inside the mask are NaN in some image "
            f"(the first at voxel {first}); leave them out of the mask or replace them"
        )


def fit_series(
    series: ImageSeries,
    model_name: str,
    mask: np.ndarray | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> SeriesMaps:
    """Fit ``model_name`` (:data:`SERIES_MODELS`) to every voxel of ``series`` in ``mask``.

    Parameters
    ----------
    series
        The images with their delays (``series.tau`` must be set).
    model_name
        ``saturation``, ``inversion``, ``inversion-ab`` or ``look-locker``.
    mask
        Bool ``series.grid``; default :func:`auto_mask`.
    device
        Where the complex fit runs (the magnitude fits run on the CPU).
    progress
        Show a progress bar over voxel chunks.

    Returns
    -------
    SeriesMaps
        M0 (and b) in the input's intensity scale, T1 in s.
    """
    if model_name not in SERIES_MODELS:
        raise ValueError(f"model must be one of {list(SERIES_MODELS)}, got {model_name!r}")
    if series.tau is None:
        raise ValueError(
            f"{series.source}: the delays are unknown; give them (tau in s; on the command "
            "line --tau)"
        )
    distinct = len(np.unique(series.tau))
    unknowns = UNKNOWNS[model_name]
    if distinct < len(unknowns):
        raise ValueError(
            f"{series.source}: a {model_name} fit has the unknowns {', '.join(unknowns)} per "
            f"voxel and needs at least {len(unknowns)} distinct delays, got {distinct}"
        )
    mask = auto_mask(series) if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != series.grid:
        raise ValueError(f"mask has shape {mask.shape} but the series' grid is {series.grid}")
    if not mask.any():
        raise ValueError("the mask selects no voxel")
    _refuse_nan_voxels(series, mask)
    voxels = series.images[:, mask]
    scale = float(np.percentile(np.abs(voxels[int(np.argmax(series.tau))]), 99)) or 1.0
    data = torch.from_numpy(voxels / scale)
    magnitude_fit = model_name == "look-locker" or (
        series.magnitude and model_name in ("inversion", "inversion-ab")
    )
    if magnitude_fit:
        values, at_bound, method = _fit_magnitude(data.abs(), series.tau, model_name, progress)
        unconverged = 0
    else:
        values, at_bound, unconverged = _fit_complex(
            data.to(torch.complex64), series.tau, model_name, device, progress
        )
        method = f"pixel-wise {model_name} fit of complex data (Newton)"
        if series.magnitude:
            method = f"pixel-wise {model_name} fit of magnitude data (no null to restore)"
    for name in ("m0", "b"):
        if name in values:
            values[name] = values[name] * scale
    maps = {}
    for name, value in values.items():
        full = np.zeros(series.grid, dtype=np.float32)
        full[mask] = value
        maps[name] = full
    bound = np.zeros(series.grid, dtype=bool)
    bound[mask] = at_bound
    problems = signal_model_problems(series.tau, voxels, model_name)
    on_bound = bound_share_problem(np.asarray(at_bound))
    if on_bound:
        problems.append(on_bound)
    return SeriesMaps(maps, mask, bound, method, unconverged, problems)


def _chunks(n: int, progress: bool, what: str) -> tqdm:
    starts = range(0, n, CHUNK)
    return tqdm(starts, total=len(starts), unit="chunk", desc=what, disable=not progress)


def _fit_complex(
    data: torch.Tensor, tau: np.ndarray, model_name: str, device: str | torch.device, progress: bool
) -> tuple[dict[str, np.ndarray], np.ndarray, int]:
    from pinqi.evaluation.device import resolve_device

    device = resolve_device(device)
    model = signal_model(model_name, torch.from_numpy(tau)).to(device)
    params, unconverged = [], 0
    for start in _chunks(data.shape[1], progress, "fit"):
        images = data[None, :, None, start : start + CHUNK].to(device)
        p, info = fit_images(model, images, lam=FIT_PULL, return_info=True)
        params.append(p[0, :, 0].cpu())
        unconverged += int(info.unconverged.sum())
    p = torch.cat(params, dim=1).double()
    r1_low, r1_high = model.bounds[-1]
    at_bound = ((p[-1] <= r1_low + 1e-6) | (p[-1] >= r1_high - 1e-6)).numpy()
    m0 = torch.complex(p[0], p[1])
    values = {"t1": t1_from_r1(p[-1]), "m0": m0.abs(), "m0_phase": m0.angle()}
    if model_name == "inversion-ab":
        a, b = m0, torch.complex(p[2], p[3])
        values["b"] = (b * a.conj() / a.abs().clamp(min=1e-12)).real
        values["inversion_efficiency"] = (-(b / a).real - 1).where(a.abs() > 0, 0)
    return {k: v.float().numpy() for k, v in values.items()}, at_bound, unconverged


def _fit_magnitude(
    magnitude: torch.Tensor, tau: np.ndarray, model_name: str, progress: bool
) -> tuple[dict[str, np.ndarray], np.ndarray, str]:
    ti = torch.from_numpy(tau)
    parts = [
        fit_magnitude_recovery(magnitude[:, start : start + CHUNK].double(), ti)
        for start in _chunks(magnitude.shape[1], progress, "fit")
    ]
    a, b, t = (torch.cat([getattr(f, n) for f in parts]) for n in ("a", "b", "t"))
    at_bound = torch.cat([f.at_bound for f in parts]).numpy()
    values = {"m0": a.abs(), "b": b}
    if model_name == "look-locker":
        values |= {"t1": t * (-b / a - 1), "t1_star": t}
        method = "Look-Locker: RD-NLS-PR fit of |a + b exp(-TI/T1*)|, T1 = T1* (-b/a - 1)"
    else:
        values |= {"t1": t, "inversion_efficiency": -b / a - 1}
        method = "RD-NLS-PR fit of |a + b exp(-TI/T1)| (magnitude, polarity restored)"
    return {k: v.float().numpy() for k, v in values.items()}, at_bound, method


def write_series_maps(result: SeriesMaps, series: ImageSeries, model_name: str, out: Path) -> Path:
    """Write every map as NIfTI on the series' grid and affine, and ``params.h5``.

    Files: ``<name>.nii.gz`` per map, a volume ``(x, y, z)`` (``z = 1`` for a 2D series, as
    ``pinqi reconstruct`` writes a slice) with description and unit in the header's
    ``descrip`` and name and unit, e.g. ``t1 [s]``, as the intent name,
    ``mask.nii.gz`` and ``at_bound.nii.gz`` (uint8), ``params.h5`` (every map, the mask, the
    flags and the provenance as attributes). Written through
    :func:`~pinqi.io.staging.staged_folder`: a failure leaves no half-written output.
    """
    with staged_folder(out) as staging:
        for name, values in result.maps.items():
            header = f"pinqi fit {model_name}: {DESCRIPTIONS[name]} [{UNITS[name]}]"
            quantity = f"{name} [{UNITS[name]}]" if UNITS[name] else name
            _save(staging / f"{name}.nii.gz", values, series.affine, header, quantity[:15])
        for name in ("mask", "at_bound"):
            flags = getattr(result, name).astype(np.uint8)
            _save(staging / f"{name}.nii.gz", flags, series.affine, f"pinqi fit {name}")
        _write_h5(staging / "params.h5", result, series, model_name)
    return Path(out)


def _write_h5(path: Path, result: SeriesMaps, series: ImageSeries, model_name: str) -> None:
    with h5py.File(path, "w") as f:
        for name, values in result.maps.items():
            f[name] = values
            f[name].attrs["unit"] = UNITS[name]
            f[name].attrs["description"] = DESCRIPTIONS[name]
        f["mask"], f["at_bound"] = result.mask, result.at_bound
        f["affine"] = series.affine
        f.attrs["model"] = model_name
        f.attrs["tau_s"] = series.tau
        f.attrs["method"] = result.method
        f.attrs["source"] = series.source
        f.attrs["unconverged_voxels"] = result.unconverged
        f.attrs["units"] = json.dumps(UNITS)


def _save(
    path: Path, values: np.ndarray, affine: np.ndarray, description: str, quantity: str = ""
) -> None:
    volume = np.asarray(values)
    volume = volume[..., None] if volume.ndim == 2 else volume  # (x, y, slices) like reconstruct
    image = nib.Nifti1Image(volume, affine)
    image.header["descrip"] = description[:79].encode()
    if quantity:  # quantity and unit as the intent name, as pinqi.io.nifti.write_nifti does
        image.header.set_intent("estimate", (), name=quantity)
    image.header.set_xyzt_units("mm")
    nib.save(image, path)
