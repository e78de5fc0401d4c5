"""PINQI: the unrolled physics-informed network (paper Sec. 2.3, Eq. 11-13, Fig. 2)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from pinqi._checks import one_read
from pinqi.nets.precision import UNetPrecision, check_unet_precision, unet_autocast
from pinqi.nets.unet import UNet
from pinqi.physics import CartesianAcquisition, SignalModel, signal_model
from pinqi.solvers import SolverInfo, conjugate_gradient
from pinqi.solvers.data_consistency import solve_data_consistency
from pinqi.solvers.signal_fit import Solver, solve_signal_fit

#: How the layers may synchronise with the host (:attr:`PINQIConfig.sync_free`).
SyncFree = Literal["auto", "always", "never"]

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


def box_output(
    out: torch.Tensor,
    init: Sequence[float],
    scale: Sequence[float],
    bounds: Sequence[tuple[float, float]],
) -> torch.Tensor:
    """Map a network's raw output ``(batch, P, H, W)`` smoothly into the open box ``bounds``.

    p = lower + (upper - lower) sigmoid(a o + b), with b such that o = 0 gives ``init`` and a
    such that the slope there is 10 ``scale`` (the scaling of the authors'
    ``init + 10 scale tanh(o)``). Unlike a clamp, every output keeps a non-zero gradient (in
    float32 up to |a o + b| of about 80) and stays inside the signal fit's bounds.
    """
    return apply_box(out, box_constants(init, scale, bounds, out.device))


def box_constants(
    init: Sequence[float],
    scale: Sequence[float],
    bounds: Sequence[tuple[float, float]],
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The constants of :func:`box_output` ``(4, P)`` float64: gain, offset, lower, width.

    A network keeps them as a buffer, so that mapping its output creates no tensor from host
    data (no host-to-device copy in the step).
    """
    lower_bounds, upper_bounds = zip(*bounds, strict=True)
    init_t, scale_t, lower, upper = torch.tensor(
        [tuple(init), tuple(scale), lower_bounds, upper_bounds],
        dtype=torch.float64,
        device=device,
    ).unbind(0)
    width = upper - lower
    start = (init_t - lower) / width
    gain = 10 * scale_t / (width * start * (1 - start))
    return torch.stack([gain, torch.logit(start), lower, width])


def apply_box(out: torch.Tensor, constants: torch.Tensor) -> torch.Tensor:
    """:func:`box_output` of ``out`` ``(batch, P, ...)`` with :func:`box_constants`."""
    gain, offset, lower, width = constants.to(out.dtype).reshape(4, 1, -1, *(1,) * (out.ndim - 2))
    a = gain * out + offset
    # each side measured from its own bound, so that neither saturates early in float32
    upper = lower + width
    return torch.where(a < 0, lower + width * torch.sigmoid(a), upper - width * torch.sigmoid(-a))


def checked_inputs(
    signal_model: SignalModel, kspace: torch.Tensor, coil_maps: torch.Tensor, mask: torch.Tensor
) -> tuple[CartesianAcquisition, torch.Tensor]:
    """The acquisition of a network's inputs and the validated k-space.

    Raises a clear error for wrong shapes, dtypes, non-finite values, or a number of frames
    other than the signal model's delays. The value checks cost one host read together
    (:func:`~pinqi._checks.one_read`).
    """
    with one_read():
        acquisition = CartesianAcquisition(coil_maps, mask)
        kspace = acquisition.check_kspace("kspace", kspace)
    if acquisition.image_shape[1] != signal_model.n_tau:
        raise ValueError(
            f"kspace has {acquisition.image_shape[1]} frames but the network was built for "
            f"n_tau={signal_model.n_tau}"
        )
    return acquisition, kspace


def cg_initial_images(
    acquisition: CartesianAcquisition,
    kspace: torch.Tensor,
    iterations: int,
    kspace_adjoint: torch.Tensor | None = None,
) -> torch.Tensor:
    """A few CG iterations on A^H A y = A^H k from y = A^H k: the initial images y_0.

    Differentiated through the (few) iterations, so that gradients with respect to the
    k-space and the coil maps include the path through y_0 into the networks.
    ``kspace_adjoint`` is A^H k if the caller has it already.
    """
    adjoint = acquisition.adjoint(kspace) if kspace_adjoint is None else kspace_adjoint
    y, _ = conjugate_gradient(
        acquisition.gram, adjoint, adjoint, max_iter=iterations, tol=0.0, early_exit=False
    )
    return y


