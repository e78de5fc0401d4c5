"""How often the data-residual check warns, with the fixed and with the calibrated limit.

Reads the per-slice k-space residuals that ``pinqi evaluate`` wrote (metrics.csv of each
set, PINQI and CG-SENSE + fit rows) and calibrates each model's limit on its validation
data (:func:`pinqi.evaluation.calibration.calibrate_residual_check`). Prints a Markdown
table for docs/results.md.

    python benchmarks/residual_check_table.py
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from pinqi.evaluation.calibration import calibrate_residual_check
from pinqi.evaluation.consistency import RESIDUAL_RATIO_LIMIT
from pinqi.training.checkpoints import load_model

RESULTS = Path("docs/results")
MODELS = {
    "phantom (shipped)": "default",
    "BrainWeb": "runs/cpu-brainweb/checkpoints/last.ckpt",
}
#: (model, set) -> metrics.csv of pinqi evaluate
PHANTOM, BRAINWEB = "phantom (shipped)", "BrainWeb"
SETS = {
    (PHANTOM, "phantom test, 32 slices (in distribution)"): (
        "residual-check/phantom-model-test-cpu/metrics.csv"
    ),
    (PHANTOM, "BrainWeb test, 32 slices"): "residual-check/phantom-model-test-bw96/metrics.csv",
    (PHANTOM, "uniform phantoms T1 0.25 s, 16"): "ood/uniform_t1_0.25_cpu-phantom-model.csv",
    (PHANTOM, "uniform phantoms T1 3 s, 16"): "ood/uniform_t1_3_cpu-phantom-model.csv",
    (PHANTOM, "BrainWeb T1 x 1.3, 16"): "ood/bw96_t1x1.3_cpu-phantom-model.csv",
    (BRAINWEB, "BrainWeb test, 32 slices (in distribution)"): "cpu-brainweb-model/metrics.csv",
    (BRAINWEB, "uniform phantoms T1 0.25 s, 16"): "ood/uniform_t1_0.25/metrics.csv",
    (BRAINWEB, "uniform phantoms T1 3 s, 16"): "ood/uniform_t1_3/metrics.csv",
    (BRAINWEB, "BrainWeb T1 x 1.3, 16"): "ood/bw96_t1x1.3/metrics.csv",
}


def ratios(path: Path) -> torch.Tensor:
    rows = list(csv.DictReader(open(path)))
    value = {(r["method"], r["sample"]): float(r["kspace_residual"]) for r in rows}
    samples = sorted({r["sample"] for r in rows}, key=int)
    return torch.tensor([value["PINQI", s] / value["CG-SENSE + fit", s] for s in samples])


def main() -> None:
    torch.set_num_threads(1)
    limits = {}
    for name, checkpoint in MODELS.items():
        model, config = load_model(checkpoint)
        limits[name] = calibrate_residual_check(model, config, 32, progress=False)
        print(name, limits[name])
    print("| model | data | ratio median (max) | warned at 1.5 | calibrated limit | warned |")
    print("|---|---|---|---|---|---|")
    for (name, label), file in SETS.items():
        ratio = ratios(RESULTS / file)
        limit = limits[name]["limit"]
        fixed = int((ratio > RESIDUAL_RATIO_LIMIT).sum())
        calibrated = int((ratio > limit).sum())
        print(
            f"| {name} | {label} | {float(ratio.median()):.2f} ({float(ratio.max()):.2f}) | "
            f"{fixed}/{len(ratio)} | {limit:.2f} | {calibrated}/{len(ratio)} |"
        )


if __name__ == "__main__":
    main()
