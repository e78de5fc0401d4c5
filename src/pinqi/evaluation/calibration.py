"""A per-model limit for the data-residual check, measured on the model's validation data.

PINQI's maps are regularised, so they explain the k-space somewhat worse than a plain
CG-SENSE + fit even on data like the training data; how much worse depends on the model
(a strong prior, a small network) and on the noise level. A fixed limit on the residual
ratio (:data:`~pinqi.evaluation.consistency.RESIDUAL_RATIO_LIMIT`) therefore warns too often
for some models and too rarely for others. Here the limit is set from the ratios the model
itself reaches on simulated validation slices of its own training distribution (without the
coverage extras), and stored in its model card (``pinqi export``), where
:func:`~pinqi.evaluation.consistency.residual_ratio_limit` finds it.
"""

from __future__ import annotations

import torch

from pinqi.config import ExperimentConfig
from pinqi.nets.pinqi import PINQI

#: The limit is this factor times the largest validation ratio (with the default 32 slices,
#: about the 97th percentile).
MARGIN = 1.25


def calibrate_residual_check(
    model: PINQI,
    config: ExperimentConfig,
    n_samples: int = 32,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict:
    """Residual ratios of ``model`` on ``n_samples`` validation slices, and the limit.

    Returns
    -------
    dict
        ``limit`` (:data:`MARGIN` x the largest ratio, at least 1), ``max``, ``median``,
        ``n_samples`` and ``data`` (what the slices were) for the model card.
    """
    from pinqi.data.datasets import SimulatedDataset
    from pinqi.evaluation.evaluate import reconstruct_all

    data = config.data.without_coverage()
    seed = config.seed + 7919  # not the training run's own validation set
    dataset = SimulatedDataset(data, "val", n_samples, seed=seed)
    result = reconstruct_all(model, dataset, 4, baseline=True, progress=progress, device=device)
    ratio = result.residual_ratio
    return {
        "limit": max(1.0, MARGIN * float(ratio.max())),
        "max": float(ratio.max()),
        "median": float(ratio.median()),
        "n_samples": n_samples,
        "data": f"validation split of the training data ({data.anatomy}), seed {seed}",
    }
