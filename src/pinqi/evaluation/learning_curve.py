"""Validation error against training samples: the learning curve of a run and its trend.

A run's ``logs/metrics.csv`` holds the validation metrics at every validation; with the run's
batch size they become a curve over training samples. The trend is a power law
``error = a * samples ** -b`` fitted in log-log space to the end-to-end part of the curve
(after P_theta's pretraining); it extrapolates to larger budgets. A power law has no floor:
its predictions for much larger budgets are optimistic where the error levels off.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class PowerLaw:
    """``error = a * samples ** -exponent``, fitted to ``n_points`` points."""

    a: float
    exponent: float
    n_points: int

    def __call__(self, samples: float) -> float:
        """The trend's error at ``samples`` training samples."""
        return self.a * samples**-self.exponent


def fit_power_law(samples: list[float], errors: list[float]) -> PowerLaw:
    """Least-squares fit of ``log error = log a - exponent * log samples``.

    Raises
    ------
    ValueError
        For fewer than 2 points, or non-positive samples or errors.
    """
    if len(samples) != len(errors) or len(samples) < 2:
        raise ValueError(f"need >= 2 (samples, error) pairs, got {len(samples)}, {len(errors)}")
    if min(samples) <= 0 or min(errors) <= 0:
        raise ValueError("samples and errors must be positive for a power-law fit")
    x = torch.tensor([math.log(s) for s in samples], dtype=torch.float64)
    y = torch.tensor([math.log(e) for e in errors], dtype=torch.float64)
    design = torch.stack([torch.ones_like(x), x], 1)
    log_a, slope = torch.linalg.lstsq(design, y[:, None]).solution[:, 0].tolist()
    return PowerLaw(math.exp(log_a), -slope, len(samples))


def validation_curve(
    metrics_csv: str | Path, batch_size: int, column: str = "val_t1_nrmse"
) -> tuple[list[int], list[float]]:
    """Training samples (step + 1) x ``batch_size`` and the logged ``column`` at each validation.

    Raises
    ------
    ValueError
        If the log has no value of ``column``.
    """
    rows = list(csv.DictReader(open(metrics_csv)))
    points = [(int(r["step"]), float(r[column])) for r in rows if r.get(column)]
    if not points:
        raise ValueError(f"{metrics_csv} has no values of {column!r}")
    return [(step + 1) * batch_size for step, _ in points], [value for _, value in points]


def learning_curve(
    runs: dict[str, Path],
    out: str | Path,
    columns: tuple[str, ...] = ("val_t1_nrmse",),
    min_samples: int | None = None,
) -> list[dict]:
    """Learning curves of training runs, their power-law trends and what those predict.

    Writes ``learning_curve.csv`` (one row per run, column and validation: ``run, column,
    samples, value``) and ``learning_curve.png`` (the first column,
    :func:`plot_learning_curve`) into ``out``.

    Parameters
    ----------
    runs
        Label -> run folder of ``pinqi train`` (``config.yaml`` and ``logs/metrics.csv``).
    out
        Output folder.
    columns
        Logged validation metrics, e.g. ``val_t1_nrmse``, ``val_t1_nrmse_csf``.
    min_samples
        The trend is fitted to the validations after this many samples; default: the end of
        the run's P_theta pretraining.

    Returns
    -------
    list of dict
        Per run and column: ``run, column, samples`` (the last validation's), ``value`` (its
        error), ``exponent``, ``at_2x`` and ``at_10x`` (the trend at 2x and 10x ``samples``);
        the trend entries are NaN where fewer than 2 validations qualify or a value is not
        positive (e.g. a signed bias).
    """
    from pinqi.config import ExperimentConfig

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    points, summary, curves, trends = [], [], {}, {}
    for label, run in runs.items():
        config = ExperimentConfig.from_yaml(Path(run) / "config.yaml")
        optim = config.optim
        start = (
            min_samples
            if min_samples is not None
            else optim.pretrain_epochs * optim.samples_per_epoch
        )
        for column in columns:
            samples, values = validation_curve(
                Path(run) / "logs" / "metrics.csv", optim.batch_size, column
            )
            points += [
                {"run": label, "column": column, "samples": s, "value": v}
                for s, v in zip(samples, values, strict=True)
            ]
            kept = [(s, v) for s, v in zip(samples, values, strict=True) if s > start]
            # a power law needs positive errors (a signed bias has no such trend)
            positive = len(kept) >= 2 and min(v for _, v in kept) > 0
            trend = fit_power_law(*map(list, zip(*kept, strict=True))) if positive else None
            last = samples[-1]
            summary.append(
                {
                    "run": label,
                    "column": column,
                    "samples": last,
                    "value": values[-1],
                    "exponent": trend.exponent if trend else math.nan,
                    "at_2x": trend(2 * last) if trend else math.nan,
                    "at_10x": trend(10 * last) if trend else math.nan,
                }
            )
            if column == columns[0]:
                curves[label] = (samples, values)
                if trend:
                    trends[label] = trend
    with open(out / "learning_curve.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["run", "column", "samples", "value"])
        writer.writeheader()
        writer.writerows(points)
    horizon = 10 * max(row["samples"] for row in summary)
    plot_learning_curve(curves, trends, out / "learning_curve.png", horizon)
    return summary


def plot_learning_curve(
    curves: dict[str, tuple[list[int], list[float]]],
    trends: dict[str, PowerLaw],
    path: str | Path,
    horizon: float,
    references: dict[str, float] | None = None,
) -> Path:
    """Validation curves (log-log) with their fitted trends drawn out to ``horizon`` samples.

    Parameters
    ----------
    curves
        Label -> (samples, errors).
    trends
        Label -> fitted trend (drawn dashed in the curve's colour).
    path
        Output PNG.
    horizon
        Largest number of samples the trends are drawn to.
    references
        Label -> a fixed error drawn as a horizontal line (e.g. BART pics + fit).
    """
    from pinqi.evaluation.figures import pyplot, save_png

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for label, (samples, errors) in curves.items():
        (line,) = ax.loglog(samples, errors, marker="o", markersize=3, label=label)
        if label in trends:
            trend = trends[label]
            start = min(samples)
            grid = [start * (horizon / start) ** (i / 50) for i in range(51)]
            ax.loglog(
                grid,
                [trend(s) for s in grid],
                linestyle="--",
                color=line.get_color(),
                label=f"{label}: trend ~ samples^-{trend.exponent:.2f}",
            )
    for label, value in (references or {}).items():
        ax.axhline(value, color="gray", linestyle=":", label=label)
    ax.set_xlabel("training samples")
    ax.set_ylabel("validation error")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    return save_png(plt, fig, path)
