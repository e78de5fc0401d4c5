"""How estimated coil maps change PINQI's T1: the raw-data path against the simulator's.

For ``--n-samples`` slices of the BrainWeb test split (96x96, 8x, 8 coils, seed 2026; the
acquisition of ``pinqi simulate``), PINQI reconstructs T1 three times: with the true coil
maps (the simulator path), and with Walsh maps estimated from the k-space lines all frames
share or from the time-averaged k-space centre (``calibration_images(lines="common"|"union")``),
with and without moving the image phase into the maps (``align_phase``), each followed by the
intensity normalisation of ``pinqi import-ismrmrd``. Prints the median |T1 error| in the
brain per path and the coil maps' correlation with the truth. Usage:
``python benchmarks/coil_maps_transfer.py --checkpoint default [--n-samples 8]``.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from pinqi.data.datasets import SimulatedDataset
from pinqi.data.simulation import SimulationConfig
from pinqi.data.undersample import intensity_scale
from pinqi.metrics import t1_from_r1
from pinqi.physics import calibration_images, walsh_maps
from pinqi.physics.coil_estimation import align_phase
from pinqi.training.checkpoints import load_model

from _measure import machine


def correlation(estimate: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean over ``mask`` of the per-pixel |<c_est, c_true>| / (|c_est| |c_true|)."""
    inner = (estimate.conj() * truth).sum(0).abs()
    norms = estimate.abs().square().sum(0).sqrt() * truth.abs().square().sum(0).sqrt()
    return float((inner / norms)[mask].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--brainweb", default="../shared/data/brainweb")
    parser.add_argument("--n-samples", type=int, default=8)
    args = parser.parse_args()
    model, _ = load_model(args.checkpoint)
    config = SimulationConfig(size=96, anatomy="brainweb", brainweb_dir=args.brainweb)
    dataset = SimulatedDataset(config, "test", args.n_samples, seed=2026)
    estimates = {
        "common lines": ("common", False),
        "union of lines": ("union", False),
        "union of lines, phase aligned": ("union", True),
    }
    errors: dict[str, list[float]] = {"true maps": []} | {name: [] for name in estimates}
    correlations: dict[str, list[float]] = {name: [] for name in estimates}
    for i in range(len(dataset)):
        sample = dataset[i]
        kspace, mask = sample["kspace"][None], sample["mask"][None]
        brain = sample["brain_mask"]
        true_t1 = 1 / sample["params"][2][brain]
        paths = {"true maps": (sample["coil_maps"][None], kspace)}
        for name, (lines, aligned) in estimates.items():
            calibration = calibration_images(kspace, mask, lines=lines)
            maps = walsh_maps(calibration)
            maps = align_phase(maps, calibration) if aligned else maps
            scale = intensity_scale((maps.conj() * calibration).sum(1).abs())
            paths[name] = (maps, kspace / scale)
            correlations[name].append(correlation(maps[0], sample["coil_maps"], brain))
        for name, (maps, data) in paths.items():
            with torch.no_grad():
                r1 = model(data, maps, mask).parameters[-1][0, -1]
            t1 = t1_from_r1(r1)[brain]
            errors[name].append(float((t1 - true_t1).abs().median()))
    print(f"{machine()}; checkpoint {args.checkpoint}; {len(dataset)} BrainWeb test slices")
    print("| coil maps | median abs T1 error in the brain [s] | correlation with the true maps |")
    print("|---|---|---|")
    for name, values in errors.items():
        corr = statistics.mean(correlations[name]) if name in correlations else 1.0
        print(f"| {name} | {statistics.mean(values):.3f} | {corr:.4f} |")


if __name__ == "__main__":
    main()
