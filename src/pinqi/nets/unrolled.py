"""Unrolled image reconstructions for the ablations of the paper's Sec. 3.4.

Both use PINQI's image UNet (Y_theta's architecture) in a cascade of
y_i = argmin ||A y - k||^2 + lambda_i ||y - (y_{i-1} + Y(y_{i-1}))||^2 (CG layer), and then
estimate the parameters from the last images in one of two ways:

- :class:`UnrolledUNet`: a separate parameter UNet (P_theta's architecture), no signal model
  at inference ("unrolled reconstruction + separate parameter UNet");
- :class:`UnrolledFit`: the pixel-wise signal fit (the differentiable fit layer), trained
  either end to end through it on the parameter MSE or on the image MSE alone, the fit then
  applied only at inference ("neural-network reconstruction and separate regression").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pinqi.nets.method_config import MethodConfig
from pinqi.nets.pinqi import (
    LAMBDA_BETA,
    PINQIConfig,
    PINQIOutput,
    box_output,
    cascade,
    cg_initial_images,
    channels_to_complex,
    checked_inputs,
    complex_to_channels,
    inverse_softplus,
)
from pinqi.nets.unet import UNet
from pinqi.physics import CartesianAcquisition, SignalModel
from pinqi.solvers.signal_fit import solve_signal_fit

#: Strength of the fit's weak pull towards its start (|M0| of the last frame, R1 = 1 1/s),
#: the baseline's (:class:`~pinqi.evaluation.baseline.BaselineConfig`): it keeps pixels
#: without signal finite.
FIT_PRIOR_STRENGTH = 1e-3


class UnrolledReconstruction(nn.Module):
    """Cascades of Y_theta and the CG data-consistency layer: images from k-space.

    Parameters
    ----------
    signal_model
        The signal model (for the number of frames).
    model
        PINQI's settings: ``image_features``, ``image_norm_groups``, ``cg_iterations``,
        ``cg_init_iterations`` and the start of the strengths ``lambda_y``.
    iterations
        Cascades.
    """

    def __init__(self, signal_model: SignalModel, model: PINQIConfig, iterations: int) -> None:
        super().__init__()
        self.signal_model = signal_model
        self.model_config = model
        self.image_net = UNet(
            2, 2, model.image_features, pseudo3d=True, norm_groups=model.image_norm_groups
        )
        self.raw_lambda_y = nn.Parameter(
            torch.full((iterations,), inverse_softplus(model.lambda_y))
        )

    def images(self, acquisition: CartesianAcquisition, kspace: torch.Tensor) -> list[torch.Tensor]:
        """y_0 (a few CG iterations) and the images of every cascade, ``(batch, n_tau, H, W)``."""
        config = self.model_config
        y = cg_initial_images(acquisition, kspace, config.cg_init_iterations)

        def prior_of(y: torch.Tensor, iteration: int) -> torch.Tensor:
            x = complex_to_channels(y)
            return y + channels_to_complex(self.image_net(x, x.new_full((len(x),), iteration)))

        strengths = F.softplus(self.raw_lambda_y, beta=LAMBDA_BETA)
        return cascade(acquisition, kspace, y, strengths, prior_of, config.cg_iterations)


class UnrolledUNet(UnrolledReconstruction):
    """Unrolled reconstruction + a separate parameter UNet (P_theta's architecture)."""

    def __init__(self, signal_model: SignalModel, model: PINQIConfig, method: MethodConfig) -> None:
        super().__init__(signal_model, model, method.iterations)
        self.image_weight = method.image_weight
        self.parameter_net = UNet(
            2 * signal_model.n_tau,
            signal_model.n_params,
            model.parameter_features,
            norm_groups=model.parameter_norm_groups,
        )

    def forward(
        self, kspace: torch.Tensor, coil_maps: torch.Tensor, mask: torch.Tensor
    ) -> PINQIOutput:
        """Parameters ``(batch, P, H, W)`` of the last images; all images in ``images``."""
        acquisition, kspace = checked_inputs(self.signal_model, kspace, coil_maps, mask)
        images = self.images(acquisition, kspace)
        x = complex_to_channels(images[-1]).flatten(1, 2)
        raw = self.parameter_net(x, x.new_zeros(len(x)))
        typical = self.signal_model.typical
        p = box_output(
            raw, [v for v, _ in typical], [s for _, s in typical], self.signal_model.bounds
        )
        return PINQIOutput([p], images, [p])


class UnrolledFit(UnrolledReconstruction):
    """Unrolled reconstruction + the pixel-wise signal fit of its last images.

    With ``method.end_to_end`` the fit layer is part of training (gradients by implicit
    differentiation); without, training sees only the images and skips the fit, which runs
    in evaluation mode (``model.eval()``) only.
    """

    def __init__(self, signal_model: SignalModel, model: PINQIConfig, method: MethodConfig) -> None:
        super().__init__(signal_model, model, method.iterations)
        self.end_to_end = method.end_to_end

    def forward(
        self, kspace: torch.Tensor, coil_maps: torch.Tensor, mask: torch.Tensor
    ) -> PINQIOutput:
        """The fitted parameters (or, training without end to end, only the start)."""
        acquisition, kspace = checked_inputs(self.signal_model, kspace, coil_maps, mask)
        images = self.images(acquisition, kspace)
        start = self.signal_model.initial_parameters(images[-1].detach())
        out = PINQIOutput([start], images, [start])
        if self.training and not self.end_to_end:
            return out
        strength = start.new_full(start.shape[:2], FIT_PRIOR_STRENGTH)
        p, info = solve_signal_fit(
            self.signal_model,
            images[-1],
            start,
            strength,
            start,
            solver=self.model_config.fit_solver,
            max_iter=self.model_config.fit_iterations,
        )
        out.parameters.append(p)
        out.fit_infos.append(info)
        return out
