"""``pinqi fit``: the non-learned reference, a pixel-wise fit of (fully sampled) data."""

from __future__ import annotations

import warnings
from pathlib import Path

import h5py
import numpy as np
import torch

from pinqi.evaluation.signal_check import SignalModelWarning, kspace_signal_problems
from pinqi.io.hdf5 import open_data_file
from pinqi.physics import CartesianAcquisition, SignalModel, signal_model
from pinqi.solvers import SolverInfo, data_consistency, signal_fit


def combine(kspace: torch.Tensor, coil_maps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Coil-combined images ``(batch, n_tau, H, W)``, on the device of the inputs.

    A^H k where fully sampled (exact for normalised coils), else a lightly regularised
    CG-SENSE reconstruction.
    """
    acquisition = CartesianAcquisition(coil_maps, mask)
    if bool(acquisition.mask.bool().all()):
        return acquisition.adjoint(kspace)
    zero = kspace.new_zeros(acquisition.image_shape)
    return data_consistency(kspace, coil_maps, mask, [1e-3], [zero], max_iter=50, warn=False)


def fit_images(
    model: SignalModel, images: torch.Tensor, lam: float = 1e-4, return_info: bool = False
) -> torch.Tensor | tuple[torch.Tensor, SolverInfo]:
    """Pixel-wise fit of ``images`` ``(batch, n_tau, H, W)``, weakly pulled to the start.

    With ``return_info``, also the fit's convergence report.
    """
    start = model.initial_parameters(images)
    return signal_fit(model, images, start, lam, max_iter=200, warn=False, return_info=return_info)


def fully_sampled_fit(
    model: SignalModel,
    params: torch.Tensor,
    coil_maps: torch.Tensor,
    noise_sigma: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """The pixel-wise fit of the same objects scanned fully sampled: the noise floor.

    Acquires ``model(params)`` on every k-space line with the samples' coil maps and noise
    level (complex Gaussian noise of std ``noise_sigma`` per real and imaginary part, as
    :func:`pinqi.data.simulation.acquire`), combines the coils (A^H k) and fits
    (:func:`fit_images`). What an undersampled method's error is compared with: the error
    that is left when nothing is missing.

    Parameters
    ----------
    model
        Signal model of the data.
    params
        True parameter maps ``(batch, P, H, W)`` (M0 in the data's units, R1 in 1/s).
    coil_maps
        ``(batch, n_coils, H, W)``.
    noise_sigma
        ``(batch,)`` noise std per k-space sample and part.
    generator
        Source of the noise (on the CPU; the noise is moved to the device of ``params``).

    Returns
    -------
    torch.Tensor
        Fitted maps ``(batch, P, H, W)``.
    """
    batch, _, height, width = params.shape
    if coil_maps.shape[0] != batch or coil_maps.shape[-2:] != (height, width):
        raise ValueError(
            f"coil_maps {tuple(coil_maps.shape)} must be (batch, n_coils, H, W) for params "
            f"{tuple(params.shape)}"
        )
    n_tau = len(model.tau)
    full = torch.ones(batch, n_tau, 1, width, dtype=torch.bool, device=params.device)
    acquisition = CartesianAcquisition(coil_maps, full)
    clean = acquisition.forward(model(params))
    noise = torch.randn(clean.shape, generator=generator, dtype=clean.dtype) * 2**0.5
    sigma = noise_sigma.to(clean.real.dtype).reshape(batch, 1, 1, 1, 1)
    kspace = clean + sigma * noise.to(clean.device)
    return fit_images(model, acquisition.adjoint(kspace))


def fit_file(
    data: str | Path, model_name: str, out: str | Path, device: str | torch.device = "cpu"
) -> Path:
    """Fit every sample of an HDF5 file in the ``pinqi simulate`` layout.

    Only ``kspace``, ``mask``, ``coil_maps`` and ``tau`` are read, so files without ground
    truth work. Writes ``params.h5``, ``t1.nii.gz`` (T1 in s) and ``m0.nii.gz`` (|M0|, or |a|
    for the a + b exp model, in the input's intensity) on the grid of ``pinqi reconstruct``
    on the same file (:meth:`~pinqi.data.datasets.H5Dataset.output_grid`).

    Parameters
    ----------
    data
        HDF5 file.
    model_name
        Signal model (:data:`~pinqi.physics.SIGNAL_MODELS`).
    out
        Output folder.
    device
        Where to combine and fit: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``
        (:func:`~pinqi.evaluation.evaluate.resolve_device`); the results are written from
        the CPU.
    """
    from pinqi.data.datasets import H5Dataset
    from pinqi.evaluation.device import resolve_device
    from pinqi.io.nifti import write_maps
    from pinqi.io.staging import staged_folder
    from pinqi.metrics import t1_from_r1

    device = resolve_device(device)
    data, out = Path(data), Path(out)
    with open_data_file(data, ("kspace", "mask", "coil_maps", "tau")) as f:
        kspace = torch.from_numpy(f["kspace"][()]).to(device)
        mask = torch.from_numpy(f["mask"][()]).to(device)
        coil_maps = torch.from_numpy(f["coil_maps"][()]).to(device)
        tau = torch.from_numpy(f["tau"][()]).double()
    model = signal_model(model_name, tau).to(device)
    picked = slice(0, None, max(1, len(kspace) // 8))  # the signal of a few slices
    for problem in kspace_signal_problems(
        kspace[picked], coil_maps[picked], mask[picked], tau, model_name
    ):
        warnings.warn(f"{data.name}: {problem}", SignalModelWarning, stacklevel=2)
    params = fit_images(model, combine(kspace, coil_maps, mask)).cpu()
    t1 = t1_from_r1(params[:, -1]).numpy()
    m0 = torch.complex(params[:, 0], params[:, 1]).numpy()
    # the grid and intensity of pinqi reconstruct on the same file
    dataset = H5Dataset(data)
    delays = ",".join(f"{v:g}" for v in tau.tolist())
    maps = {"t1": t1, "m0": np.abs(m0) * dataset.intensity_scale}
    with staged_folder(out) as staging:
        with h5py.File(staging / "params.h5", "w") as f:
            f["params"] = params.numpy()
            f["t1"] = t1
            f.attrs["model"] = model_name
            f.attrs["parameter_names"] = list(model.parameter_names)
        method = f"pinqi fit {model_name}, delays {delays} s"
        write_maps(staging, maps, dataset.output_grid(), method)
    return out
