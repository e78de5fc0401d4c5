"""DOPAMINE (Jun et al., MedIA 2021), adapted as in the paper's Sec. 3.3.

Unrolled gradient descent on the signal model's data term with learned regularisers:
p_0 = D_M(y_0) (a pixel-wise network on the initial images), then for n = 1..N

    p_n = p_{n-1} - c tanh((mu_n grad_p 0.5 ||A q(p) - k||^2 + lambda_n D_R(p_{n-1})) / c)

with mu_n, lambda_n > 0 learned per step (softplus, beta 5; start 0.05 and 0.5), D_R two small
CNNs (on the M0 channels and on R1) whose last layer starts at zero, and c the per-parameter
soft-clipping threshold the paper added for stable training. The parameters are kept inside
the signal model's bounds after each step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pinqi.nets.mantis import check_relaxation_model
from pinqi.nets.method_config import MethodConfig
from pinqi.nets.pinqi import (
    LAMBDA_BETA,
    PINQIOutput,
    box_output,
    cg_initial_images,
    checked_inputs,
    complex_to_channels,
    inverse_softplus,
)
from pinqi.physics import CartesianAcquisition, SignalModel


def plain_cnn(
    c_in: int, c_out: int, hidden: int, layers: int, kernel: int, instance_norm: bool
) -> nn.Sequential:
    """A plain CNN of ``layers`` convolutions (``hidden`` channels, ReLU).

    With ``instance_norm``, every hidden layer is instance-normalised and the last one (to
    ``c_out``) starts at zero: a regulariser that starts neutral.
    """
    modules: list[nn.Module] = []
    c = c_in
    for _ in range(layers - 1):
        modules.append(nn.Conv2d(c, hidden, kernel, padding=kernel // 2))
        if instance_norm:
            modules.append(nn.InstanceNorm2d(hidden, affine=True))
        modules.append(nn.ReLU())
        c = hidden
    last = nn.Conv2d(c, c_out, kernel, padding=kernel // 2)
    if instance_norm:
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
    modules.append(last)
    return nn.Sequential(*modules)


class DOPAMINE(nn.Module):
    """Unrolled gradient descent with learned regularisers and soft-clipped updates.

    Parameters
    ----------
    signal_model
        A (Re M0, Im M0, R1) relaxation model.
    method
        ``iterations`` (gradient steps; the paper: 10), ``hidden`` and ``layers`` of the
        CNNs, ``clip`` (one threshold per parameter).
    cg_init_iterations
        CG iterations of the initial images.
    """

    def __init__(
        self, signal_model: SignalModel, method: MethodConfig, cg_init_iterations: int = 2
    ) -> None:
        super().__init__()
        check_relaxation_model(signal_model, "DOPAMINE")
        if len(method.clip) != signal_model.n_params or min(method.clip) <= 0:
            raise ValueError(
                f"method.clip needs {signal_model.n_params} positive thresholds, got {method.clip}"
            )
        self.signal_model = signal_model
        self.cg_init_iterations = cg_init_iterations
        n_tau, h, n = signal_model.n_tau, method.hidden, method.layers
        self.start_net = plain_cnn(2 * n_tau, signal_model.n_params, h, n, 1, False)
        self.m0_regulariser = plain_cnn(2, 2, h, n, 3, True)
        self.r1_regulariser = plain_cnn(1, 1, h, n, 3, True)
        steps = method.iterations
        self.raw_mu = nn.Parameter(torch.full((steps,), inverse_softplus(0.05)))
        self.raw_lambda = nn.Parameter(torch.full((steps,), inverse_softplus(0.5)))
        self.register_buffer("clip", torch.tensor(method.clip))

    def initial_images(
        self, acquisition: CartesianAcquisition, kspace: torch.Tensor
    ) -> torch.Tensor:
        """y_0: :func:`~pinqi.nets.pinqi.cg_initial_images`."""
        return cg_initial_images(acquisition, kspace, self.cg_init_iterations)

    def start(self, images: torch.Tensor) -> torch.Tensor:
        """p_0 = D_M(y_0) ``(batch, 3, H, W)`` from images ``(batch, n_tau, H, W)``."""
        raw = self.start_net(complex_to_channels(images).flatten(1, 2))
        typical = self.signal_model.typical
        return box_output(
            raw, [v for v, _ in typical], [s for _, s in typical], self.signal_model.bounds
        )

    def data_gradient(
        self, p: torch.Tensor, acquisition: CartesianAcquisition, kspace: torch.Tensor
    ) -> torch.Tensor:
        """grad_p 0.5 ||A q(p) - k||^2 = Re(J^H A^H (A q(p) - k)), ``(batch, 3, H, W)``."""
        residual = acquisition.adjoint(acquisition.forward(self.signal_model(p)) - kspace)
        jacobian = self.signal_model.jacobian(p)  # (batch, n_tau, P, H, W)
        return (jacobian.conj() * residual.unsqueeze(2)).real.sum(1)

    def forward(
        self, kspace: torch.Tensor, coil_maps: torch.Tensor, mask: torch.Tensor
    ) -> PINQIOutput:
        """All iterates p_0..p_N; the last is the prediction."""
        acquisition, kspace = checked_inputs(self.signal_model, kspace, coil_maps, mask)
        images = self.initial_images(acquisition, kspace)
        p = self.start(images)
        out = PINQIOutput([p], [images], [p])
        mu = F.softplus(self.raw_mu, beta=LAMBDA_BETA).to(p.dtype)
        lam = F.softplus(self.raw_lambda, beta=LAMBDA_BETA).to(p.dtype)
        clip = self.clip.to(p.dtype).reshape(1, -1, 1, 1)
        lower, upper = (
            torch.tensor(b, dtype=p.dtype, device=p.device).reshape(1, -1, 1, 1)
            for b in zip(*self.signal_model.bounds, strict=True)
        )
        for n in range(len(mu)):
            regulariser = torch.cat(
                [self.m0_regulariser(p[:, :2]), self.r1_regulariser(p[:, 2:])], 1
            )
            update = mu[n] * self.data_gradient(p, acquisition, kspace) + lam[n] * regulariser
            p = p - clip * torch.tanh(update / clip)
            p = torch.maximum(torch.minimum(p, upper), lower)
            out.parameters.append(p)
        return out
