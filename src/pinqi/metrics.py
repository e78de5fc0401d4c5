"""Metrics of Sec. 4.1: T1 and M0 errors inside the brain mask."""

from __future__ import annotations

import torch

#: T1 of a predicted R1 below this (1/s) is reported as 1 / this (10 s).
MIN_R1 = 0.1


def t1_from_r1(r1: torch.Tensor) -> torch.Tensor:
    """T1 in s from R1 in 1/s, with R1 clamped to >= 0.1 1/s (T1 <= 10 s)."""
    return 1 / r1.clamp(min=MIN_R1)


#: Tissue classes with their own T1 errors (BrainWeb labels of :mod:`pinqi.data.tissues`).
TISSUE_CLASSES: dict[str, int] = {"csf": 1, "gm": 2, "wm": 3}

#: T1 (s) below which ``t1_nrmse_short`` measures the errors (grey and white matter, not CSF).
SHORT_T1 = 2.0


def parameter_metrics(
    prediction: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    tissue: torch.Tensor | None = None,
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
    tissue
        Optional ``(batch, H, W)`` integer tissue label of every pixel (the dominant BrainWeb
        class; -1: unknown). With it, the T1 errors per tissue of :data:`TISSUE_CLASSES`
        inside ``mask`` are added.

    Returns
    -------
    dict
        ``t1_nrmse``, ``t1_mae`` (s), ``t1_clamped`` (share 0..1 of the mask pixels whose
        predicted R1 < :data:`MIN_R1`), ``m0_nrmse`` (complex M0), ``m0_mae``,
        ``t1_nrmse_short`` (nRMSE over the mask pixels with true T1 < :data:`SHORT_T1`) and
        ``t1_median_rel`` (median of |T1 - T1_true| / T1_true over the mask), each
        ``(batch,)``; with ``tissue`` also ``t1_nrmse_<name>`` and ``t1_bias_<name>`` (mean
        signed error T1 - T1_true in s) per tissue. A sample without pixels in a region
        gets NaN for that region.
    """
    weight = mask.to(prediction.dtype)
    count = weight.flatten(1).sum(1).clamp(min=1)
    t1, t1_true = t1_from_r1(prediction[:, -1]), t1_from_r1(target[:, -1])
    clamped = (prediction[:, -1] < MIN_R1).to(prediction.dtype) * weight
    m0 = torch.complex(prediction[:, 0], prediction[:, 1])
    m0_true = torch.complex(target[:, 0], target[:, 1])
    metrics = {
        "t1_nrmse": _nrmse(t1 - t1_true, t1_true, weight),
        "t1_mae": _mean(t1 - t1_true, weight, absolute=True),
        "t1_clamped": clamped.flatten(1).sum(1) / count,
        "m0_nrmse": _nrmse(m0 - m0_true, m0_true, weight),
        "m0_mae": _mean(m0 - m0_true, weight, absolute=True),
        "t1_nrmse_short": _nrmse(t1 - t1_true, t1_true, weight * (t1_true < SHORT_T1)),
        "t1_median_rel": _masked_median(((t1 - t1_true) / t1_true).abs(), mask),
    }
    if tissue is not None:
        for name, label in TISSUE_CLASSES.items():
            region = weight * (tissue == label)
            metrics[f"t1_nrmse_{name}"] = _nrmse(t1 - t1_true, t1_true, region)
            metrics[f"t1_bias_{name}"] = _mean(t1 - t1_true, region)
    return metrics


def _empty_to_nan(value: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``value`` ``(batch,)`` with NaN where ``weight`` has no pixel."""
    return torch.where(weight.flatten(1).sum(1) > 0, value, torch.nan)


def _nrmse(error: torch.Tensor, truth: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """||error|| / ||truth|| over the pixels of ``weight`` per sample (NaN without pixels)."""
    num = (error.abs() ** 2 * weight).flatten(1).sum(1)
    den = (truth.abs() ** 2 * weight).flatten(1).sum(1).clamp(min=1e-12)
    return _empty_to_nan(torch.sqrt(num / den), weight)


def _mean(error: torch.Tensor, weight: torch.Tensor, absolute: bool = False) -> torch.Tensor:
    """Mean (absolute) error over the pixels of ``weight`` per sample (NaN without pixels)."""
    error = error.abs() if absolute else error
    total = (error * weight).flatten(1).sum(1)
    return _empty_to_nan(total / weight.flatten(1).sum(1).clamp(min=1), weight)


def _masked_median(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Median of ``values`` over the pixels of ``mask`` per sample (NaN without pixels)."""
    filled = torch.where(mask, values, torch.nan)
    return filled.flatten(1).nanmedian(1).values
