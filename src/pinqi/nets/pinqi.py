"""PINQI: the unrolled physics-informed network (paper Sec. 2.3, Eq. 11-13, Fig. 2)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pinqi.nets.unet import UNet
from pinqi.physics import CartesianAcquisition, SignalModel
from pinqi.solvers import data_consistency, signal_fit

#: softplus sharpness of the positive regularisation strengths (paper: beta = 5).
LAMBDA_BETA = 5.0


def inverse_softplus(value: float, beta: float = LAMBDA_BETA) -> float:
    """The x with softplus_beta(x) = value."""
    return math.log(math.expm1(beta * value)) / beta


def complex_to_channels(images: torch.Tensor) -> torch.Tensor:
    """Complex images ``(batch, T, H, W)`` -> real network input ``(batch, 2, T, H, W)``.

    The one place where pinqi turns complex images into real channels (real, imaginary).
    """
    return torch.stack([images.real, images.imag], dim=1)


def channels_to_complex(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`complex_to_channels`."""
    return torch.complex(x[:, 0], x[:, 1])


@dataclass(frozen=True)
class PINQIConfig:
    """Architecture and solver settings of PINQI (defaults: the paper's).

    Attributes
    ----------
    iterations
        Unrolled iterations T.
    image_features, parameter_features
        UNet channels per level of Y_theta and P_theta.
    cg_iterations, cg_init_iterations
        CG iterations per data-consistency layer and for the initial images.
    fit_iterations
        Newton iterations of the signal fit.
    lambda_p, lambda_y, lambda_q, lambda_q_step
        Initial strengths: lambda_p, lambda_y, and lambda_q + lambda_q_step * i at iteration i.
    parameter_init, parameter_scale
        P_theta's output p = init + 10 scale tanh(o), per parameter (a well-scaled start);
        default: the signal model's ``typical`` values and spreads.
    use_image_regulariser, use_parameter_regulariser, use_signal_fit, iterate_networks
        Ablations (Sec. 3.4): without Y_theta, without P_theta (lambda_p = 0: a pure fit),
        without the non-linear solver (p = P_theta), UNets applied once.
    """

    iterations: int = 5
    image_features: tuple[int, ...] = (16, 32, 48, 64)
    parameter_features: tuple[int, ...] = (32, 64, 96, 128)
    cg_iterations: int = 15
    cg_init_iterations: int = 2
    fit_iterations: int = 20
    lambda_p: float = 3.0
    lambda_y: float = 0.1
    lambda_q: float = 0.1
    lambda_q_step: float = 0.05
    parameter_init: tuple[float, ...] | None = None
    parameter_scale: tuple[float, ...] | None = None
    use_image_regulariser: bool = True
    use_parameter_regulariser: bool = True
    use_signal_fit: bool = True
    iterate_networks: bool = True


@dataclass
class PINQIOutput:
    """All iterates of a PINQI forward pass (index 0: the initial estimate).

    Attributes
    ----------
    parameters
        ``T + 1`` parameter maps ``(batch, P, H, W)``; the last is the prediction.
    images
        ``T + 1`` image series ``(batch, n_tau, H, W)``.
    parameter_priors
        The ``T + 1`` outputs of P_theta (p_reg).
    """

    parameters: list[torch.Tensor]
    images: list[torch.Tensor]
    parameter_priors: list[torch.Tensor]


