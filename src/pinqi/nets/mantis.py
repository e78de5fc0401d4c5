"""MANTIS (Liu et al., MRM 2019), adapted as in the paper's Sec. 3.3.

A UNet maps the zero-filled magnitude images straight to |M0| and R1; it sees no phase, so
Im M0 is 0. The physics enters only through the loss (a k-space consistency term,
:mod:`pinqi.training.objectives`). The UNet is pinqi's residual UNet with the paper's width
by default; ``method.features`` sizes it down for CPU presets.
"""

from __future__ import annotations

import torch
from torch import nn

from pinqi.nets.method_config import MethodConfig
from pinqi.nets.pinqi import PINQIOutput, box_output, checked_inputs
from pinqi.nets.unet import UNet
from pinqi.physics import SignalModel


def check_relaxation_model(signal_model: SignalModel, method: str) -> None:
    """The magnitude-based references predict (|M0|, R1): they need (Re M0, Im M0, R1) models."""
    if tuple(signal_model.parameter_names) != ("Re M0", "Im M0", "R1"):
        raise ValueError(
            f"{method} predicts |M0| and R1 and needs a signal model with parameters "
            f"(Re M0, Im M0, R1), got {signal_model.parameter_names}"
        )


def magnitude_parameters(out: torch.Tensor, signal_model: SignalModel) -> torch.Tensor:
    """Raw output ``(batch, 2, H, W)`` -> parameters ``(batch, 3, H, W)`` = (|M0|, 0, R1).

    |M0| lies in (0, the model's upper M0 bound), R1 in the model's R1 bounds.
    """
    (m0, m0_scale), _, (r1, r1_scale) = signal_model.typical
    m0_box, _, r1_box = signal_model.bounds
    mapped = box_output(out, (m0, r1), (m0_scale, r1_scale), ((0.0, m0_box[1]), r1_box))
    return torch.stack([mapped[:, 0], torch.zeros_like(mapped[:, 0]), mapped[:, 1]], 1)


class MANTIS(nn.Module):
    """UNet from zero-filled magnitude images ``|A^H k|`` to (|M0|, 0, R1).

    Parameters
    ----------
    signal_model
        A (Re M0, Im M0, R1) relaxation model (its delays set the input channels).
    method
        ``features`` and ``norm_groups`` of the UNet.
    """

    def __init__(self, signal_model: SignalModel, method: MethodConfig) -> None:
        super().__init__()
        check_relaxation_model(signal_model, "MANTIS")
        self.signal_model = signal_model
        self.kspace_weight = method.kspace_weight
        self.net = UNet(signal_model.n_tau, 2, method.features, norm_groups=method.norm_groups)

    def forward(
        self, kspace: torch.Tensor, coil_maps: torch.Tensor, mask: torch.Tensor
    ) -> PINQIOutput:
        """Parameters ``(batch, 3, H, W)`` from k-space ``(batch, n_tau, n_coils, H, W)``."""
        acquisition, kspace = checked_inputs(self.signal_model, kspace, coil_maps, mask)
        zero_filled = acquisition.adjoint(kspace)
        iteration = zero_filled.real.new_zeros(len(zero_filled))
        p = magnitude_parameters(self.net(zero_filled.abs(), iteration), self.signal_model)
        return PINQIOutput([p], [zero_filled], [p])
