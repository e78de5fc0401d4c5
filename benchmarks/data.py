"""Throughput of the synthetic data pipeline against what a PINQI training step consumes.

For each anatomy (built-in phantom; BrainWeb if a folder is given or found) it measures the
samples per second one process generates at the given size (subjects already loaded), and,
in the same process, the time of the physics part of one unrolled PINQI iteration on a batch:
the CG data-consistency layer (15 iterations, implicit backward) plus the signal fit (newton),
forward and backward. A PINQI training step runs T of these plus the two UNets, so
``batch / (T x that time)`` is an upper bound on the samples per second training consumes;
the printed margin is the generation rate divided by that bound (the issue asks for >= 5).

Usage: ``python benchmarks/data.py [--size 192] [--brainweb DIR]``; prints Markdown.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import torch

from pinqi.data.datasets import SimulatedDataset
from pinqi.data.simulation import SimulationConfig
from pinqi.physics import SaturationRecovery
from pinqi.solvers import ConvergenceWarning, data_consistency, signal_fit

DEFAULT_BRAINWEB = Path(__file__).resolve().parents[2] / "shared" / "data" / "brainweb"


def generation_rate(config: SimulationConfig, n: int) -> float:
    dataset = SimulatedDataset(config, "train", n + 1, seed=0)
    dataset.preload()  # BrainWeb subjects are loaded once per training run, not per sample
    dataset[n]
    start = time.perf_counter()
    for i in range(n):
        dataset[i]
    return n / (time.perf_counter() - start)


def layer_iteration_seconds(config: SimulationConfig, batch: int, repeats: int) -> float:
    """Forward + backward of CG data consistency and the signal fit on one batch."""
    samples = [SimulatedDataset(config, "val", batch, seed=1)[i] for i in range(batch)]
    stack = {
        k: torch.stack([s[k] for s in samples]) for k in ("kspace", "mask", "coil_maps", "params")
    }
    model = SaturationRecovery(samples[0]["tau"])
    times = []
    for _ in range(repeats):
        prior = model(stack["params"]).requires_grad_()
        p_reg = stack["params"].clone().requires_grad_()
        lambdas = [torch.tensor(0.1, requires_grad=True), torch.tensor(0.1, requires_grad=True)]
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            images = data_consistency(
                stack["kspace"],
                stack["coil_maps"],
                stack["mask"],
                lambdas,
                [prior, prior],
                max_iter=15,
            )
            p = signal_fit(model, images, p_reg, torch.tensor(3.0))
            p.square().sum().backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs="+", default=[192, 96])
    parser.add_argument("--samples", type=int, default=20, help="samples timed per anatomy")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=5, help="PINQI unrolled iterations T")
    parser.add_argument("--brainweb", type=Path, default=DEFAULT_BRAINWEB)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    anatomies = [("built-in phantom", {})]
    if args.brainweb.is_dir():
        anatomies.append(
            ("BrainWeb (crisp)", {"anatomy": "brainweb", "brainweb_dir": str(args.brainweb)})
        )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, one process\n")
    print(
        "| size | anatomy | generated samples/s | layers of one PINQI iteration, batch "
        f"{args.batch} [s] | training consumes at most [samples/s] (T = {args.iterations}) "
        "| margin |"
    )
    print("|---|---|---|---|---|---|")
    for size in args.size:
        layers = layer_iteration_seconds(SimulationConfig(size=size), args.batch, repeats=3)
        consumed = args.batch / (args.iterations * layers)
        for name, extra in anatomies:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                rate = generation_rate(SimulationConfig(size=size, **extra), args.samples)
            print(
                f"| {size} | {name} | {rate:.1f} | {layers:.2f} | {consumed:.2f} "
                f"| {rate / consumed:.0f}x |"
            )


if __name__ == "__main__":
    main()
