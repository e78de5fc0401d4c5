"""Scan-specific adaptation: fine-tune PINQI on a slice's own k-space, without ground truth.

Beyond the paper, which points to self-supervised fine-tuning for adapting to the real
forward model. On data unlike its training data a learned prior can hold the maps far from
what the data say (:mod:`pinqi.evaluation.consistency` measures that). Here a copy of the
network is fine-tuned on one slice with the only loss available without ground truth, the
data residual ||A q(p) - k||^2 of its maps over the sampled k-space, and stopped by the
discrepancy principle: as soon as the maps explain the slice's k-space a little better than
the plain CG-SENSE + fit does (whose residual is the noise where it explains the data), i.e.
PINQI's residual ratio falls to ``target_ratio``, and, given the fit's maps and a target, once
PINQI's T1 disagrees with the fit's no more than on a typical slice of the model's own data
(:func:`~pinqi.evaluation.consistency.t1_disagreement`, the median of its calibration).
Fitting the data further would fit the noise. The signal model keeps the maps physical:
three parameters per pixel must explain every delay and coil.

Only slices that the calibrated data check flags are adapted by :func:`pinqi.evaluation.
evaluate.reconstruct` (``--adapt``): elsewhere the prior is what the model was trained to
supply, and adapting would trade it for the plain fit's noise.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass

import torch

from pinqi.evaluation.consistency import kspace_residual, residual_map, t1_disagreement
from pinqi.nets.pinqi import PINQI
from pinqi.physics import CartesianAcquisition
from pinqi.solvers import ConvergenceWarning


@dataclass(frozen=True)
class AdaptConfig:
    """Settings of the adaptation (chosen on validation slices, see docs/results.md).

    Attributes
    ----------
    learning_rate
        Adam's step size for every weight and strength of the network.
    warmup_steps
        The step size rises linearly to ``learning_rate`` over this many steps (a full first
        step of every weight at once throws the maps off).
    max_steps
        At most this many steps per slice.
    target_ratio
        Stop once PINQI's k-space residual is at most this factor times the plain fit's.
    """

    learning_rate: float = 2e-3
    warmup_steps: int = 5
    max_steps: int = 80
    target_ratio: float = 0.95

    def __post_init__(self) -> None:
        if (
            not self.learning_rate > 0
            or self.warmup_steps < 1
            or self.max_steps < 1
            or not self.target_ratio > 0
        ):
            raise ValueError(
                "AdaptConfig needs learning_rate > 0, warmup_steps >= 1, max_steps >= 1 and "
                f"target_ratio > 0, got {self}"
            )


@dataclass(frozen=True)
class Adaptation:
    """What the adaptation of one slice did.

    Attributes
    ----------
    steps
        Optimiser steps taken.
    ratio_before, ratio_after
        PINQI's k-space residual over the plain fit's before and after.
    seconds
        Wall time of the adaptation.
    disagreement_before, disagreement_after
        PINQI's T1 disagreement with the fit before and after (None without the fit's maps).
    """

    steps: int
    ratio_before: float
    ratio_after: float
    seconds: float
    disagreement_before: float | None = None
    disagreement_after: float | None = None


def relative_residual(
    model: PINQI, kspace: torch.Tensor, coil_maps: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """||A q(p) - k||^2 / ||k||^2 per slice ``(batch,)`` of the model's maps, and the maps."""
    params = model(kspace, coil_maps, mask).parameters[-1]
    acquisition = CartesianAcquisition(coil_maps, mask)
    residual = (
        acquisition.forward(model.signal_model(params)) - acquisition.mask.unsqueeze(2) * kspace
    )
    energy = kspace.abs().square().flatten(1).sum(1)
    return residual.abs().square().flatten(1).sum(1) / energy, params


