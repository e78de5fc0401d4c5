"""Training losses (paper Sec. 3.2)."""

from __future__ import annotations

import torch

from pinqi.nets.pinqi import PINQIOutput


def parameter_loss(
    prediction: torch.Tensor, target: torch.Tensor, brain_mask: torch.Tensor, outside_weight: float
) -> torch.Tensor:
    """MSE over (Re M0, Im M0, R1), pixels outside the brain mask weighted by ``outside_weight``.

    Parameters
    ----------
    prediction, target
        ``(batch, P, H, W)``.
    brain_mask
        Bool ``(batch, H, W)``.
    """
    weight = brain_mask.to(prediction.dtype).unsqueeze(1) + outside_weight
    return ((prediction - target) ** 2 * weight).mean()


def pinqi_loss(
    output: PINQIOutput,
    target: torch.Tensor,
    brain_mask: torch.Tensor,
    deep_supervision: float,
    outside_weight: float,
) -> torch.Tensor:
    """Loss of the final parameters + ``deep_supervision`` x the loss of each earlier iterate."""
    losses = [parameter_loss(p, target, brain_mask, outside_weight) for p in output.parameters]
    return losses[-1] + deep_supervision * sum(losses[:-1])
