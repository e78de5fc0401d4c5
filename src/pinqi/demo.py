"""``pinqi demo``: simulate a test slice and reconstruct it with PINQI and the baseline."""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from pinqi.data.datasets import SimulatedDataset
from pinqi.evaluation.baseline import cg_sense_fit
from pinqi.evaluation.figures import plot_maps
from pinqi.metrics import parameter_metrics
from pinqi.solvers import SolverInfo
from pinqi.training.checkpoints import DEFAULT_MODEL, load_model


@dataclass(frozen=True)
class DemoResult:
    """What the demo measured: per-method metrics inside the brain mask, and the files."""

    metrics: dict[str, dict[str, float]]
    figure: Path
    table: Path


def _describe(info: SolverInfo, what: str) -> str:
    return (
        f"{what}: {info.iterations} iterations, worst residual {float(info.residual.max()):.1e}, "
        f"{info.not_converged} not converged"
    )


def run_demo(out: Path, checkpoint: str | Path = DEFAULT_MODEL, seed: int = 0) -> DemoResult:
    """Reconstruct one simulated slice with PINQI and the CG-SENSE baseline.

    The slice is a test-split slice of the built-in phantom with the model's acquisition
    (no download, whatever anatomy the model was trained on).

    Writes ``out/demo.png`` (|M0| and T1 maps with errors) and ``out/metrics.csv`` (columns
    ``sample, method, t1_nrmse, t1_mae, m0_nrmse, m0_mae``) and prints what each step did.

    Parameters
    ----------
    out
        Output folder.
    checkpoint
        Model to use; default: the model shipped with pinqi.
    seed
        Seed of the simulated test slice.
    """
    out.mkdir(parents=True, exist_ok=True)
    model, config = load_model(checkpoint)
    data = config.data
    print(
        f"model: {config.name} (T = {config.model.iterations}), trained on {data.size}x"
        f"{data.size} simulated data, {data.acceleration:g}x, {data.n_coils} coils"
    )
    # the built-in phantom: no download, whatever anatomy the model was trained on
    slice_data = replace(data.without_coverage(), anatomy="builtin", brainweb_dir=None)
    sample = SimulatedDataset(slice_data, "test", 1, seed=seed)[0]
    batch = {k: v[None] for k, v in sample.items()}
    inputs = (batch["kspace"], batch["coil_maps"], batch["mask"])
    print(
        f"simulated a test slice ({slice_data.anatomy} phantom), k-space "
        f"{tuple(sample['kspace'].shape)}, noise sigma {float(sample['noise_sigma']):.4f}"
    )
    start = time.perf_counter()
    with torch.no_grad():
        pinqi = model(*inputs).parameters[-1]
    pinqi_seconds = time.perf_counter() - start
    start = time.perf_counter()
    baseline, cg_info, fit_info = cg_sense_fit(model.signal_model, *inputs, return_info=True)
    baseline_seconds = time.perf_counter() - start
    print(_describe(cg_info, "baseline, layer 1 (CG-SENSE data consistency)"))
    print(_describe(fit_info, "baseline, layer 2 (pixel-wise signal fit, newton)"))
    predictions = {"PINQI": pinqi, "CG-SENSE + fit": baseline}
    seconds = {"PINQI": pinqi_seconds, "CG-SENSE + fit": baseline_seconds}
    metrics = {}
    for name, p in predictions.items():
        values = parameter_metrics(p, batch["params"], batch["brain_mask"])
        metrics[name] = {k: float(v[0]) for k, v in values.items()}
        print(
            f"{name:15s} T1 nRMSE {metrics[name]['t1_nrmse']:.3f}, T1 MAE "
            f"{metrics[name]['t1_mae'] * 1000:.0f} ms (inside the brain), {seconds[name]:.1f} s"
        )
    table = out / "metrics.csv"
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sample", "method", *metrics["PINQI"]])
        for name, values in metrics.items():
            writer.writerow([0, name, *values.values()])
    figure = plot_maps(
        out / "demo.png",
        sample["params"],
        sample["brain_mask"],
        {k: v[0] for k, v in predictions.items()},
    )
    print(f"wrote {figure} and {table}")
    return DemoResult(metrics, figure, table)