def data_consistency_tolerance(dtype: torch.dtype) -> float:
    """The CG layers' relative tolerance in a network: 1e-10 in complex128, else 1e-5."""
    return 1e-10 if dtype == torch.complex128 else 1e-5


def cascade(
    acquisition: CartesianAcquisition,
    kspace: torch.Tensor,
    y0: torch.Tensor,
    strengths: torch.Tensor,
    prior_of: Callable[[torch.Tensor, int], torch.Tensor],
    max_iter: int,
) -> list[torch.Tensor]:
    """An unrolled image reconstruction: y_0 and y_i for i = 1..len(strengths).

    y_i = argmin ||A y - k||^2 + lambda_i ||y - prior_of(y_{i-1}, i)||^2 (the CG layer, warm
    started at y_{i-1}), with ``prior_of`` a learned regulariser's image.
    """
    y, images = y0, [y0]
    batch = len(kspace)
    kspace_adjoint = acquisition.adjoint(kspace)
    for i, strength in enumerate(strengths.to(kspace.real.dtype)):
        y, _ = solve_data_consistency(
            acquisition,
            kspace,
            [strength.expand(batch)],
            [prior_of(y, i + 1)],
            max_iter=max_iter,
            tol=data_consistency_tolerance(kspace.dtype),
            x0=y,
            kspace_adjoint=kspace_adjoint,
        )
        images.append(y)
    return images


