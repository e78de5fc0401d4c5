"""Training-step time of PINQI with its inputs validated once versus at every layer call.

Since issue 8, ``PINQI.forward`` validates k-space, coil maps and mask once and calls the
unchecked layers (``solve_data_consistency``, ``solve_signal_fit``). Before, every layer call
went through the public ``data_consistency`` / ``signal_fit``, which validate all their inputs
(finite values, non-negative strengths, mask values: about ten host synchronisations per
unrolled iteration). This script times one training step (forward + backward, ``configs/cpu.yaml``
network, 96x96, batch 4) both ways in the same process, interleaved, and prints the medians and
their ratio. The "checked" variant routes the network's layer calls through the public entry
points, which is what the network did before.

Usage: ``python benchmarks/validation.py [--repeats 5] [--config configs/cpu.yaml]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from unittest import mock

import pinqi.nets.pinqi as pinqi_module
from pinqi.config import ExperimentConfig
from pinqi.solvers import data_consistency, signal_fit
from pinqi.training.losses import pinqi_loss

from _measure import machine, network_and_batch


def checked_data_consistency(acquisition, kspace, lambdas, priors, **kwargs):
    """The CG layer through its validating public entry point."""
    kwargs.pop("implicit", None)
    return data_consistency(
        kspace,
        acquisition.coil_maps,
        acquisition.mask,
        lambdas,
        priors,
        return_info=True,
        warn=False,
        **kwargs,
    )


def checked_signal_fit(model, images, p_reg, lam, p0, **kwargs):
    """The fit layer through its validating public entry point."""
    return signal_fit(model, images, p_reg, lam, p0=p0, return_info=True, warn=False, **kwargs)


def step_time(step: Callable[[], None]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/cpu.yaml")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    config = ExperimentConfig.from_yaml(args.config)
    batch = config.optim.batch_size
    model, _, data = network_and_batch(config, batch)

    def step() -> None:
        model.zero_grad()
        output = model(data["kspace"], data["coil_maps"], data["mask"])
        pinqi_loss(output, data["params"], data["brain_mask"], 0.05, 0.01).backward()

    checked = mock.patch.multiple(
        pinqi_module,
        solve_data_consistency=checked_data_consistency,
        solve_signal_fit=checked_signal_fit,
    )
    step()  # warm-up
    times: dict[str, list[float]] = {"validated once": [], "validated per layer call": []}
    for _ in range(args.repeats):
        times["validated once"].append(step_time(step))
        with checked:
            times["validated per layer call"].append(step_time(step))
    print(f"machine: {machine()}")
    print(
        f"config: {args.config}, batch {batch}, {config.data.size}x{config.data.size}, "
        f"T = {config.model.iterations}, {args.repeats} interleaved repeats\n"
    )
    print("| inputs | median step [s] | min [s] |")
    print("|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.3f} | {min(values):.3f} |")
    ratio = statistics.median(times["validated per layer call"]) / statistics.median(
        times["validated once"]
    )
    print(f"\nratio per-call / once: {ratio:.3f}")


if __name__ == "__main__":
    main()