def adapt_to_slice(
    model: PINQI,
    kspace: torch.Tensor,
    coil_maps: torch.Tensor,
    mask: torch.Tensor,
    fit_residual: float,
    config: AdaptConfig = AdaptConfig(),
    fit_params: torch.Tensor | None = None,
    disagreement_target: float | None = None,
) -> tuple[PINQI, Adaptation]:
    """A copy of ``model`` fine-tuned on one slice's k-space, and what it did.

    Parameters
    ----------
    model
        The trained network (left unchanged).
    kspace, coil_maps, mask
        One slice: ``(1, T, C, H, W)``, ``(1, C, H, W)``, mask broadcastable to
        ``(1, T, H, W)``, on the model's device.
    fit_residual
        The plain CG-SENSE + fit's ||A q(p) - k|| / ||k|| on this slice
        (:func:`~pinqi.evaluation.consistency.check_consistency`): the noise level the
        stopping rule aims at.
    config
        Step size, step budget and the target residual ratio.
    fit_params, disagreement_target
        The plain fit's maps ``(1, P, H, W)`` and a T1 disagreement to reach (the model's
        :attr:`~pinqi.evaluation.consistency.ResidualCheck.disagreement_median`): with both,
        the adaptation also goes on (within ``max_steps``) until PINQI's T1 disagreement with
        the fit is at most the target.

    Returns
    -------
    tuple
        The adapted network (eval mode, no gradients) and its :class:`Adaptation`.
    """
    if kspace.shape[0] != 1:
        raise ValueError(f"adapt_to_slice takes one slice, got a batch of {kspace.shape[0]}")
    if not fit_residual > 0:
        raise ValueError(f"fit_residual must be positive, got {fit_residual}")
    start = time.perf_counter()
    adapted = copy.deepcopy(model)
    for weight in adapted.parameters():
        weight.requires_grad_(True)
    optimiser = torch.optim.Adam(adapted.parameters(), lr=config.learning_rate)
    warmup = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: min(1.0, (step + 1) / config.warmup_steps)
    )
    target = (config.target_ratio * fit_residual) ** 2
    apart_limit = math.inf if disagreement_target is None else disagreement_target
    steps, first, apart, first_apart = 0, None, None, None
    with torch.enable_grad():
        while True:
            loss, params = relative_residual(adapted, kspace, coil_maps, mask)
            ratio = float(loss.detach().sqrt()) / fit_residual
            first = ratio if first is None else first
            if fit_params is not None:
                with torch.no_grad():
                    apart = float(t1_disagreement(adapted.signal_model, params, fit_params))
                first_apart = apart if first_apart is None else first_apart
            passes = float(loss.detach()) <= target and not (apart or 0.0) > apart_limit
            if passes or steps == config.max_steps:
                break
            optimiser.zero_grad()
            loss.sum().backward()
            optimiser.step()
            warmup.step()
            steps += 1
    adapted.eval().requires_grad_(False)
    seconds = time.perf_counter() - start
    return adapted, Adaptation(steps, first, ratio, seconds, first_apart, apart)


@dataclass(frozen=True)
class AdaptedSlice:
    """One slice reconstructed by a network adapted to it, with its data check's statistics.

    Attributes
    ----------
    params
        The adapted network's maps ``(1, P, H, W)``.
    kspace_residual
        ||A q(p) - k|| / ||k|| of these maps ``(1,)``
        (:func:`~pinqi.evaluation.consistency.kspace_residual`).
    residual_map
        Their per-pixel data residual ``(1, H, W)``
        (:func:`~pinqi.evaluation.consistency.residual_map`).
    t1_disagreement
        Their T1 disagreement with the plain fit ``(1,)``
        (:func:`~pinqi.evaluation.consistency.t1_disagreement`).
    adaptation
        What the adaptation did.
    """

    params: torch.Tensor
    kspace_residual: torch.Tensor
    residual_map: torch.Tensor
    t1_disagreement: torch.Tensor
    adaptation: Adaptation


def reconstruct_adapted(
    model: PINQI,
    kspace: torch.Tensor,
    coil_maps: torch.Tensor,
    mask: torch.Tensor,
    fit_residual: float,
    fit_params: torch.Tensor,
    config: AdaptConfig = AdaptConfig(),
    disagreement_target: float | None = None,
) -> AdaptedSlice:
    """Adapt a copy of ``model`` to one slice (:func:`adapt_to_slice`) and reconstruct it.

    The one adaptation path of ``pinqi reconstruct --adapt`` and
    :func:`pinqi.api.reconstruct_maps`. Arguments as :func:`adapt_to_slice` (``fit_params``
    required: the disagreement is measured against it); the results are on the model's
    device.
    """
    adapted, report = adapt_to_slice(
        model, kspace, coil_maps, mask, fit_residual, config, fit_params, disagreement_target
    )
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        params = adapted(kspace, coil_maps, mask).parameters[-1]
        acquisition = CartesianAcquisition(coil_maps, mask)
        return AdaptedSlice(
            params,
            kspace_residual(adapted.signal_model, params, acquisition, kspace),
            residual_map(adapted.signal_model, params, acquisition, kspace),
            t1_disagreement(adapted.signal_model, params, fit_params),
            report,
        )
