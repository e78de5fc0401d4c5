"""Per-model limits for the data-residual check, measured on the model's validation data.

PINQI's maps are regularised, so they explain the k-space somewhat worse than a plain
CG-SENSE + fit even on data like the training data; how much worse depends on the model (a
strong prior, a small network) and on the noise level (the prior's bias weighs more against
little noise). A fixed limit on the residual ratio
(:data:`~pinqi.evaluation.consistency.RESIDUAL_RATIO_LIMIT`) therefore warns too often for
some models and too rarely for others. Here the limits are set from the ratios the model
itself reaches on simulated validation slices of its own training distribution (without the
coverage extras), per band of the estimated noise level
(:func:`~pinqi.evaluation.consistency.estimate_noise_sigma`), as the split-conformal quantile
for a chosen false-alarm rate: a new slice from the same distribution exceeds its band's limit
with probability at most that rate. They are stored in the model card (``pinqi export``),
where :func:`~pinqi.evaluation.consistency.load_residual_check` finds them.

With the T1 disagreement (:func:`~pinqi.evaluation.consistency.t1_disagreement`) as a second
statistic, both limits of a band come from one conformal quantile of the larger of the two
statistics, each divided by its median on the calibration slices: a new in-distribution slice
exceeds either limit with probability at most the chosen rate (no split of the rate between
the two).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from pinqi.config import ExperimentConfig
from pinqi.evaluation.consistency import ResidualCheck
from pinqi.nets.pinqi import PINQI

if TYPE_CHECKING:
    from pinqi.data.datasets import SimulatedDataset
    from pinqi.evaluation.evaluate import Reconstructions

#: Default share of in-distribution slices the calibrated check may flag.
FALSE_ALARM_RATE = 0.05

#: Added to the run's seed for the calibration slices (not its own validation set).
CALIBRATION_SEED_OFFSET = 7919

#: Validation slices per noise band; fewer slices give one band.
SLICES_PER_BAND = 32


def conformal_limit(values: torch.Tensor, false_alarm: float) -> float:
    """The split-conformal upper limit of ``values`` ``(n,)`` for a false-alarm rate.

    The ``ceil((n + 1) (1 - false_alarm))``-th smallest value: a further value from the same
    distribution exceeds it with probability at most ``false_alarm``. With too few values for
    that rank (n < 1 / false_alarm - 1) it is the largest value, and the guarantee is weaker.
    """
    if not 0 < false_alarm < 1:
        raise ValueError(f"false_alarm must be in (0, 1), got {false_alarm}")
    ordered = torch.sort(values.detach().double().flatten()).values
    if len(ordered) == 0:
        raise ValueError("conformal_limit needs at least one value")
    rank = min(len(ordered), math.ceil((len(ordered) + 1) * (1 - false_alarm)))
    return float(ordered[rank - 1])


def residual_check_from_ratios(
    ratio: torch.Tensor,
    noise_sigma: torch.Tensor,
    false_alarm: float = FALSE_ALARM_RATE,
    disagreement: torch.Tensor | None = None,
) -> ResidualCheck:
    """Limits per noise band from in-distribution ``ratio`` and ``noise_sigma`` ``(n,)``.

    The slices are split at the quantiles of their noise level into bands of at least
    :data:`SLICES_PER_BAND`. Without ``disagreement``, each band's ratio limit is its
    :func:`conformal_limit`. With the slices' T1 ``disagreement`` ``(n,)``, each band's
    score is max(ratio / its median in the band, disagreement / its median over all slices)
    (the disagreement hardly depends on the noise), and the band's two limits are the
    score's conformal limit times the two medians. Ratio limits are at least 1.
    """
    bands = max(1, len(ratio) // SLICES_PER_BAND)
    noise = noise_sigma.detach().double()
    edges = (
        torch.quantile(noise, torch.linspace(0, 1, bands + 1, dtype=torch.float64)[1:-1])
        if bands > 1
        else noise.new_zeros(0)
    )
    band = torch.bucketize(noise, edges)
    ratio = ratio.detach().double()
    if disagreement is None:
        limits = tuple(
            max(1.0, conformal_limit(ratio[band == b], false_alarm)) for b in range(bands)
        )
        return ResidualCheck(limits, tuple(edges.tolist()), false_alarm)
    disagreement = disagreement.detach().double()
    t1_scale = float(disagreement.median())
    if not t1_scale > 0:
        raise ValueError("the T1 disagreement of the calibration slices is zero (median)")
    ratio_limits, t1_limits = [], []
    for b in range(bands):
        in_band = band == b
        ratio_scale = float(ratio[in_band].median())
        score = torch.maximum(ratio[in_band] / ratio_scale, disagreement[in_band] / t1_scale)
        quantile = conformal_limit(score, false_alarm)
        ratio_limits.append(max(1.0, quantile * ratio_scale))
        t1_limits.append(quantile * t1_scale)
    return ResidualCheck(
        tuple(ratio_limits), tuple(edges.tolist()), false_alarm, tuple(t1_limits), t1_scale
    )


def calibration_slices(
    model: PINQI,
    config: ExperimentConfig,
    n_samples: int,
    device: str | torch.device = "cpu",
    progress: bool = True,
    splits: Sequence[str] = ("val",),
) -> list[tuple[str, SimulatedDataset, Reconstructions]]:
    """The calibration slices of ``model`` and its reconstructions of them, per split.

    ``splits`` are the data splits the ``n_samples`` slices are drawn from, in equal shares
    (the first takes the remainder): ``("val", "train")`` adds slices of the training
    subjects (new random draws of the training distribution, not the run's own samples) to
    the validation subject(s), for more anatomical variety than the validation split has.
    The slices are simulated without the coverage extras, with seed ``config.seed + 7919``
    (not the training run's own validation set).

    Returns
    -------
    list
        ``(split, data set, reconstructions with the plain fit)`` per split.
    """
    from pinqi.data.datasets import SimulatedDataset
    from pinqi.evaluation.evaluate import reconstruct_all

    unknown = sorted(set(splits) - {"val", "train"})
    if not splits or unknown or len(set(splits)) != len(splits):
        raise ValueError(f"splits must be distinct names of 'val' and 'train', got {splits}")
    if n_samples < len(splits):
        raise ValueError(f"n_samples {n_samples} must be at least one per split {splits}")
    data = config.data.without_coverage()
    seed = config.seed + CALIBRATION_SEED_OFFSET
    shares = [n_samples // len(splits)] * len(splits)
    shares[0] += n_samples - sum(shares)
    slices = []
    for split, share in zip(splits, shares, strict=True):
        dataset = SimulatedDataset(data, split, share, seed=seed)
        result = reconstruct_all(model, dataset, 4, baseline=True, progress=progress, device=device)
        slices.append((split, dataset, result))
    return slices


def calibrate_residual_check(
    model: PINQI,
    config: ExperimentConfig,
    n_samples: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = True,
    false_alarm: float = FALSE_ALARM_RATE,
    splits: Sequence[str] = ("val",),
) -> dict:
    """Residual ratios and T1 disagreements of ``model`` on calibration slices; its limits.

    The slices are those of :func:`calibration_slices` (``splits``: the data splits they are
    drawn from, in equal shares).

    Returns
    -------
    dict
        For the model card: ``limits`` (per noise band, :func:`residual_check_from_ratios`),
        ``noise_edges``, ``false_alarm``, ``limit`` (the largest limit, for readers of older
        cards), ``max`` and ``median`` of the ratios, ``t1_disagreement_limits`` (per band)
        and the disagreements' ``t1_disagreement_median``, ``n_samples`` and ``data`` (what
        the slices were).
    """
    slices = calibration_slices(model, config, n_samples, device, progress, splits)
    results = [result for _, _, result in slices]
    ratio = torch.cat([result.residual_ratio for result in results])
    disagreement = torch.cat([result.t1_disagreement for result in results])
    noise_sigma = torch.cat([result.noise_sigma for result in results])
    check = residual_check_from_ratios(ratio, noise_sigma, false_alarm, disagreement)
    return {
        "limits": list(check.limits),
        "noise_edges": list(check.noise_edges),
        "false_alarm": false_alarm,
        "limit": max(check.limits),
        "max": float(ratio.max()),
        "median": float(ratio.median()),
        "t1_disagreement_limits": list(check.disagreement_limits),
        "t1_disagreement_median": float(disagreement.median()),
        "n_samples": n_samples,
        "data": (
            f"{' + '.join(f'{len(dataset)} {split}' for split, dataset, _ in slices)} "
            f"slices of the training data ({config.data.anatomy}), "
            f"seed {config.seed + CALIBRATION_SEED_OFFSET}"
        ),
    }
