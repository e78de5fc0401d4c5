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
"""

from __future__ import annotations

import math

import torch

from pinqi.config import ExperimentConfig
from pinqi.evaluation.consistency import ResidualCheck
from pinqi.nets.pinqi import PINQI

#: Default share of in-distribution slices the calibrated check may flag.
FALSE_ALARM_RATE = 0.05

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
    ratio: torch.Tensor, noise_sigma: torch.Tensor, false_alarm: float = FALSE_ALARM_RATE
) -> ResidualCheck:
    """Limits per noise band from in-distribution ``ratio`` and ``noise_sigma`` ``(n,)``.

    The slices are split at the quantiles of their noise level into bands of at least
    :data:`SLICES_PER_BAND`; each band's limit is its :func:`conformal_limit`, at least 1.
    """
    bands = max(1, len(ratio) // SLICES_PER_BAND)
    noise = noise_sigma.detach().double()
    edges = (
        torch.quantile(noise, torch.linspace(0, 1, bands + 1, dtype=torch.float64)[1:-1])
        if bands > 1
        else noise.new_zeros(0)
    )
    band = torch.bucketize(noise, edges)
    limits = tuple(max(1.0, conformal_limit(ratio[band == b], false_alarm)) for b in range(bands))
    return ResidualCheck(limits, tuple(edges.tolist()), false_alarm)


def calibrate_residual_check(
    model: PINQI,
    config: ExperimentConfig,
    n_samples: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = True,
    false_alarm: float = FALSE_ALARM_RATE,
) -> dict:
    """Residual ratios of ``model`` on ``n_samples`` validation slices, and its limits.

    Returns
    -------
    dict
        For the model card: ``limits`` (per noise band, :func:`residual_check_from_ratios`),
        ``noise_edges``, ``false_alarm``, ``limit`` (the largest limit, for readers of older
        cards), ``max`` and ``median`` of the ratios, ``n_samples`` and ``data`` (what the
        slices were).
    """
    from pinqi.data.datasets import SimulatedDataset
    from pinqi.evaluation.evaluate import reconstruct_all

    data = config.data.without_coverage()
    seed = config.seed + 7919  # not the training run's own validation set
    dataset = SimulatedDataset(data, "val", n_samples, seed=seed)
    result = reconstruct_all(model, dataset, 4, baseline=True, progress=progress, device=device)
    ratio = result.residual_ratio
    check = residual_check_from_ratios(ratio, result.noise_sigma, false_alarm)
    return {
        "limits": list(check.limits),
        "noise_edges": list(check.noise_edges),
        "false_alarm": false_alarm,
        "limit": max(check.limits),
        "max": float(ratio.max()),
        "median": float(ratio.median()),
        "n_samples": n_samples,
        "data": f"validation split of the training data ({data.anatomy}), seed {seed}",
    }
