"""Choose the TV weight and iterations of the BART pics reference on the validation split.

Simulates ``--n-samples`` samples of the validation split (``SimulatedDataset(config, "val",
n, seed)``: 96x96, 8x, 8 coils, the paper's 5 saturation times; the built-in phantom, or
BrainWeb with ``--brainweb DIR``), reconstructs them with ``bart pics`` for every TV weight,
number of iterations and TV coupling of the grid followed by the baseline's pixel-wise fit
(:func:`pinqi.evaluation.bart.bart_pics_fit`), and prints a Markdown table of the T1 and M0
nRMSE (mean +- standard deviation over the samples, inside the brain mask) with the
CG-SENSE + fit baseline for comparison, and the setting with the lowest mean T1 nRMSE (ties:
fewer iterations). Never uses the test split.

Usage: ``nice -n 10 python benchmarks/bart_tune.py [--brainweb ../shared/data/brainweb]
[--n-samples 4] [--tv 0.003 0.01 0.03] [--iterations 50 100 200] [--coupling per-frame]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from pinqi.data.datasets import SimulatedDataset
from pinqi.data.simulation import TAU_PAPER, SimulationConfig
from pinqi.evaluation.bart import BartConfig, bart_pics_fit
from pinqi.evaluation.baseline import cg_sense_fit
from pinqi.metrics import parameter_metrics
from pinqi.physics import SaturationRecovery

from _measure import machine


def summary(values: torch.Tensor) -> str:
    """``mean +- std`` of per-sample values."""
    values = values.tolist()
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} +- {spread:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--brainweb", type=Path, help="BrainWeb folder (default: phantom)")
    parser.add_argument("--n-samples", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0, help="validation set seed")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--tv", type=float, nargs="+", default=[0.003, 0.01, 0.03])
    parser.add_argument("--iterations", type=int, nargs="+", default=[50, 100, 200])
    parser.add_argument(
        "--coupling", nargs="+", choices=("joint", "per-frame"), default=["per-frame"]
    )
    args = parser.parse_args()

    config = SimulationConfig(
        size=args.size,
        tau=TAU_PAPER,
        n_coils=8,
        acceleration=8.0,
        anatomy="brainweb" if args.brainweb else "builtin",
        brainweb_dir=str(args.brainweb) if args.brainweb else None,
    )
    dataset = SimulatedDataset(config, "val", args.n_samples, seed=args.seed)
    samples = [dataset[i] for i in range(len(dataset))]
    batch = {k: torch.stack([s[k] for s in samples]) for k in ("kspace", "coil_maps", "mask")}
    truth = torch.stack([s["params"] for s in samples])
    brain = torch.stack([s["brain_mask"] for s in samples])
    model = SaturationRecovery(samples[0]["tau"])
    inputs = (batch["kspace"], batch["coil_maps"], batch["mask"])
    print(f"machine: {machine()}")
    print(
        f"data: validation split, seed {args.seed}, {args.n_samples} samples, anatomy "
        f"{config.anatomy}, {config.size}x{config.size}, {config.acceleration:g}x, "
        f"{config.n_coils} coils, tau {list(config.tau)} s, noise sigma "
        f"{[round(float(s['noise_sigma']), 4) for s in samples]}\n"
    )
    columns = ("method", "TV coupling", "TV weight", "iterations", "T1 nRMSE", "M0 nRMSE")
    print("| " + " | ".join(columns) + " | time [s/sample] |")
    print("|---" * (len(columns) + 1) + "|")
    start = time.perf_counter()
    metrics = parameter_metrics(cg_sense_fit(model, *inputs), truth, brain)
    seconds = (time.perf_counter() - start) / args.n_samples
    print(
        f"| CG-SENSE + fit | - | - | - | {summary(metrics['t1_nrmse'])} | "
        f"{summary(metrics['m0_nrmse'])} | {seconds:.1f} |",
        flush=True,
    )
    results = []
    for coupling in args.coupling:
        for iterations in args.iterations:
            for tv in args.tv:
                bart = BartConfig(tv, iterations, joint_frames=coupling == "joint")
                start = time.perf_counter()
                metrics = parameter_metrics(bart_pics_fit(model, *inputs, bart), truth, brain)
                seconds = (time.perf_counter() - start) / args.n_samples
                results.append((float(metrics["t1_nrmse"].mean()), iterations, bart))
                print(
                    f"| bart-pics | {coupling} | {tv:g} | {iterations} | "
                    f"{summary(metrics['t1_nrmse'])} | {summary(metrics['m0_nrmse'])} | "
                    f"{seconds:.1f} |",
                    flush=True,
                )
    best, _, chosen = min(results, key=lambda r: (r[0], r[1]))
    coupling = "joint" if chosen.joint_frames else "per-frame"
    print(
        f"\nlowest mean T1 nRMSE {best:.4f}: tv_weight {chosen.tv_weight:g}, iterations "
        f"{chosen.iterations}, coupling {coupling}"
    )


if __name__ == "__main__":
    main()
