"""Metrics of Sec. 4.1: T1 and M0 errors inside the brain mask."""

from __future__ import annotations

import torch

#: T1 of a predicted R1 below this (1/s) is reported as 1 / this (10 s).
MIN_R1 = 0.1


def t1_from_r1(r1: torch.Tensor) -> torch.Tensor:
    """T1 in s from R1 in 1/s, with R1 clamped to >= 0.1 1/s (T1 <= 10 s)."""
    return 1 / r1.clamp(min=MIN_R1)


def parameter_metrics(
    prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per-sample errors inside ``mask``.

    nRMSE is the relative L2 error over the mask pixels, ||x - x_true|| / ||x_true|| (the RMSE
    normalised by the RMS of the true values); MAE is the mean absolute error. T1 is computed
    as 1 / max(R1, 0.1 1/s) (:func:`t1_from_r1`), so a pixel whose predicted R1 is below
    :data:`MIN_R1` (a failed fit, or a long T1) enters the T1 errors with T1 = 10 s;
    ``t1_clamped`` reports the share of such pixels beside the T1 errors.

    Parameters
    ----------
    prediction, target
        ``(batch, P, H, W)``: channels 0 and 1 are the real and imaginary part of M0 (or of
        a for :class:`~pinqi.physics.InversionRecoveryAB`), the last one is R1 in 1/s.
    mask
        Bool ``(batch, H, W)``.

    Returns
    -------
    dict
        ``t1_nrmse``, ``t1_mae`` (s), ``t1_clamped`` (share 0..1 of the mask pixels whose
        predicted R1 < :data:`MIN_R1`), ``m0_nrmse`` (complex M0), ``m0_mae``, each
        ``(batch,)``.
    """
    weight = mask.to(prediction.dtype)
    count = weight.flatten(1).sum(1).clamp(min=1)

    def nrmse(error: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
        num = (error.abs() ** 2 * weight).flatten(1).sum(1)
        den = (truth.abs() ** 2 * weight).flatten(1).sum(1).clamp(min=1e-12)
        return torch.sqrt(num / den)

    def mae(error: torch.Tensor) -> torch.Tensor:
        return (error.abs() * weight).flatten(1).sum(1) / count

    t1, t1_true = t1_from_r1(prediction[:, -1]), t1_from_r1(target[:, -1])
    clamped = (prediction[:, -1] < MIN_R1).to(prediction.dtype) * weight
    m0 = torch.complex(prediction[:, 0], prediction[:, 1])
    m0_true = torch.complex(target[:, 0], target[:, 1])
    return {
        "t1_nrmse": nrmse(t1 - t1_true, t1_true),
        "t1_mae": mae(t1 - t1_true),
        "t1_clamped": clamped.flatten(1).sum(1) / count,
        "m0_nrmse": nrmse(m0 - m0_true, m0_true),
        "m0_mae": mae(m0 - m0_true),
    }
