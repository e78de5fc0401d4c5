"""The non-learned baseline: a pixel-wise signal fit on a CG-SENSE reconstruction."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pinqi.physics import SignalModel
from pinqi.solvers import SolverInfo, data_consistency, signal_fit


@dataclass(frozen=True)
class BaselineConfig:
    """Settings of the baseline, fixed a priori (not tuned on any test data).

    Attributes
    ----------
    lambda_tikhonov
        Tikhonov strength of CG-SENSE, argmin ||A y - k||^2 + lambda ||y||^2.
    cg_iterations
        CG iterations.
    lambda_fit
        Weak pull of the fit towards a flat prior (|M0| of the last frame, R1 = 1 1/s), which
        keeps pixels without signal finite.
    """

    lambda_tikhonov: float = 0.02
    cg_iterations: int = 30
    lambda_fit: float = 1e-3


def cg_sense_fit(
    model: SignalModel,
    kspace: torch.Tensor,
    coil_maps: torch.Tensor,
    mask: torch.Tensor,
    config: BaselineConfig = BaselineConfig(),
    return_info: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, SolverInfo, SolverInfo]:
    """Parameter maps ``(batch, P, H, W)`` of the baseline for k-space ``(batch, T, C, H, W)``.

    Runs on the device of the inputs (the signal model must be there too). With
    ``return_info``, also the convergence reports of the CG and of the fit.
    """
    images, cg_info = cg_sense_images(kspace, coil_maps, mask, config)
    p, fit_info = fit_flat_prior(model, images, config.lambda_fit)
    return (p, cg_info, fit_info) if return_info else p


def cg_sense_images(
    kspace: torch.Tensor,
    coil_maps: torch.Tensor,
    mask: torch.Tensor,
    config: BaselineConfig = BaselineConfig(),
) -> tuple[torch.Tensor, SolverInfo]:
    """The baseline's images argmin ||A y - k||^2 + lambda ||y||^2 ``(batch, T, H, W)``.

    Returns the images and the CG's convergence report.
    """
    zero = kspace.new_zeros(kspace.shape[:2] + kspace.shape[3:])
    return data_consistency(
        kspace,
        coil_maps,
        mask,
        [config.lambda_tikhonov],
        [zero],
        max_iter=config.cg_iterations,
        return_info=True,
        warn=False,
    )


def fit_flat_prior(
    model: SignalModel, images: torch.Tensor, lambda_fit: float
) -> tuple[torch.Tensor, SolverInfo]:
    """The baseline's pixel-wise fit of reconstructed images: parameters and convergence report.

    Fits ``model`` to ``images`` ``(batch, n_tau, H, W)`` pixel by pixel (newton, at most 100
    iterations), weakly pulled (strength ``lambda_fit``) towards the model's flat start
    (:meth:`~pinqi.physics.SignalModel.initial_parameters`: M0 from the frame of the longest
    delay, R1 = 1 1/s). Shared by every "reconstruction + fit" method (CG-SENSE, BART pics), so
    that they differ only in their images.

    Returns
    -------
    tuple
        Parameter maps ``(batch, P, H, W)`` of ``model`` (saturation recovery: [Re M0, Im M0,
        R1 in 1/s]) on the device of ``images``, and the fit's
        :class:`~pinqi.solvers.SolverInfo`.
    """
    p_reg = model.initial_parameters(images)
    return signal_fit(model, images, p_reg, lambda_fit, max_iter=100, return_info=True, warn=False)