class PINQI(nn.Module):
    """Unrolled half-quadratic splitting with learned image and parameter regularisers.

    Each iteration i = 1..T (Fig. 2) computes y_reg = Y_theta(y_{i-1}, i), the data-consistent
    images y_i = argmin ||A y - k||^2 + lambda_y ||y - y_reg||^2 + lambda_q ||y - q(p_{i-1})||^2
    (Eq. 12, CG layer), p_reg = P_theta(y_i, i) and
    p_i = argmin ||q(p) - y_i||^2 + lambda_p ||p - p_reg||^2 (Eq. 13, signal-fit layer).
    The initial images are a few CG iterations on the normal equations, p_0 = P_theta(y_0, 0).
    Weights are shared across iterations; the strengths are per iteration, positive through
    softplus with beta = 5.

    Parameters
    ----------
    model
        The signal model q (its ``n_params`` and bounds define the parameters).
    n_tau
        Number of frames (delays).
    config
        Architecture and solver settings.
    """

    def __init__(self, model: SignalModel, config: PINQIConfig = PINQIConfig()) -> None:
        super().__init__()
        self.model = model
        self.config = config
        n_tau, n_params = model.n_tau, model.n_params
        self.image_net = (
            UNet(2, 2, config.image_features, pseudo3d=True)
            if config.use_image_regulariser
            else None
        )
        self.parameter_net = UNet(2 * n_tau, n_params, config.parameter_features)
        init = config.parameter_init or tuple(v for v, _ in model.typical)
        scale = config.parameter_scale or tuple(s for _, s in model.typical)
        if len(init) != n_params or len(scale) != n_params:
            raise ValueError(
                f"parameter_init and parameter_scale need {n_params} values for "
                f"{type(model).__name__}, got {init}, {scale}"
            )
        self.register_buffer("parameter_init", torch.tensor(init))
        self.register_buffer("parameter_scale", torch.tensor(scale))
        t = config.iterations
        self.raw_lambda_y = nn.Parameter(torch.full((t,), inverse_softplus(config.lambda_y)))
        self.raw_lambda_q = nn.Parameter(
            torch.tensor(
                [
                    inverse_softplus(config.lambda_q + config.lambda_q_step * i)
                    for i in range(1, t + 1)
                ]
            )
        )
        self.raw_lambda_p = nn.Parameter(torch.full((t,), inverse_softplus(config.lambda_p)))

    def strengths(self) -> dict[str, torch.Tensor]:
        """The positive per-iteration strengths lambda_y, lambda_q, lambda_p, each ``(T,)``."""
        return {
            name: F.softplus(getattr(self, f"raw_{name}"), beta=LAMBDA_BETA)
            for name in ("lambda_y", "lambda_q", "lambda_p")
        }

    def predict_parameters(self, images: torch.Tensor, iteration: int) -> torch.Tensor:
        """P_theta: images ``(batch, n_tau, H, W)`` -> parameters ``(batch, P, H, W)``."""
        x = complex_to_channels(images).flatten(1, 2)
        out = self.parameter_net(x, torch.full((len(x),), float(iteration), device=x.device))
        shape = (1, -1, 1, 1)
        p = self.parameter_init.reshape(shape) + 10 * self.parameter_scale.reshape(
            shape
        ) * torch.tanh(out)
        lower = torch.tensor([lo for lo, _ in self.model.bounds], device=p.device, dtype=p.dtype)
        upper = torch.tensor([hi for _, hi in self.model.bounds], device=p.device, dtype=p.dtype)
        return torch.maximum(torch.minimum(p, upper.reshape(shape)), lower.reshape(shape))

    def regularise_images(self, images: torch.Tensor, iteration: int) -> torch.Tensor:
        """Y_theta: a residual correction of the images ``(batch, n_tau, H, W)``."""
        x = complex_to_channels(images)
        iteration_t = torch.full((len(x),), float(iteration), device=x.device)
        return images + channels_to_complex(self.image_net(x, iteration_t))

    def initial_images(
        self, kspace: torch.Tensor, coil_maps: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """A few CG iterations on A^H A y = A^H k from y = A^H k (no gradient needed)."""
        with torch.no_grad():
            start = CartesianAcquisition(coil_maps, mask).adjoint(kspace)
            return data_consistency(
                kspace,
                coil_maps,
                mask,
                [],
                [],
                max_iter=self.config.cg_init_iterations,
                tol=0.0,
                x0=start,
                warn=False,
            )

    def forward(
        self, kspace: torch.Tensor, coil_maps: torch.Tensor, mask: torch.Tensor
    ) -> PINQIOutput:
        """Reconstruct parameter maps from k-space.

        Parameters
        ----------
        kspace
            ``(batch, n_tau, n_coils, H, W)`` complex.
        coil_maps
            ``(batch, n_coils, H, W)`` complex.
        mask
            Sampling mask broadcastable to ``(batch, n_tau, H, W)``.
        """
        config = self.config
        lam = self.strengths()
        y = self.initial_images(kspace, coil_maps, mask)
        p_reg = self.predict_parameters(y, 0)
        p = p_reg
        out = PINQIOutput([p], [y], [p_reg])
        y_reg = y
        for i in range(config.iterations):
            lambdas: Sequence[torch.Tensor] = [lam["lambda_q"][i]]
            priors: Sequence[torch.Tensor] = [self.model(p)]
            if self.image_net is not None:
                if config.iterate_networks or i == 0:
                    y_reg = self.regularise_images(
                        y if config.iterate_networks else out.images[0], i + 1
                    )
                lambdas, priors = [*lambdas, lam["lambda_y"][i]], [*priors, y_reg]
            y = data_consistency(
                kspace,
                coil_maps,
                mask,
                lambdas,
                priors,
                max_iter=config.cg_iterations,
                x0=y.detach(),
                warn=False,
            )
            if config.iterate_networks:
                p_reg = self.predict_parameters(y, i + 1)
            if not config.use_signal_fit:
                p = p_reg
            else:
                lam_p = lam["lambda_p"][i] if config.use_parameter_regulariser else torch.zeros(())
                p = signal_fit(
                    self.model,
                    y,
                    p_reg,
                    lam_p,
                    p0=p.detach(),
                    max_iter=config.fit_iterations,
                    warn=False,
                )
            out.parameters.append(p)
            out.images.append(y)
            out.parameter_priors.append(p_reg)
        return out
