"""``pinqi evaluate`` and ``pinqi reconstruct``: PINQI and the baseline on a fixed data set."""

from __future__ import annotations

import csv
import statistics
import warnings
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm.auto import tqdm

from pinqi.data.datasets import H5Dataset
from pinqi.evaluation.baseline import cg_sense_fit
from pinqi.evaluation.metrics import parameter_metrics, t1_from_r1
from pinqi.io.checkpoints import load_model
from pinqi.nets.pinqi import PINQI
from pinqi.solvers import ConvergenceWarning

METHODS = ("PINQI", "CG-SENSE + fit")


def _batches(dataset: H5Dataset, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    yield from loader


def _check_compatible(model: PINQI, dataset: H5Dataset, data: Path) -> None:
    if dataset.tau.shape[0] != model.model.n_tau:
        raise ValueError(
            f"{data} has {dataset.tau.shape[0]} saturation times but the model was trained "
            f"for {model.model.n_tau}"
        )
    depth = 2 ** max(len(model.config.image_features), len(model.config.parameter_features))
    if dataset.config.size % depth:
        raise ValueError(f"{data}: image size {dataset.config.size} is not divisible by {depth}")


def reconstruct_all(
    model: PINQI, dataset: H5Dataset, batch_size: int, baseline: bool, progress: bool = True
) -> dict[str, torch.Tensor]:
    """Parameter maps ``(n, P, H, W)`` of PINQI (and of the baseline) for every sample."""
    results: dict[str, list[torch.Tensor]] = {m: [] for m in METHODS[: 1 + baseline]}
    if not torch.allclose(dataset.tau.to(model.model.tau), model.model.tau):
        warnings.warn(
            f"the data's saturation times {dataset.tau.tolist()} differ from the training ones "
            f"{model.model.tau.tolist()}; the signal model uses the data's",
            stacklevel=2,
        )
        model.model.tau = dataset.tau.to(model.model.tau)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        n_batches = -(-len(dataset) // batch_size)
        for batch in tqdm(_batches(dataset, batch_size), total=n_batches, disable=not progress):
            inputs = (batch["kspace"], batch["coil_maps"], batch["mask"])
            results["PINQI"].append(model(*inputs).parameters[-1])
            if baseline:
                results["CG-SENSE + fit"].append(cg_sense_fit(model.model, *inputs))
    return {name: torch.cat(maps) for name, maps in results.items()}


def evaluate(
    checkpoint: str | Path, data: str | Path, out: str | Path, batch_size: int = 4
) -> list[dict]:
    """Metrics of PINQI and the baseline per test sample; CSV, summary and figures in ``out``.

    Writes ``metrics.csv`` (columns ``sample, method, t1_nrmse, t1_mae, m0_nrmse, m0_mae``;
    T1 errors in s inside the brain mask), ``summary.md`` and the figures ``maps.png``
    (|M0| and T1 with error maps, like the paper's Fig. 4) and ``distributions.png``
    (per-sample T1 nRMSE and MAE, like Fig. 5).
    """
    from pinqi.evaluation.figures import plot_distributions, plot_maps

    model, _ = load_model(checkpoint)
    dataset = H5Dataset(data)
    if not dataset.has_ground_truth:
        raise ValueError(f"{data} has no ground truth (params, brain_mask): use pinqi reconstruct")
    _check_compatible(model, dataset, Path(data))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    maps = reconstruct_all(model, dataset, batch_size, baseline=True)
    truth = torch.stack([dataset[i]["params"] for i in range(len(dataset))])
    masks = torch.stack([dataset[i]["brain_mask"] for i in range(len(dataset))])
    rows = []
    for method, prediction in maps.items():
        metrics = parameter_metrics(prediction, truth, masks)
        for i in range(len(dataset)):
            rows.append(
                {"sample": i, "method": method, **{k: float(v[i]) for k, v in metrics.items()}}
            )
    with open(out / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = summarise(rows)
    (out / "summary.md").write_text(
        f"Checkpoint: {checkpoint}\nData: {data} ({len(dataset)} samples)\n\n{summary}\n"
        "nRMSE: ||x - x_true|| / ||x_true|| over the brain mask; T1 MAE in s; "
        "T1 = 1 / max(R1, 0.1 1/s).\n"
    )
    print(summary)
    plot_maps(out / "maps.png", truth[0], masks[0], {m: v[0] for m, v in maps.items()})
    plot_distributions(out / "distributions.png", rows)
    return rows


def summarise(rows: list[dict]) -> str:
    """Markdown table: mean and standard deviation of every metric per method."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    names = [k for k in rows[0] if k not in ("sample", "method")]
    lines = ["| method | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for method in methods:
        cells = []
        for name in names:
            values = [r[name] for r in rows if r["method"] == method]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.4f} +- {spread:.4f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def reconstruct(
    checkpoint: str | Path, data: str | Path, out: str | Path, batch_size: int = 4
) -> Path:
    """k-space in, parameter maps out: ``params.h5``, ``t1.nii.gz``, ``m0.nii.gz`` and PNGs."""
    from pinqi.evaluation.figures import plot_parameter_maps
    from pinqi.io.nifti import write_nifti

    model, _ = load_model(checkpoint)
    dataset = H5Dataset(data)
    _check_compatible(model, dataset, Path(data))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    params = reconstruct_all(model, dataset, batch_size, baseline=False)["PINQI"]
    t1 = t1_from_r1(params[:, -1]).numpy()
    m0 = torch.complex(params[:, 0], params[:, 1]).numpy()
    with h5py.File(out / "params.h5", "w") as f:
        f["params"] = params.numpy()
        f["t1"] = t1
        f["m0"] = m0
        f.attrs["checkpoint"] = str(checkpoint)
        f.attrs["conventions"] = "params = [Re M0, Im M0, R1 in 1/s]; t1 in s"
    pixel_mm = dataset.config.fov_mm / dataset.config.size
    write_nifti(out / "t1.nii.gz", t1, pixel_mm)
    write_nifti(out / "m0.nii.gz", np.abs(m0), pixel_mm)
    for i in range(len(params)):
        plot_parameter_maps(out / f"sample{i:03d}.png", params[i])
    return out
