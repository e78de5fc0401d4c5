"""One call from arrays to maps: what the CLI does, for Python users.

>>> maps = pinqi.api.reconstruct_maps(kspace, coil_maps, mask, tau)   # doctest: +SKIP
>>> maps["t1"]   # (batch, H, W) in s                                  # doctest: +SKIP

For measured image series (no k-space), :func:`fit_maps` fits the signal model voxel by
voxel, as ``pinqi fit --images`` does:

>>> maps = pinqi.api.fit_maps(images, tau, model="inversion")   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pinqi.evaluation.adaptation import AdaptConfig, reconstruct_adapted
from pinqi.evaluation.consistency import (
    check_consistency,
    estimate_noise_sigma,
    load_residual_check,
    residual_map,
    residual_ratio,
)
from pinqi.evaluation.evaluate import check_acquisition, resolve_device
from pinqi.metrics import t1_from_r1
from pinqi.physics import CartesianAcquisition
from pinqi.training.checkpoints import DEFAULT_MODEL, load_model


def reconstruct_maps(
    kspace: torch.Tensor | np.ndarray,
    coil_maps: torch.Tensor | np.ndarray,
    mask: torch.Tensor | np.ndarray,
    tau: Sequence[float] | torch.Tensor,
    checkpoint: str | Path = DEFAULT_MODEL,
    signal_model: str = "saturation",
    device: str | torch.device = "cpu",
    allow_other_protocol: bool = False,
    check: bool = True,
    adapt: AdaptConfig | None = None,
) -> dict[str, torch.Tensor]:
    """PINQI's parameter maps of undersampled k-space, with the checks of ``pinqi reconstruct``.

    Parameters
    ----------
    kspace
        Complex ``(batch, n_tau, n_coils, H, W)``, zero where not sampled; intensities
        normalised as in training (e.g. by :func:`pinqi.data.undersample.intensity_scale`).
        Each of ``kspace``, ``coil_maps`` and ``mask`` may be a tensor or a NumPy array.
    coil_maps
        Complex ``(batch, n_coils, H, W)``.
    mask
        0/1 sampling mask broadcastable to ``(batch, n_tau, H, W)``.
    tau
        Delays in s ``(n_tau,)``.
    checkpoint
        A training checkpoint, an exported model file or a shipped model's name.
    signal_model
        The data's signal model; with ``tau`` it must match the model's protocol unless
        ``allow_other_protocol`` (then a warning, and the model uses these delays).
    device
        Where to run (``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``).
    check
        Also run the data-residual check against CG-SENSE + fit
        (:mod:`pinqi.evaluation.consistency`), warn about inconsistent slices and return the
        residuals.
    adapt
        With ``check``: reconstruct every flagged slice with a copy of the network fine-tuned
        on that slice's k-space (:func:`~pinqi.evaluation.adaptation.adapt_to_slice` with
        these settings, e.g. ``AdaptConfig()``); the result then also holds ``adapt_steps``
        ``(batch,)`` (0 for slices left as they were).

    Returns
    -------
    dict
        ``params`` ``(batch, P, H, W)`` (R1 last, 1/s), ``t1`` ``(batch, H, W)`` in s, ``m0``
        complex ``(batch, H, W)``; with ``check`` also ``residual_ratio``, its limit for each
        slice's noise level ``residual_limit``, the T1 disagreement with the plain fit
        ``t1_disagreement`` and its limit ``t1_disagreement_limit``, the estimated
        ``noise_sigma`` and the flag ``out_of_distribution`` (either statistic above its
        limit), each ``(batch,)``, and the per-pixel ``residual`` ``(batch, H, W)``. On the
        CPU.
    """
    if adapt is not None and not check:
        raise ValueError("adapt needs check=True: only slices the data check flags are adapted")
    kspace, coil_maps, mask = (
        torch.from_numpy(x) if isinstance(x, np.ndarray) else x for x in (kspace, coil_maps, mask)
    )
    if isinstance(kspace, torch.Tensor) and kspace.ndim > 1:
        empty = torch.nonzero(kspace.flatten(1).eq(0).all(1)).flatten().tolist()
        if empty:
            raise ValueError(f"kspace is zero everywhere in slice(s) {empty[:10]}")
    device = resolve_device(device)
    model, trained = load_model(checkpoint, map_location=str(device))
    tau = torch.as_tensor(tau, dtype=torch.float64).reshape(-1)
    if not bool(torch.isfinite(tau).all()):
        raise ValueError(f"tau must be finite delays in s, got {tau.tolist()}")
    shape = tuple(kspace.shape[-2:]) if isinstance(kspace, torch.Tensor) else (0, 0)
    check_acquisition(
        model, trained.data.signal_model, tau, signal_model, shape, "kspace", allow_other_protocol
    )
    model.signal_model.tau = tau.to(model.signal_model.tau)
    inputs = tuple(x.to(device) for x in (kspace, coil_maps, mask))
    with torch.no_grad():
        params = model(*inputs).parameters[-1]
        result = {
            "params": params.cpu(),
            "t1": t1_from_r1(params[:, -1]).cpu(),
            "m0": torch.complex(params[:, 0], params[:, 1]).cpu(),
        }
        if check:
            consistency = check_consistency(model.signal_model, params, *inputs)
            ratio = residual_ratio(consistency.kspace_residual).cpu()
            disagreement = consistency.t1_disagreement.cpu()
            noise_sigma = estimate_noise_sigma(inputs[0], inputs[2]).cpu()
            limits = load_residual_check(checkpoint)
            limit = limits.limit(noise_sigma)
            t1_limit = limits.disagreement_limit(noise_sigma)
            flagged = torch.zeros(len(ratio), dtype=torch.bool)
            flagged[limits.warn(ratio, disagreement, noise_sigma)] = True
            if adapt is not None:
                steps = torch.zeros(len(ratio), dtype=torch.long)
                fit = consistency.kspace_residual["CG-SENSE + fit"]
                for i in torch.nonzero(flagged).flatten().tolist():
                    one = tuple(x[i : i + 1] for x in inputs)
                    baseline = consistency.baseline[i : i + 1]
                    adapted = reconstruct_adapted(
                        model, *one, float(fit[i]), baseline, adapt, limits.disagreement_median
                    )
                    params = torch.cat([params[:i], adapted.params, params[i + 1 :]])
                    ratio[i] = adapted.adaptation.ratio_after
                    disagreement[i] = adapted.t1_disagreement[0].cpu()
                    steps[i] = adapted.adaptation.steps
                result["adapt_steps"] = steps
                result["params"] = params.cpu()
                result["t1"] = t1_from_r1(params[:, -1]).cpu()
                result["m0"] = torch.complex(params[:, 0], params[:, 1]).cpu()
            result["residual_ratio"] = ratio
            result["residual_limit"] = limit
            result["t1_disagreement"] = disagreement
            result["t1_disagreement_limit"] = t1_limit
            result["noise_sigma"] = noise_sigma
            result["out_of_distribution"] = flagged
            acquisition = CartesianAcquisition(*inputs[1:])
            residual = residual_map(model.signal_model, params, acquisition, inputs[0])
            result["residual"] = residual.cpu()
    return result


def fit_maps(
    images: np.ndarray,
    tau: Sequence[float],
    model: str = "saturation",
    mask: np.ndarray | None = None,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Parameter maps of an image series by a voxel-wise fit: ``pinqi fit --images`` for arrays.

    Parameters
    ----------
    images
        ``(n_tau, x, y)`` or ``(n_tau, x, y, z)``: complex, or real = magnitude (fitted with
        polarity restoration for the inversion models and ``look-locker``).
    tau
        Delays in s, one per image.
    model
        ``saturation``, ``inversion``, ``inversion-ab`` or ``look-locker``
        (:data:`~pinqi.evaluation.series_fit.SERIES_MODELS`).
    mask
        Bool ``(x, y[, z])``; default: the automatic mask of ``pinqi fit``
        (:func:`~pinqi.evaluation.series_fit.auto_mask`).
    progress
        Show a progress bar.

    Returns
    -------
    dict
        ``t1`` (s) and the model's other maps (e.g. ``m0`` in the input's intensity,
        ``t1_star`` for ``look-locker``) on the input grid, ``mask`` and ``at_bound`` (voxels
        whose fit sits at a parameter bound), each ``(x, y[, z])``.

    Raises
    ------
    ValueError
        For a wrong number of delays, non-finite or all-zero images, an unknown model or a
        mask of the wrong shape.
    """
    from pinqi.evaluation.series_fit import fit_series
    from pinqi.io.series import series_from_arrays

    series = series_from_arrays(images, tau)
    result = fit_series(series, model, mask, progress=progress)
    return {**result.maps, "mask": result.mask, "at_bound": result.at_bound}
