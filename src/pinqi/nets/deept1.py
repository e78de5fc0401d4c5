"""DeepT1 (Jeelani et al., 2020), adapted as in the paper's Sec. 3.3.

Two separately trained parts: a recurrent CNN with CG data-consistency layers reconstructs
the images (trained on the L1 error of their magnitude), then a UNet maps the reconstructed
magnitudes to |M0| and R1 (trained on the L1 error of the parameters, the reconstruction
detached). The recurrent CNN carries a hidden state per layer from cascade to cascade
(recurrence over iterations, as in CRNN); the delays enter as channels rather than through a
second, bidirectional recurrence over time: a simplification of the original CRNN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pinqi.nets.mantis import check_relaxation_model, magnitude_parameters
from pinqi.nets.method_config import MethodConfig
from pinqi.nets.pinqi import (
    LAMBDA_BETA,
    PINQIConfig,
    PINQIOutput,
    cascade,
    cg_initial_images,
    checked_inputs,
    inverse_softplus,
)
from pinqi.nets.unet import UNet
from pinqi.physics import CartesianAcquisition, SignalModel


class RecurrentRegulariser(nn.Module):
    """Convolutions whose hidden states recur over the cascades; a residual image update.

    Layer l at cascade i: h_l^i = ReLU(W_l h_{l-1}^i + U_l h_l^{i-1}) with h_0^i the input;
    a last convolution maps to the update. The update starts at zero.
    """

    def __init__(self, channels: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.inputs = nn.ModuleList(
            nn.Conv2d(channels if i == 0 else hidden, hidden, 3, padding=1)
            for i in range(layers - 1)
        )
        self.recurrent = nn.ModuleList(
            nn.Conv2d(hidden, hidden, 3, padding=1, bias=False) for _ in range(layers - 1)
        )
        self.output = nn.Conv2d(hidden, channels, 3, padding=1)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def forward(
        self, x: torch.Tensor, hidden: list[torch.Tensor] | None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The update of ``x`` ``(batch, C, H, W)`` and the new hidden states."""
        states = []
        h = x
        for i, (conv, recur) in enumerate(zip(self.inputs, self.recurrent, strict=True)):
            pre = conv(h)
            if hidden is not None:
                pre = pre + recur(hidden[i])
            h = F.relu(pre)
            states.append(h)
        return self.output(h), states


class DeepT1(nn.Module):
    """Recurrent-CNN reconstruction with CG data consistency, then a parameter UNet on |y|.

    Parameters
    ----------
    signal_model
        A (Re M0, Im M0, R1) relaxation model.
    model
        PINQI's CG settings (``cg_iterations``, ``cg_init_iterations``).
    method
        ``iterations`` (cascades), ``hidden`` and ``layers`` of the recurrent CNN,
        ``features`` and ``norm_groups`` of the parameter UNet.
    """

    def __init__(self, signal_model: SignalModel, model: PINQIConfig, method: MethodConfig) -> None:
        super().__init__()
        check_relaxation_model(signal_model, "DeepT1")
        self.signal_model = signal_model
        self.model_config = model
        n_tau = signal_model.n_tau
        self.regulariser = RecurrentRegulariser(2 * n_tau, method.hidden, method.layers)
        self.raw_lambda = nn.Parameter(torch.full((method.iterations,), inverse_softplus(1.0)))
        self.parameter_net = UNet(n_tau, 2, method.features, norm_groups=method.norm_groups)

    def images(self, acquisition: CartesianAcquisition, kspace: torch.Tensor) -> list[torch.Tensor]:
        """y_0 and the images of every cascade, complex ``(batch, n_tau, H, W)``."""
        config = self.model_config
        y = cg_initial_images(acquisition, kspace, config.cg_init_iterations)
        n_tau = y.shape[1]
        hidden = None

        def prior_of(y: torch.Tensor, iteration: int) -> torch.Tensor:
            nonlocal hidden
            update, hidden = self.regulariser(torch.cat([y.real, y.imag], 1), hidden)
            return y + torch.complex(update[:, :n_tau], update[:, n_tau:])

        strengths = F.softplus(self.raw_lambda, beta=LAMBDA_BETA)
        return cascade(acquisition, kspace, y, strengths, prior_of, config.cg_iterations)

    def parameters_of(self, magnitude: torch.Tensor) -> torch.Tensor:
        """The parameter UNet: magnitudes ``(batch, n_tau, H, W)`` -> (|M0|, 0, R1)."""
        raw = self.parameter_net(magnitude, magnitude.new_zeros(len(magnitude)))
        return magnitude_parameters(raw, self.signal_model)

    def forward(
        self, kspace: torch.Tensor, coil_maps: torch.Tensor, mask: torch.Tensor
    ) -> PINQIOutput:
        """Parameters from the reconstruction's last magnitudes (detached: trained apart)."""
        acquisition, kspace = checked_inputs(self.signal_model, kspace, coil_maps, mask)
        images = self.images(acquisition, kspace)
        p = self.parameters_of(images[-1].detach().abs())
        return PINQIOutput([p], images, [p])
