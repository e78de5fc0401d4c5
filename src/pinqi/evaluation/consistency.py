"""Never silently wrong: how well PINQI's maps explain the measured data, against a plain fit.

A learned prior can pull the maps away from what the data say, most of all on data unlike the
training data (another T1 range, phase, anatomy). The data tell: the signal model of the maps,
encoded by the acquisition, must reproduce the measured k-space. This module measures that
data residual for PINQI's maps and for the non-learned CG-SENSE + pixel-wise fit of the same
k-space, per slice and per pixel, and warns where PINQI explains the data much worse.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from pinqi.evaluation.baseline import BaselineConfig, cg_sense_images, fit_flat_prior
from pinqi.physics import CartesianAcquisition, SignalModel

#: Default of :func:`warn_if_inconsistent`: warn when PINQI's relative k-space residual exceeds
#: the plain fit's by this factor (in-distribution ratios: see docs/results.md).
RESIDUAL_RATIO_LIMIT = 1.5


class OutOfDistributionWarning(UserWarning):
    """PINQI's maps explain the measured data much worse than a non-learned fit."""


@dataclass(frozen=True)
class Consistency:
    """Data residuals of PINQI and of the CG-SENSE + fit baseline.

    Attributes
    ----------
    baseline
        The baseline's parameter maps ``(n, P, H, W)``.
    kspace_residual
        Method (``"PINQI"``, ``"CG-SENSE + fit"``) -> ||A q(p) - k|| / ||k|| per slice ``(n,)``.
    residual_maps
        Method -> :func:`residual_map` ``(n, H, W)`` in the data's intensity units.
    """

    baseline: torch.Tensor
    kspace_residual: dict[str, torch.Tensor]
    residual_maps: dict[str, torch.Tensor]


def residual_ratio(kspace_residual: dict[str, torch.Tensor]) -> torch.Tensor:
    """PINQI's k-space residual over the baseline's per slice ``(batch,)``.

    ``kspace_residual`` maps ``"PINQI"`` and ``"CG-SENSE + fit"`` to :func:`kspace_residual`.
    """
    fit = kspace_residual["CG-SENSE + fit"]
    return kspace_residual["PINQI"] / fit.clamp(min=torch.finfo(fit.dtype).tiny)


def kspace_residual(
    model: SignalModel,
    params: torch.Tensor,
    acquisition: CartesianAcquisition,
    kspace: torch.Tensor,
) -> torch.Tensor:
    """||A q(p) - k|| / ||k|| over the sampled k-space, per slice ``(batch,)``."""
    residual = acquisition.forward(model(params)) - acquisition.mask.unsqueeze(2) * kspace
    return residual.flatten(1).norm(dim=1) / kspace.flatten(1).norm(dim=1)


def residual_map(
    model: SignalModel,
    params: torch.Tensor,
    acquisition: CartesianAcquisition,
    kspace: torch.Tensor,
) -> torch.Tensor:
    """Where the maps miss the data: RMS over the delays of |A^H (A q(p) - k)|, ``(batch, H, W)``.

    The k-space residual brought back to the image (coil-combined); for maps that explain the
    data it is noise, elsewhere it shows where they do not (spread by the undersampling).
    """
    return (
        acquisition.adjoint(acquisition.forward(model(params)) - kspace)
        .abs()
        .square()
        .mean(1)
        .sqrt()
    )


def check_consistency(
    model: SignalModel,
    params: torch.Tensor,
    kspace: torch.Tensor,
    coil_maps: torch.Tensor,
    mask: torch.Tensor,
    config: BaselineConfig | None = None,
) -> Consistency:
    """Data residuals of PINQI's ``params`` ``(batch, P, H, W)`` and of the baseline.

    Runs the baseline (:func:`~pinqi.evaluation.baseline.cg_sense_fit`) on the same k-space
    ``(batch, T, C, H, W)`` (settings ``config``, default
    :class:`~pinqi.evaluation.baseline.BaselineConfig`); its maps come back in the result, so
    a caller that needs both pays for the baseline once.
    """
    acquisition = CartesianAcquisition(coil_maps, mask)
    images, _ = cg_sense_images(kspace, coil_maps, mask, config or BaselineConfig())
    baseline, _ = fit_flat_prior(model, images, (config or BaselineConfig()).lambda_fit)
    maps = {"PINQI": params, "CG-SENSE + fit": baseline}
    return Consistency(
        baseline=baseline,
        kspace_residual={
            m: kspace_residual(model, p, acquisition, kspace) for m, p in maps.items()
        },
        residual_maps={m: residual_map(model, p, acquisition, kspace) for m, p in maps.items()},
    )


def warn_if_inconsistent(
    ratio: torch.Tensor, limit: float = RESIDUAL_RATIO_LIMIT, what: str = "slice"
) -> list[int]:
    """Warn about the slices whose residual ratio exceeds ``limit``; return their indices."""
    bad = [i for i, r in enumerate(ratio.tolist()) if not r <= limit]
    if bad:
        worst = float(ratio.max())
        warnings.warn(
            f"PINQI's maps explain the measured k-space worse than a plain CG-SENSE + fit at "
            f"{len(bad)} of {len(ratio)} {what}(s) {bad[:10]} (residual ratio up to "
            f"{worst:.2f} > {limit:g}): the data may lie outside what the model was trained on "
            "(T1 range, phase, anatomy, protocol). Compare with `pinqi fit` and see the "
            "residual maps.",
            OutOfDistributionWarning,
            stacklevel=2,
        )
    return bad


def residual_ratio_limit(checkpoint: str | Path) -> float:
    """The residual-ratio limit of a model: its card's calibrated ``residual_check.limit``.

    Falls back to :data:`RESIDUAL_RATIO_LIMIT` for Lightning
    checkpoints and for models exported without a calibration.
    """
    from pinqi.training.checkpoints import SHIPPED_MODELS, shipped_model_path

    name = str(checkpoint)
    path = shipped_model_path(name) if name in SHIPPED_MODELS else Path(checkpoint)
    state = torch.load(path, map_location="cpu", weights_only=False)
    check = state.get("card", {}).get("residual_check", {}) if isinstance(state, dict) else {}
    return float(check.get("limit", RESIDUAL_RATIO_LIMIT))
