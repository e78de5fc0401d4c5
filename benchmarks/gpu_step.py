"""Training-step time on a GPU: the old code against the new, and every method against the CPU.

1. With ``--baseline REV`` or ``--baseline-src DIR`` (an older tree with ``src/`` and
   ``configs/``, e.g. made by ``git archive REV | tar -x -C DIR`` before the tree is copied to
   a machine without the repository's history): one PINQI training step of the old and of the
   current code, each in a fresh process (``benchmarks/_step_worker.py``), for the
   ``cpu-brainweb`` preset (4 x 96 x 96, T = 3) and ``configs/paper.yaml`` (16 x 192 x 192,
   T = 5): seconds per step, steps per minute, aten operators and host reads per step, peak
   GPU memory; for the new code also with activation checkpointing
   (``model.checkpoint_unets``).
2. One training step (forward, loss, backward) of each method of ``configs/compare/cpu.yaml``
   (96 x 96, batch 4) on ``cuda`` and on the CPU of the same machine (all its cores), median
   of 5 after 2 warm-ups, on the built-in phantom (no BrainWeb needed).

    python benchmarks/gpu_step.py --baseline-src runs/baseline-src
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch

from pinqi.config import ExperimentConfig
from pinqi.data.datasets import SimulatedDataset
from pinqi.evaluation.compare import Comparison
from pinqi.nets.methods import build_network
from pinqi.training.objectives import training_loss

from _measure import source_trees, version_table

#: (label, preset, worker options) of the old-against-new table on the GPU.
GPU_CASES = [
    ("cpu-brainweb", "configs/cpu-brainweb.yaml", []),
    ("paper.yaml", "configs/paper.yaml", []),
]


def batch_of(config: ExperimentConfig, device: str) -> dict[str, torch.Tensor]:
    data = replace(config.data.without_coverage(), anatomy="builtin", brainweb_dir=None)
    dataset = SimulatedDataset(data, "train", config.optim.batch_size, seed=0)
    samples = [dataset[i] for i in range(len(dataset))]
    return {k: torch.stack([s[k] for s in samples]).to(device) for k in samples[0]}


def step_seconds(config: ExperimentConfig, device: str, repeats: int = 5) -> float:
    torch.manual_seed(0)
    net = build_network(config.method, config.model, config.data.signal_model, config.data.tau)
    net = net.to(device).train()
    batch = batch_of(config, device)
    times = []
    for i in range(2 + repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = net(batch["kspace"], batch["coil_maps"], batch["mask"])
        loss = training_loss(net, batch, out, config.optim)
        net.zero_grad(set_to_none=True)
        loss.backward()
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def data_rate(config: ExperimentConfig, workers: int, batches: int = 12) -> float:
    """Training samples per second that a DataLoader with ``workers`` simulates (built-in
    phantom, the preset's size and batch), after its first batch."""
    data = replace(config.data, anatomy="builtin", brainweb_dir=None)
    n = config.optim.batch_size * (batches + 1)
    loader = torch.utils.data.DataLoader(
        SimulatedDataset(data, "train", n, seed=0),
        batch_size=config.optim.batch_size,
        num_workers=workers,
    )
    iterator = iter(loader)
    next(iterator)
    start = time.perf_counter()
    count = sum(len(batch["kspace"]) for batch in iterator)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="git revision of the old code to compare with")
    parser.add_argument("--baseline-src", help="a tree (src/, configs/) of the old code")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-methods", action="store_true", help="only the old/new table")
    args = parser.parse_args()
    device = torch.cuda.get_device_name()
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} CPU threads")
    if args.baseline or args.baseline_src:
        trees = source_trees(args.baseline, args.baseline_src)
        checkpointed = (("new, checkpoint_unets", ["--set", "model.checkpoint_unets=true"]),)
        print(version_table(trees, GPU_CASES, "cuda", args.repeats, checkpointed), flush=True)
    paper = ExperimentConfig.from_yaml("configs/paper.yaml")
    for workers in (paper.optim.num_workers, 2 * paper.optim.num_workers):
        rate = data_rate(paper, workers)
        print(
            f"paper.yaml data: {rate:.0f} samples/s with {workers} DataLoader workers", flush=True
        )
    if args.skip_methods:
        return
    comparison = Comparison.from_yaml("configs/compare/cpu.yaml")
    print("| method | batch x size | GPU [s/step] | CPU [s/step] | speed-up |")
    print("|---|---|---|---|---|")
    for entry in comparison.methods:
        config = comparison.experiment(entry)
        gpu = step_seconds(config, "cuda")
        cpu = step_seconds(config, "cpu", repeats=2)
        size = f"{config.optim.batch_size} x {config.data.size}"
        print(f"| {entry.name} | {size} | {gpu:.3f} | {cpu:.2f} | {cpu / gpu:.0f}x |", flush=True)
    gpu = step_seconds(paper, "cuda")
    print(f"| pinqi, paper.yaml | 16 x 192 | {gpu:.3f} | | |")
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(f"peak GPU memory {peak:.1f} GiB")


if __name__ == "__main__":
    main()
