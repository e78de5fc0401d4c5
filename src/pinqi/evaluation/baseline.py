"""The non-learned baseline: a pixel-wise signal fit on a CG-SENSE reconstruction."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from pinqi.physics import SignalModel
from pinqi.solvers import ConvergenceWarning, data_consistency, signal_fit


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
) -> torch.Tensor:
    """Parameter maps ``(batch, P, H, W)`` of the baseline for k-space ``(batch, T, C, H, W)``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        zero = torch.zeros(kspace.shape[:2] + kspace.shape[3:], dtype=kspace.dtype)
        images = data_consistency(
            kspace,
            coil_maps,
            mask,
            [config.lambda_tikhonov],
            [zero],
            max_iter=config.cg_iterations,
        )
        last = images[:, -1]
        p_reg = torch.stack([last.real, last.imag, torch.ones_like(last.real)], dim=1)
        return signal_fit(model, images, p_reg, config.lambda_fit, max_iter=100)
