"""Where the time of one PINQI training step goes, and the old code against the new.

1. With ``--baseline REV`` (a git revision) or ``--baseline-src DIR`` (a tree of an older
   version), one training step (forward + loss + backward, built-in phantom) of each case is
   measured for the old and the current code, each in a fresh process: seconds per step
   (median), steps per minute, aten operators and host reads (value copies to the host, each a
   synchronisation on a GPU) per step, peak memory. Cases: the ``cpu-brainweb`` preset (96 x
   96, batch 4, T = 3; as the preset runs it: 2 data-parallel processes of 2 samples, its
   ``optim.cpu_processes``) and ``configs/paper.yaml`` (T = 5, full-width UNets) at 64 x 64, batch
   2 (its full size costs ~20 s per step here). Variants of the current code: one process
   with all cores, and ``sync_free: always``.
2. The step of the current code broken into its parts, in one process and on the same batch
   (all of the step's samples):
   the two UNets (P_theta T + 1 times, Y_theta T times), the T data-consistency layers (CG
   forward + implicit backward), the T signal fits (Newton forward + exact backward), the
   initial images, and the generation of one batch of training data. "Rest" is the step minus
   the parts: Python, loss, autograd glue.

Usage: ``python benchmarks/step_profile.py [--baseline 47221dd] [--config
configs/cpu-brainweb.yaml] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from pinqi.config import ExperimentConfig
from pinqi.physics import CartesianAcquisition
from pinqi.solvers.data_consistency import solve_data_consistency
from pinqi.solvers.signal_fit import solve_signal_fit
from pinqi.training.losses import pinqi_loss

from _measure import machine, network_and_batch, source_trees, version_table

#: (label, preset, worker options) of the old-against-new table on the CPU.
CPU_CASES = [
    ("cpu-brainweb", "configs/cpu-brainweb.yaml", []),
    ("paper.yaml at 64 x 64, batch 2", "configs/paper.yaml", ["--size", "64", "--batch", "2"]),
]


#: Variants of the current code measured beside it: (label, worker options).
VARIANTS = (
    ("new, one process", ["--processes", "1"]),
    ("new, sync_free always", ["--set", "model.sync_free=always"]),
)


def median_time(call: Callable[[], None], repeats: int) -> float:
    call()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/cpu-brainweb.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", help="git revision of the old code to compare with")
    parser.add_argument("--baseline-src", help="a tree (src/, configs/) of the old code")
    args = parser.parse_args()
    print(f"machine: {machine()}\n")
    if args.baseline or args.baseline_src:
        trees = source_trees(args.baseline, args.baseline_src)
        print(version_table(trees, CPU_CASES, "cpu", args.repeats, VARIANTS) + "\n")
    parts_table(args)


def parts_table(args: argparse.Namespace) -> None:
    """The current step broken into its parts (see the module docstring)."""
    config = ExperimentConfig.from_yaml(args.config)
    batch_size, t = config.optim.batch_size, config.model.iterations
    net, train_set, data = network_and_batch(config, batch_size, "train")
    kspace, coils, mask = data["kspace"], data["coil_maps"], data["mask"]
    acquisition = CartesianAcquisition(coils, mask)
    with torch.no_grad():
        output = net(kspace, coils, mask)
    images = [y.detach() for y in output.images]
    params = [p.detach() for p in output.parameters]
    lam = {k: v.detach() for k, v in net.strengths().items()}

    def step() -> None:
        net.zero_grad()
        out = net(kspace, coils, mask)
        pinqi_loss(out, data["params"], data["brain_mask"], 0.05, 0.01).backward()

    def unets() -> None:
        net.zero_grad()
        total = sum(net.predict_parameters(images[i], i).sum() for i in range(t + 1))
        total = total + sum(net.regularise_images(images[i], i + 1).abs().sum() for i in range(t))
        total.backward()

    def data_consistency() -> None:
        for i in range(t):
            lambdas = [lam["lambda_q"][i].expand(batch_size).clone().requires_grad_()]
            prior = net.signal_model(params[i]).requires_grad_()
            y, _ = solve_data_consistency(
                acquisition,
                kspace,
                lambdas,
                [prior],
                max_iter=config.model.cg_iterations,
                tol=1e-5,
                x0=images[i],
            )
            y.abs().sum().backward()

    def signal_fits() -> None:
        for i in range(t):
            y = images[i + 1].clone().requires_grad_()
            p_reg = params[i + 1].clone().requires_grad_()
            p, _ = solve_signal_fit(
                net.signal_model,
                y,
                p_reg,
                net.parameter_strength(lam["lambda_p"][i], p_reg),
                params[i],
                max_iter=config.model.fit_iterations,
            )
            p.sum().backward()

    def initial_images() -> None:
        with torch.no_grad():
            net.initial_images(acquisition, kspace)

    def generation() -> None:
        for i in range(batch_size):
            train_set[i]

    parts = {
        "UNets (P_theta x (T+1), Y_theta x T), fwd + bwd": unets,
        "CG data consistency x T, fwd + bwd": data_consistency,
        "signal fit x T, fwd + bwd": signal_fits,
        "initial images": initial_images,
    }
    total = median_time(step, args.repeats)
    seconds = {name: median_time(call, args.repeats) for name, call in parts.items()}
    data_time = median_time(generation, args.repeats)
    print(
        f"config: {args.config}, batch {batch_size}, {config.data.size}x{config.data.size}, "
        f"T = {t}, {args.repeats} repeats (medians)\n"
    )
    print("| part | time [s] | share of the step |")
    print("|---|---|---|")
    print(f"| training step (forward + backward) | {total:.3f} | 100% |")
    for name, value in seconds.items():
        print(f"| {name} | {value:.3f} | {100 * value / total:.0f}% |")
    rest = total - sum(seconds.values())
    print(f"| rest (loss, Python, autograd glue) | {rest:.3f} | {100 * rest / total:.0f}% |")
    where = "in DataLoader workers" if config.optim.num_workers else "adds to every step"
    print(
        f"| data generation of one batch ({where}) | {data_time:.3f} | "
        f"{100 * data_time / total:.0f}% |"
    )


if __name__ == "__main__":
    main()
