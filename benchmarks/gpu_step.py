"""Training-step time of every method on a GPU against the same machine's CPU.

One training step (forward, loss, backward) of each method of ``configs/compare/cpu.yaml``
(96 x 96, batch 4) and of PINQI at the paper's scale (``configs/paper.yaml``: 192 x 192,
batch 16, T = 5), on the built-in phantom (no BrainWeb needed), median of 5 after 2 warm-ups,
on ``cuda`` and, for the cpu-scale methods, on the CPU of the same machine (all its cores).

    python benchmarks/gpu_step.py
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace

import torch

from pinqi.config import ExperimentConfig
from pinqi.data.datasets import SimulatedDataset
from pinqi.evaluation.compare import Comparison
from pinqi.nets.methods import build_network
from pinqi.training.objectives import training_loss


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


def main() -> None:
    device = torch.cuda.get_device_name()
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} CPU threads")
    comparison = Comparison.from_yaml("configs/compare/cpu.yaml")
    print("| method | batch x size | GPU [s/step] | CPU [s/step] | speed-up |")
    print("|---|---|---|---|---|")
    for entry in comparison.methods:
        config = comparison.experiment(entry)
        gpu = step_seconds(config, "cuda")
        cpu = step_seconds(config, "cpu", repeats=2)
        size = f"{config.optim.batch_size} x {config.data.size}"
        print(f"| {entry.name} | {size} | {gpu:.3f} | {cpu:.2f} | {cpu / gpu:.0f}x |", flush=True)
    paper = ExperimentConfig.from_yaml("configs/paper.yaml")
    gpu = step_seconds(paper, "cuda")
    print(f"| pinqi, paper.yaml | 16 x 192 | {gpu:.3f} | | |")
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(f"peak GPU memory {peak:.1f} GiB")


if __name__ == "__main__":
    main()
