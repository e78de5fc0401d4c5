"""One PINQI training step measured in this process; prints one JSON line.

Run by ``benchmarks/step_profile.py`` and ``benchmarks/gpu_step.py`` with ``PYTHONPATH``
pointing at the pinqi source to measure (the current tree or an older commit's), so it uses
only interfaces every version has: the preset, the built-in phantom, the network and its loss.

    PYTHONPATH=src python benchmarks/_step_worker.py --config configs/cpu-brainweb.yaml

With ``--processes W`` (on the CPU by default the preset's ``optim.cpu_processes``; the current
code only for W > 1) the step runs data-parallel in W processes on this machine
(``torch.distributed`` with gloo, ``DistributedDataParallel``), each with its share of the cores
and of the batch, as ``pinqi train`` runs a preset with ``cpu_processes: W``: the time is
that of the slowest process, from a barrier before the step to one after it; operators and
host reads are those of one process, the peak memory the sum over the processes.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import tempfile
import time
from dataclasses import replace

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from pinqi.config import ExperimentConfig
from pinqi.data.datasets import SimulatedDataset
from pinqi.nets.methods import build_network
from pinqi.training.objectives import training_loss

from _measure import cpu_processes

#: Tensor methods that copy a value to the host (a synchronisation on accelerators).
HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")


class CountOps(TorchDispatchMode):
    """Counts the aten operators dispatched (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


class CountReads:
    """Counts host reads of tensor values while active."""

    def __enter__(self) -> CountReads:
        self.counts: collections.Counter = collections.Counter()
        self.depth = 0  # a read inside another (float -> item) counts once
        self.saved = {name: getattr(torch.Tensor, name) for name in HOST_READS}
        for name, method in self.saved.items():

            def counted(tensor, *args, _name=name, _method=method, **kwargs):
                if self.depth == 0:
                    self.counts[_name] += 1
                self.depth += 1
                try:
                    return _method(tensor, *args, **kwargs)
                finally:
                    self.depth -= 1

            setattr(torch.Tensor, name, counted)
        return self

    def __exit__(self, *exc) -> None:
        for name, method in self.saved.items():
            setattr(torch.Tensor, name, method)


def vm_hwm() -> int:
    """Peak resident size of this process in bytes (Linux)."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def reset_vm_hwm() -> int:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, help="override optim.batch_size (all processes)")
    parser.add_argument("--size", type=int, help="override data.size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], help="section.key=value")
    parser.add_argument(
        "--memory",
        action="store_true",
        help="measure the peak memory of one step only (run with MALLOC_MMAP_THRESHOLD_ set)",
    )
    parser.add_argument("--processes", type=int, help="data-parallel processes sharing the batch")
    args = parser.parse_args()
    if args.processes is None:
        config = ExperimentConfig.from_yaml(args.config).with_overrides(args.set)
        args.processes = cpu_processes(config) if args.device == "cpu" else 1
    if args.processes == 1:
        measure(args)
        return
    with tempfile.TemporaryDirectory() as folder:
        torch.multiprocessing.spawn(
            _process, (args, os.path.join(folder, "rendezvous")), nprocs=args.processes
        )


def _process(rank: int, args: argparse.Namespace, rendezvous: str) -> None:
    """Process ``rank`` of a data-parallel measurement (see the module docstring)."""
    import torch.distributed as dist

    from pinqi.training.module import share_cpu_cores

    share_cpu_cores(args.processes)
    dist.init_process_group(
        "gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=args.processes
    )
    try:
        measure(args, rank)
    finally:
        dist.destroy_process_group()


def measure(args: argparse.Namespace, rank: int | None = None) -> None:
    """Measure the step of one process (``rank`` None) or of data-parallel process ``rank``."""
    config = ExperimentConfig.from_yaml(args.config).with_overrides(args.set)
    data = replace(config.data.without_coverage(), anatomy="builtin", brainweb_dir=None)
    if args.size:
        data = replace(data, size=args.size)
    batch_size = args.batch or config.optim.batch_size
    dataset = SimulatedDataset(data, "train", batch_size, seed=0)
    share = range(batch_size)
    if rank is not None:  # this process's share of the batch
        share = range(rank, batch_size, args.processes)
    samples = [dataset[i] for i in share]
    batch = {k: torch.stack([s[k] for s in samples]).to(args.device) for k in samples[0]}
    torch.manual_seed(0)
    net = build_network(config.method, config.model, data.signal_model, data.tau)
    net = net.to(args.device).train()
    forward = net
    if rank is not None:
        forward = torch.nn.parallel.DistributedDataParallel(net)
    cuda = args.device.startswith("cuda")

    def step() -> None:
        out = forward(batch["kspace"], batch["coil_maps"], batch["mask"])
        loss = training_loss(net, batch, out, config.optim)
        net.zero_grad(set_to_none=True)
        loss.backward()
        if rank is not None:
            torch.distributed.barrier()

    step()  # warm-up
    if args.memory:
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        else:
            before = reset_vm_hwm()
        step()
        peak = (torch.cuda.max_memory_allocated() if cuda else vm_hwm()) - before
        if rank is not None:
            total = torch.tensor(float(peak))
            torch.distributed.all_reduce(total)
            peak = int(total)
        if not rank:
            print(json.dumps({"peak_bytes": peak}))
        return
    times = []
    for _ in range(args.repeats):
        if rank is not None:
            torch.distributed.barrier()
        start = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    with CountReads() as reads:
        counter = CountOps()
        with counter:
            step()
    if rank:
        return
    print(
        json.dumps(
            {
                "seconds": statistics.median(times),
                "aten_ops": counter.count,
                "host_reads": sum(reads.counts.values()),
                "batch": batch_size,
                "size": data.size,
                "iterations": config.model.iterations,
                "fit_solver": config.model.fit_solver,
                "processes": args.processes,
                "threads": torch.get_num_threads(),  # per process
            }
        )
    )


if __name__ == "__main__":
    main()
