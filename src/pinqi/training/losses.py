"""Training losses (paper Sec. 3.2)."""

from __future__ import annotations

import torch

from pinqi.metrics import MIN_R1
from pinqi.nets.pinqi import PINQIOutput


def pixel_weight(
    brain_mask: torch.Tensor, outside_weight: float, dtype: torch.dtype
) -> torch.Tensor:
    """Loss weight per pixel ``(batch, 1, H, W)``: 1 inside the brain mask, else ``outside_weight``.

    Parameters
    ----------
    brain_mask
        Bool ``(batch, H, W)``.
    """
    inside = brain_mask.unsqueeze(1)
    return torch.where(inside, 1.0, outside_weight).to(dtype)


def parameter_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    brain_mask: torch.Tensor,
    outside_weight: float,
    t1_weight_power: float = 0.0,
    t1_weight_max: float = 0.0,
) -> torch.Tensor:
    """Weighted MSE over (Re M0, Im M0, R1).

    Pixels outside the brain mask are weighted by ``outside_weight`` (inside: 1). The R1
    channel's squared error is further weighted by ``(T1_true / 1 s) ** t1_weight_power``
    (T1_true = 1 / max(R1_true, 0.1 1/s)): 0 is the paper's MSE on R1; 2 weights the relative
    R1 error, i.e. the relative T1 error to first order; 4 is the squared T1 error in s^2 to
    first order (dT1 = -dR1 T1^2), the quantity the T1 nRMSE measures, which the plain R1 MSE
    under-weights in long-T1 tissue (CSF) by orders of magnitude. ``t1_weight_max`` > 0 (s)
    clamps T1_true in that weight to at most this value, so that long T1 (CSF, 2-4 s) is
    weighted like T1 = ``t1_weight_max`` (0: no clamp).

    Parameters
    ----------
    prediction, target
        ``(batch, P, H, W)``; the last channel is R1 in 1/s.
    brain_mask
        Bool ``(batch, H, W)``.
    """
    weight = pixel_weight(brain_mask, outside_weight, prediction.dtype)
    squared = (prediction - target) ** 2
    if t1_weight_power:
        t1_true = 1 / target[:, -1:].clamp(min=MIN_R1)
        if t1_weight_max > 0:
            t1_true = t1_true.clamp(max=t1_weight_max)
        squared = torch.cat([squared[:, :-1], squared[:, -1:] * t1_true**t1_weight_power], 1)
    return (squared * weight).mean()


def pinqi_loss(
    output: PINQIOutput,
    target: torch.Tensor,
    brain_mask: torch.Tensor,
    deep_supervision: float,
    outside_weight: float,
    t1_weight_power: float = 0.0,
    t1_weight_max: float = 0.0,
) -> torch.Tensor:
    """Loss of the final parameters + ``deep_supervision`` x the loss of each earlier iterate."""
    losses = [
        parameter_loss(p, target, brain_mask, outside_weight, t1_weight_power, t1_weight_max)
        for p in output.parameters
    ]
    return losses[-1] + deep_supervision * sum(losses[:-1])
