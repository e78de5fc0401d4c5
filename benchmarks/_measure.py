"""Shared helpers of the benchmark scripts: machine, network and batch, peak-memory workers."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import torch

from pinqi.config import ExperimentConfig
from pinqi.data.datasets import SimulatedDataset
from pinqi.nets import PINQI


def machine() -> str:
    """CPU model, cores, torch version and threads."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}"
    )


def status_bytes(field: str) -> int:
    """A size field (e.g. VmRSS, VmHWM) of /proc/self/status in bytes."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def reset_peak() -> int:
    """Reset the peak resident size (VmHWM) to the current one; return the current size."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return status_bytes("VmRSS")


def run_worker(script: str, args: list, memory: bool) -> dict | None:
    """Run ``script --worker ARGS`` in a fresh process and parse its last line as JSON.

    With ``memory``, glibc returns freed memory at once (``MALLOC_MMAP_THRESHOLD_``), so the
    resident size follows the live tensors.
    """
    env = dict(os.environ)
    if memory:
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    command = [sys.executable, script, "--worker", *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        print(f"worker {args} failed: {done.stderr[-500:]}", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def network_and_batch(
    config: ExperimentConfig, batch: int, split: str = "val"
) -> tuple[PINQI, SimulatedDataset, dict[str, torch.Tensor]]:
    """The network of ``config`` (seed 0), the data set of ``split`` and its first batch."""
    torch.manual_seed(0)
    net = PINQI.from_config(config.model, config.data.signal_model, config.data.tau)
    dataset = SimulatedDataset(config.data, split, batch, seed=0)
    data = {k: torch.stack([dataset[i][k] for i in range(batch)]) for k in dataset[0]}
    return net, dataset, data
