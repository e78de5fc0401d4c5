"""Shared helpers of the benchmark scripts: machine, network and batch, peak-memory workers."""

from __future__ import annotations

import atexit
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

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


def cpu_processes(config: ExperimentConfig) -> int:
    """Processes a preset splits every step among on the CPU (``optim.cpu_processes``; 1 for
    code without that setting)."""
    return getattr(config.optim, "processes_on_cpu", 1)


def network_and_batch(
    config: ExperimentConfig, batch: int, split: str = "val"
) -> tuple[PINQI, SimulatedDataset, dict[str, torch.Tensor]]:
    """The network of ``config`` (seed 0), the data set of ``split`` and its first batch."""
    torch.manual_seed(0)
    net = PINQI.from_config(config.model, config.data.signal_model, config.data.tau)
    dataset = SimulatedDataset(config.data, split, batch, seed=0)
    data = {k: torch.stack([dataset[i][k] for i in range(batch)]) for k in dataset[0]}
    return net, dataset, data


def source_trees(baseline: str | None, baseline_src: str | None) -> dict[str, Path]:
    """The pinqi trees to measure: ``{"old": ..., "new": <this checkout>}``.

    ``baseline`` is a git revision, checked out into a temporary worktree (removed at exit);
    ``baseline_src`` an existing tree with ``src/`` and ``configs/`` (for machines without the
    repository's history, e.g. ``git archive REV | tar -x -C DIR`` made beforehand).
    """
    root = Path(__file__).resolve().parents[1]
    trees = {}
    if baseline_src:
        trees["old"] = Path(baseline_src).resolve()
    elif baseline:
        folder = Path(tempfile.mkdtemp(prefix="pinqi-baseline-"))
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(folder), baseline],
            cwd=root,
            check=True,
            capture_output=True,
        )
        atexit.register(
            subprocess.run,
            ["git", "worktree", "remove", "--force", str(folder)],
            cwd=root,
            capture_output=True,
        )
        trees[f"old ({baseline})"] = folder
    trees["new"] = root
    return trees


def measure_step(tree: Path, config: str, device: str, repeats: int, extra: list[str]) -> dict:
    """One training step of ``tree``'s code and preset ``config`` (``benchmarks/_step_worker.py``).

    Two fresh processes with ``PYTHONPATH=tree/src``: one for time, operators and host reads,
    one for the peak memory (on the CPU with ``MALLOC_MMAP_THRESHOLD_``, so that the peak
    resident size follows the live tensors; that setting slows every allocation down).
    """
    worker = Path(__file__).with_name("_step_worker.py")
    command = [sys.executable, str(worker), "--config", str(tree / config), "--device", device]
    command += ["--repeats", str(repeats), *extra]
    result = {}
    for memory in (False, True):
        env = dict(os.environ, PYTHONPATH=str(tree / "src"))
        if memory:
            env["MALLOC_MMAP_THRESHOLD_"] = "131072"
        run = command + (["--memory"] if memory else [])
        done = subprocess.run(run, capture_output=True, text=True, env=env, cwd=tree)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(run)} failed:\n{done.stderr[-2000:]}")
        result |= json.loads(done.stdout.strip().splitlines()[-1])
    return result


def version_table(
    trees: dict[str, Path],
    cases: list[tuple[str, str, list[str]]],
    device: str,
    repeats: int,
    variants: tuple[tuple[str, list[str]], ...] = (),
) -> str:
    """Markdown table: per case and code version, s/step, steps/min, ops, reads, peak memory.

    ``cases`` are (label, preset path relative to a tree, worker options); ``variants`` are
    (label, more worker options) measured on the ``"new"`` tree after the versions. The last
    column is the step's speed-up of each row over the case's first version.
    """
    lines = [
        "| case | code | batch x size, T, fit, processes x threads | s/step | steps/min "
        "| aten ops/step | host reads/step | peak memory [GiB] | speed-up |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, config, extra in cases:
        first = None
        rows = [(version, tree, extra) for version, tree in trees.items()]
        rows += [(name, trees["new"], [*extra, *more]) for name, more in variants]
        for version, tree, options in rows:
            r = measure_step(tree, config, device, repeats, options)
            first = first or r["seconds"]
            shape = f"{r['batch']} x {r['size']}, {r['iterations']}, {r['fit_solver']}"
            shape += f", {r.get('processes', 1)} x {r.get('threads', '?')}"
            lines.append(
                f"| {label} | {version} | {shape} | {r['seconds']:.3f} | "
                f"{60 / r['seconds']:.1f} | {r['aten_ops']:,} | {r['host_reads']:,} | "
                f"{r['peak_bytes'] / 2**30:.2f} | {first / r['seconds']:.2f}x |"
            )
            print(lines[-1], flush=True)
    return "\n".join(lines)
