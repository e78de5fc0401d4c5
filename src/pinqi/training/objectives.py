"""What each method is trained on: its loss, and the loss of its pretraining phase.

Every method's main loss is a weighted parameter MSE inside the brain mask
(:func:`~pinqi.training.losses.parameter_loss`) plus what the paper and the authors' code add
for it (Sec. 3.2-3.4): PINQI's deep supervision, MANTIS's k-space term, DOPAMINE's start
term, the image term of the unrolled reconstructions; DeepT1's parts are trained apart on L1
losses. The pretraining phase (``optim.pretrain_epochs``) trains what comes first: PINQI's
P_theta on interpolated images, DeepT1's and the unrolled methods' reconstruction on images,
DOPAMINE's start network.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pinqi.config import OptimConfig
from pinqi.nets.deept1 import DeepT1
from pinqi.nets.dopamine import DOPAMINE
from pinqi.nets.mantis import MANTIS
from pinqi.nets.pinqi import PINQI, PINQIOutput
from pinqi.nets.unrolled import UnrolledFit, UnrolledReconstruction, UnrolledUNet
from pinqi.physics import CartesianAcquisition
from pinqi.training.losses import parameter_loss, pinqi_loss, pixel_weight

Batch = dict[str, torch.Tensor]


def _parameters(
    prediction: torch.Tensor, target: torch.Tensor, batch: Batch, optim: OptimConfig
) -> torch.Tensor:
    return parameter_loss(
        prediction,
        target,
        batch["brain_mask"],
        optim.outside_weight,
        optim.t1_weight_power,
        optim.t1_weight_max,
    )


def magnitude_target(params: torch.Tensor) -> torch.Tensor:
    """(Re M0, Im M0, R1) -> (|M0|, 0, R1): the target of the magnitude-only methods."""
    m0 = torch.complex(params[:, 0], params[:, 1]).abs()
    return torch.stack([m0, torch.zeros_like(m0), params[:, 2]], 1)


def image_loss(
    images: torch.Tensor, batch: Batch, model: nn.Module, optim: OptimConfig
) -> torch.Tensor:
    """MSE of complex images against the noise-free true images q(p_true), mask-weighted."""
    truth = model.signal_model(batch["params"])
    weight = pixel_weight(batch["brain_mask"], optim.outside_weight, images.real.dtype)
    return ((images - truth).abs().square() * weight).mean()


def _acquisition(batch: Batch) -> CartesianAcquisition:
    return CartesianAcquisition(batch["coil_maps"], batch["mask"])


def training_loss(
    model: nn.Module, batch: Batch, output: PINQIOutput, optim: OptimConfig
) -> torch.Tensor:
    """The main loss of ``model``'s method for one batch and its forward ``output``."""
    params = batch["params"]
    if isinstance(model, PINQI):
        return pinqi_loss(
            output,
            params,
            batch["brain_mask"],
            optim.deep_supervision,
            optim.outside_weight,
            optim.t1_weight_power,
            optim.t1_weight_max,
        )
    p = output.parameters[-1]
    if isinstance(model, MANTIS):
        acquisition = _acquisition(batch)
        residual = (
            acquisition.forward(model.signal_model(p))
            - acquisition.mask.unsqueeze(2) * batch["kspace"]
        )
        kspace_term = residual.abs().square().mean()
        return _parameters(p, magnitude_target(params), batch, optim) + (
            model.kspace_weight * kspace_term
        )
    if isinstance(model, DeepT1):
        weight = pixel_weight(batch["brain_mask"], optim.outside_weight, p.dtype)
        return ((p - magnitude_target(params)).abs() * weight)[:, [0, 2]].mean()
    if isinstance(model, DOPAMINE):
        return _parameters(p, params, batch, optim) + 0.2 * _parameters(
            output.parameters[0], params, batch, optim
        )
    if isinstance(model, UnrolledUNet):
        return _parameters(p, params, batch, optim) + model.image_weight * image_loss(
            output.images[-1], batch, model, optim
        )
    if isinstance(model, UnrolledFit):
        if model.end_to_end:
            return _parameters(p, params, batch, optim)
        return image_loss(output.images[-1], batch, model, optim)
    raise TypeError(f"no training loss for {type(model).__name__}")


def step_generator(seed: int, step: int) -> torch.Generator:
    """The random generator of optimisation step ``step`` of a run with ``seed``."""
    state = np.random.SeedSequence([seed, step, 7]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) >> 1)


def _share_of_step(n: int, generator: torch.Generator | None) -> torch.Tensor:
    """Uniform random values ``(n, 1, 1, 1)`` for this process's ``n`` samples of a step.

    Under data parallelism (``torch.distributed``) every process draws the values of the
    whole step's ``n x W`` samples and keeps those of its share (samples r, r + W, ..., as
    :class:`~pinqi.data.datasets.EpochSampler` distributes them), so that W processes with
    the step's ``generator`` draw what one process with the whole batch draws.
    """
    rank, world = 0, 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    return torch.rand(n * world, 1, 1, 1, generator=generator)[rank::world]


def pretraining_loss(
    model: nn.Module,
    batch: Batch,
    optim: OptimConfig,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The loss of the pretraining phase of ``model``'s method.

    ``generator`` draws PINQI's random interpolations (a CPU generator; None: the global
    one); training passes one per step (:func:`step_generator`), so that a step draws the same
    whatever the processes, resumes and history before it.
    """
    acquisition = _acquisition(batch)
    if isinstance(
        model, PINQI
    ):  # P_theta on random interpolations between zero-filled and true images
        zero_filled = acquisition.adjoint(batch["kspace"])
        true_images = model.signal_model(batch["params"])
        weight = _share_of_step(len(zero_filled), generator).to(zero_filled.device)
        images = weight * true_images + (1 - weight) * zero_filled
        iteration = int(torch.randint(model.config.iterations + 1, (), generator=generator))
        prediction = model.predict_parameters(images, iteration)
        return _parameters(prediction, batch["params"], batch, optim)
    if isinstance(model, DeepT1):  # the reconstruction, on the L1 error of the magnitudes
        images = model.images(acquisition, batch["kspace"])[-1]
        truth = model.signal_model(batch["params"]).abs()
        weight = pixel_weight(batch["brain_mask"], optim.outside_weight, truth.dtype)
        return ((images.abs() - truth).abs() * weight).mean()
    if isinstance(model, UnrolledReconstruction):
        images = model.images(acquisition, batch["kspace"])[-1]
        return image_loss(images, batch, model, optim)
    if isinstance(model, DOPAMINE):
        images = model.initial_images(acquisition, batch["kspace"])
        return _parameters(model.start(images), batch["params"], batch, optim)
    output = model(batch["kspace"], batch["coil_maps"], batch["mask"])
    return training_loss(model, batch, output, optim)  # MANTIS: nothing comes first