@dataclass(frozen=True)
class PINQIConfig:
    """Architecture and solver settings of PINQI (defaults: the paper's).

    Attributes
    ----------
    iterations
        Unrolled iterations T.
    image_features, parameter_features
        UNet channels per level of Y_theta and P_theta.
    image_norm_groups, parameter_norm_groups
        GroupNorm groups per layer of Y_theta and P_theta (the authors' code: 8 and 16); a
        layer whose channels are not divisible uses the greatest common divisor.
    cg_iterations, cg_init_iterations
        CG iterations per data-consistency layer and for the initial images.
    fit_solver
        Solver of the signal-fit layer: ``newton`` (per-pixel projected Newton, exact
        backward) or ``lbfgs`` (the paper's L-BFGS on trigonometrically bounded variables).
    fit_iterations
        Iterations of the signal fit.
    lambda_p, lambda_y, lambda_q, lambda_q_step
        Initial strengths: lambda_p, lambda_y, and lambda_q + lambda_q_step * i at iteration i.
    lambda_p_per_parameter
        One learned lambda_p per parameter and iteration (``(T, P)``) instead of one per
        iteration (the paper's).
    lambda_p_relative
        Scale lambda_p of parameter k per sample by the data term's mean curvature
        (:meth:`~pinqi.physics.SignalModel.data_curvature` at p_reg, not differentiated), so
        that the balance of data and prior does not depend on the intensity scale of the
        data: lambda_p = 1 weighs the prior like the data of an average pixel. The paper's
        lambda_p is absolute (False).
    parameter_init, parameter_scale
        P_theta's output at a zero UNet output, and its slope there / 10, per parameter (a
        well-scaled start); default: the signal model's ``typical`` values and spreads.
    unet_precision
        Arithmetic of Y_theta and P_theta (:mod:`pinqi.nets.precision`): ``auto`` runs them
        in bfloat16 autocast where the hardware computes it natively (CUDA, CPUs with
        AVX-512 BF16 or AMX), ``bf16`` everywhere, ``fp32`` never. Only float32 inputs are
        affected; the CG layer, the fit and the loss keep the input's precision.
    sync_free
        ``always``: the CG and fit layers run fixed iterations with convergence tracked on
        the device and never read a value back, so that a step can be captured (CUDA graphs,
        ``torch.compile``) and never waits for the host; ``never``: they stop early and
        gather the unconverged pixels (faster where a read costs nothing); ``auto``:
        ``always`` on accelerators, ``never`` on the CPU. Either way the inputs are checked
        with one read. (Not ``on``/``off``: YAML reads those as booleans.)
    checkpoint_unets
        Activation checkpointing per UNet call: each call's activations are recomputed in the
        backward instead of stored (far less memory, about one more UNet forward per call).
    compile_unets
        Run Y_theta and P_theta through ``torch.compile`` (kernels fused by Inductor; on CUDA
        with the sync-free layers the whole step has no host synchronisation to break the
        graphs). Compiled on first use; the weights and checkpoints are unchanged.
    use_image_regulariser, use_parameter_regulariser, use_signal_fit, iterate_networks
        Ablations (Sec. 3.4): without Y_theta (lambda_y = 0), without P_theta (lambda_p = 0:
        a pure fit, started from a learned constant p_0), without the non-linear solver
        (p = P_theta), UNets applied once (p_reg, y_reg from y_0 only).
    """

    iterations: int = 5
    image_features: tuple[int, ...] = (16, 32, 48, 64)
    parameter_features: tuple[int, ...] = (32, 64, 96, 128)
    image_norm_groups: int = 8
    parameter_norm_groups: int = 16
    cg_iterations: int = 15
    cg_init_iterations: int = 2
    fit_solver: Solver = "newton"
    fit_iterations: int = 20
    lambda_p: float = 3.0
    lambda_y: float = 0.1
    lambda_q: float = 0.1
    lambda_q_step: float = 0.05
    lambda_p_per_parameter: bool = False
    lambda_p_relative: bool = False
    parameter_init: tuple[float, ...] | None = None
    parameter_scale: tuple[float, ...] | None = None
    unet_precision: UNetPrecision = "auto"
    sync_free: SyncFree = "auto"
    checkpoint_unets: bool = False
    compile_unets: bool = False
    use_image_regulariser: bool = True
    use_parameter_regulariser: bool = True
    use_signal_fit: bool = True
    iterate_networks: bool = True

    def __post_init__(self) -> None:
        check_unet_precision(self.unet_precision)
        if self.sync_free not in get_args(SyncFree):
            raise ValueError(
                f"sync_free must be one of {get_args(SyncFree)}, got {self.sync_free!r}"
            )
        if self.fit_solver not in get_args(Solver):
            raise ValueError(
                f"fit_solver must be one of {get_args(Solver)}, got {self.fit_solver!r}"
            )
        if self.iterations < 1 or self.cg_iterations < 1 or self.fit_iterations < 1:
            raise ValueError(
                "iterations, cg_iterations and fit_iterations must be >= 1, got "
                f"{self.iterations}, {self.cg_iterations}, {self.fit_iterations}"
            )
        if not (self.use_parameter_regulariser or self.use_signal_fit):
            raise ValueError(
                "use_parameter_regulariser and use_signal_fit cannot both be off: nothing "
                "would estimate the parameters"
            )


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
    cg_infos
        Convergence report of the forward solve of each of the ``T`` data-consistency layers
        (relative residual per batch element).
    fit_infos
        Convergence report of each of the ``T`` signal fits (empty without the fit layer).
    """

    parameters: list[torch.Tensor]
    images: list[torch.Tensor]
    parameter_priors: list[torch.Tensor]
    cg_infos: list[SolverInfo] = field(default_factory=list)
    fit_infos: list[SolverInfo] = field(default_factory=list)


class PINQI(nn.Module):
    """Unrolled half-quadratic splitting with learned image and parameter regularisers.

    Each iteration i = 1..T (Fig. 2) computes y_reg = Y_theta(y_{i-1}, i), the data-consistent
    images y_i = argmin ||A y - k||^2 + lambda_y ||y - y_reg||^2 + lambda_q ||y - q(p_{i-1})||^2
    (Eq. 12, CG layer), p_reg = P_theta(y_i, i) and
    p_i = argmin ||q(p) - y_i||^2 + lambda_p ||p - p_reg||^2 (Eq. 13, signal-fit layer).
    The initial images are a few CG iterations on the normal equations, p_0 = P_theta(y_0, 0).
    Weights are shared across iterations; the strengths are per iteration, positive through
    softplus with beta = 5. The inputs are validated once per forward pass; the layers inside
    run without checks.

    Parameters
    ----------
    signal_model
        The signal model q (its ``n_params`` and bounds define the parameters).
    config
        Architecture and solver settings.
    """

    def __init__(self, signal_model: SignalModel, config: PINQIConfig = PINQIConfig()) -> None:
        super().__init__()
        self.signal_model = signal_model
        self.config = config
        n_tau, n_params = signal_model.n_tau, signal_model.n_params
        self.image_net = (
            UNet(2, 2, config.image_features, pseudo3d=True, norm_groups=config.image_norm_groups)
            if config.use_image_regulariser
            else None
        )
        # without P_theta (ablation), the start p_0 is a learned constant (raw, through the box)
        self.parameter_net = (
            UNet(
                2 * n_tau,
                n_params,
                config.parameter_features,
                norm_groups=config.parameter_norm_groups,
            )
            if config.use_parameter_regulariser
            else None
        )
        self.raw_start = (
            None if config.use_parameter_regulariser else nn.Parameter(torch.zeros(n_params))
        )
        init = config.parameter_init or tuple(v for v, _ in signal_model.typical)
        scale = config.parameter_scale or tuple(s for _, s in signal_model.typical)
        if len(init) != n_params or len(scale) != n_params:
            raise ValueError(
                f"parameter_init and parameter_scale need {n_params} values for "
                f"{type(signal_model).__name__}, got {init}, {scale}"
            )
        outside = [
            (name, v, box)
            for name, v, box in zip(
                signal_model.parameter_names, init, signal_model.bounds, strict=True
            )
            if not box[0] < v < box[1]
        ]
        if outside:
            raise ValueError(f"parameter_init must lie inside the signal model's bounds: {outside}")
        self.parameter_init: tuple[float, ...] = tuple(map(float, init))
        self.parameter_scale: tuple[float, ...] = tuple(map(float, scale))
        self.register_buffer(
            "box", box_constants(init, scale, signal_model.bounds), persistent=False
        )
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
        shape_p = (t, n_params) if config.lambda_p_per_parameter else (t,)
        self.raw_lambda_p = nn.Parameter(torch.full(shape_p, inverse_softplus(config.lambda_p)))

    @classmethod
    def from_config(
        cls, config: PINQIConfig, signal_model_name: str, tau: Sequence[float]
    ) -> PINQI:
        """The network of ``config`` for the signal model ``signal_model_name`` at ``tau`` (s)."""
        return cls(signal_model(signal_model_name, torch.tensor(tau)), config)

    def strengths(self) -> dict[str, torch.Tensor]:
        """The positive strengths: lambda_y, lambda_q ``(T,)``; lambda_p ``(T,)`` or ``(T, P)``."""
        return {
            name: F.softplus(getattr(self, f"raw_{name}"), beta=LAMBDA_BETA)
            for name in ("lambda_y", "lambda_q", "lambda_p")
        }

    def parameters_from_output(self, out: torch.Tensor) -> torch.Tensor:
        """Map P_theta's raw output ``(batch, P, H, W)`` into the open parameter box.

        :func:`box_output` with ``parameter_init`` and ``parameter_scale``.
        """
        return apply_box(out, self.box)

    def parameter_strength(self, lambda_p: torch.Tensor, p_reg: torch.Tensor) -> torch.Tensor:
        """The fit layer's strength ``(batch, P)`` from one iteration's lambda_p ``()``/``(P,)``.

        With ``lambda_p_relative``, each parameter's strength is multiplied by the data term's
        mean curvature at ``p_reg`` per sample (a constant of the layer: not differentiated).
        """
        strength = lambda_p.expand(p_reg.shape[:2])
        if self.config.lambda_p_relative:
            with torch.no_grad():
                curvature = self.signal_model.data_curvature(p_reg)
            strength = strength * curvature
        return strength

    def predict_parameters(self, images: torch.Tensor, iteration: int) -> torch.Tensor:
        """P_theta: images ``(batch, n_tau, H, W)`` -> parameters ``(batch, P, H, W)``.

        Without P_theta (``use_parameter_regulariser=False``): the learned constant start.
        """
        if self.parameter_net is None:
            batch, _, height, width = images.shape
            raw = self.raw_start.to(images.real.dtype).reshape(1, -1, 1, 1)
            return self.parameters_from_output(raw).expand(batch, -1, height, width)
        x = complex_to_channels(images).flatten(1, 2)
        iteration_t = torch.full((len(x),), float(iteration), device=x.device, dtype=x.dtype)
        return self.parameters_from_output(self._run_unet(self.parameter_net, x, iteration_t))

    def regularise_images(self, images: torch.Tensor, iteration: int) -> torch.Tensor:
        """Y_theta: a residual correction of the images ``(batch, n_tau, H, W)``."""
        x = complex_to_channels(images)
        iteration_t = torch.full((len(x),), float(iteration), device=x.device, dtype=x.dtype)
        return images + channels_to_complex(self._run_unet(self.image_net, x, iteration_t))

    def _run_unet(self, net: UNet, x: torch.Tensor, iteration: torch.Tensor) -> torch.Tensor:
        """``net(x, iteration)`` in the configured precision (output in ``x``'s dtype).

        With ``checkpoint_unets`` (and gradients on), through activation checkpointing.
        """
        call = self._compiled(net) if self.config.compile_unets else net
        with unet_autocast(self.config.unet_precision, x):
            if self.config.checkpoint_unets and torch.is_grad_enabled():
                out = torch.utils.checkpoint.checkpoint(call, x, iteration, use_reentrant=False)
            else:
                out = call(x, iteration)
        return out.to(x.dtype)

    def _compiled(self, net: UNet) -> Callable[..., torch.Tensor]:
        """``torch.compile(net)``, made once per UNet and kept outside the module tree."""
        cache = self.__dict__.setdefault("_compiled_unets", {})
        if id(net) not in cache:
            # static shapes: one graph per input shape (a training run has one or two);
            # inductor's dynamic shapes failed on the UNets' backward (torch 2.13, CPU)
            cache[id(net)] = torch.compile(net, dynamic=False)
        return cache[id(net)]

    def initial_images(
        self,
        acquisition: CartesianAcquisition,
        kspace: torch.Tensor,
        kspace_adjoint: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """y_0: :func:`cg_initial_images` with ``cg_init_iterations``."""
        return cg_initial_images(
            acquisition, kspace, self.config.cg_init_iterations, kspace_adjoint
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
        acquisition, kspace = checked_inputs(self.signal_model, kspace, coil_maps, mask)
        config = self.config
        batch = acquisition.image_shape[0]
        lam = {name: value.to(kspace.real.dtype) for name, value in self.strengths().items()}
        kspace_adjoint = acquisition.adjoint(kspace)  # A^H k, once for every layer
        y = self.initial_images(acquisition, kspace, kspace_adjoint)
        p_reg = self.predict_parameters(y, 0)
        p = p_reg
        out = PINQIOutput([p], [y], [p_reg])
        sync_free = {"auto": None, "always": True, "never": False}[config.sync_free]
        y_reg = y
        for i in range(config.iterations):
            lambdas: Sequence[torch.Tensor] = [lam["lambda_q"][i].expand(batch)]
            priors: Sequence[torch.Tensor] = [self.signal_model(p)]
            if self.image_net is not None:
                if config.iterate_networks or i == 0:
                    y_reg = self.regularise_images(
                        y if config.iterate_networks else out.images[0], i + 1
                    )
                lambdas = [*lambdas, lam["lambda_y"][i].expand(batch)]
                priors = [*priors, y_reg]
            y, cg_info = solve_data_consistency(
                acquisition,
                kspace,
                lambdas,
                priors,
                max_iter=config.cg_iterations,
                tol=data_consistency_tolerance(kspace.dtype),
                x0=y,
                early_exit=None if sync_free is None else not sync_free,
                kspace_adjoint=kspace_adjoint,
            )
            out.cg_infos.append(cg_info)
            if config.iterate_networks:
                p_reg = self.predict_parameters(y, i + 1)
            if not config.use_signal_fit:
                p = p_reg
            else:
                lam_p = (
                    self.parameter_strength(lam["lambda_p"][i], p_reg)
                    if config.use_parameter_regulariser
                    else p_reg.new_zeros(p_reg.shape[:2])
                )
                p, fit_info = solve_signal_fit(
                    self.signal_model,
                    y,
                    p_reg,
                    lam_p,
                    p,
                    solver=config.fit_solver,
                    max_iter=config.fit_iterations,
                    sync_free=sync_free,
                )
                out.fit_infos.append(fit_info)
            out.parameters.append(p)
            out.images.append(y)
            out.parameter_priors.append(p_reg)
        return out
