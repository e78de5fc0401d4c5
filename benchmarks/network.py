"""Time and peak memory of PINQI: training step (forward + backward) and inference.

Configurations (paper architecture, ``configs/paper.yaml``, 192x192, 8 coils, 5 delays):
forward + backward at batch 1 and 4, inference (no gradient) at batch 1 and 4; and, at batch
1, forward + backward with 5, 15 and 45 CG iterations per data-consistency layer, to show that
the implicit layers keep memory independent of the solver iterations. Each configuration runs
in fresh processes (time: normal malloc; memory: peak resident size during the call, with
``MALLOC_MMAP_THRESHOLD_=131072``, minus the resident size before it).

Usage: ``python benchmarks/network.py [--size 192]``; prints Markdown.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace

import torch

from pinqi.config import ExperimentConfig
from pinqi.training.losses import pinqi_loss

from _measure import machine, network_and_batch, reset_peak, run_worker, status_bytes


def worker(size: int, batch: int, cg_iterations: int, train: int) -> None:
    """One measured call; prints JSON with seconds and peak bytes."""
    config = ExperimentConfig.from_yaml("configs/paper.yaml")
    config = replace(
        config,
        data=replace(config.data, size=size, anatomy="builtin", brainweb_dir=None),
        model=replace(config.model, cg_iterations=cg_iterations),
    )
    model, _, data = network_and_batch(config, batch)
    inputs = (data["kspace"], data["coil_maps"], data["mask"])

    def call() -> None:
        if train:
            output = model(*inputs)
            pinqi_loss(output, data["params"], data["brain_mask"], 0.05, 0.01).backward()
        else:
            with torch.no_grad():
                model(*inputs)

    before = reset_peak()
    start = time.perf_counter()
    call()
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_bytes": status_bytes("VmHWM") - before}))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(*map(int, sys.argv[2:6]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=192)
    args = parser.parse_args()
    print(f"machine: {machine()}\n")
    print("| call | batch | CG iterations | time [s] | peak memory [MB] |")
    print("|---|---|---|---|---|")
    runs = [(1, 15, 1), (4, 15, 1), (1, 15, 0), (4, 15, 0), (1, 5, 1), (1, 45, 1)]
    for batch, cg, train in runs:
        timing = run_worker(__file__, [args.size, batch, cg, train], memory=False)
        memory = run_worker(__file__, [args.size, batch, cg, train], memory=True)
        call = "forward + backward" if train else "inference"
        seconds = "failed" if timing is None else f"{timing['seconds']:.1f}"
        peak = "failed" if memory is None else f"{memory['peak_bytes'] / 2**20:.0f}"
        print(f"| {call} | {batch} | {cg} | {seconds} | {peak} |")


if __name__ == "__main__":
    main()
