"""Region-of-interest statistics, the analogue of the paper's Table 1 (phantom tubes)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np


def roi_statistics(
    values: np.ndarray, labels: np.ndarray, reference: np.ndarray | None = None
) -> list[dict[str, float]]:
    """Mean and standard deviation of ``values`` in every labelled region.

    Parameters
    ----------
    values
        A parameter map (e.g. T1 in s), any shape; trailing axes of length 1 do not count, so
        a slice ``(x, y, 1)`` of ``pinqi reconstruct`` meets an ``(x, y)`` map.
    labels
        Integer label image of the same shape; 0 is background, each other value one ROI.
    reference
        Optional reference map (e.g. the fully sampled 18-delay fit) of the same shape.

    Returns
    -------
    list[dict]
        One row per ROI: ``roi, pixels, mean, std`` and, with a reference,
        ``reference_mean, reference_std, difference_percent`` (100 (mean - ref) / ref).
    """
    values = as_volume(np.asarray(values, dtype=np.float64))
    labels = as_volume(np.asarray(labels))
    reference = None if reference is None else as_volume(np.asarray(reference))
    if values.shape != labels.shape:
        raise ValueError(f"values {values.shape} and labels {labels.shape} must have one shape")
    if labels.dtype.kind not in "iu":
        if not np.allclose(labels, np.round(labels)):
            raise ValueError("labels must be integers (0 = background)")
        labels = np.round(labels).astype(np.int64)
    if reference is not None and np.shape(reference) != values.shape:
        raise ValueError(f"reference {np.shape(reference)} must have the shape {values.shape}")
    rois = [int(r) for r in np.unique(labels) if r != 0]
    if not rois:
        raise ValueError("labels contain no ROI (all background)")
    rows = []
    for roi in rois:
        inside = labels == roi
        row = {
            "roi": roi,
            "pixels": int(inside.sum()),
            "mean": float(values[inside].mean()),
            "std": float(values[inside].std()),
        }
        if reference is not None:
            ref = np.asarray(reference, dtype=np.float64)[inside]
            row.update(
                reference_mean=float(ref.mean()),
                reference_std=float(ref.std()),
                difference_percent=100 * (row["mean"] - float(ref.mean())) / float(ref.mean()),
            )
        rows.append(row)
    return rows


def as_volume(values: np.ndarray) -> np.ndarray:
    """``values`` without trailing axes of length 1 (beyond the first two)."""
    while values.ndim > 2 and values.shape[-1] == 1:
        values = values[..., 0]
    return values


def rms_deviation(rows: list[dict[str, float]]) -> float:
    """RMS over the ROIs of (mean - reference mean), in the units of the map."""
    return math.sqrt(sum((r["mean"] - r["reference_mean"]) ** 2 for r in rows) / len(rows))


def write_roi_table(rows: list[dict[str, float]], path: str | Path) -> Path:
    """Write the ROI rows as CSV."""
    path = Path(path)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path
