"""The pilot tables of docs/results.md (issue 17): validation curves and per-tissue errors.

    python docs/results/brainweb-long/pilots/tables.py runs/pilots

Reads each pilot's ``logs/metrics.csv`` (validation T1 nRMSE at every validation, 16 slices)
and its ``pinqi evaluate`` on the 32 validation slices (``eval/<pilot>/metrics.csv``).
"""

import csv
import math
import sys
from pathlib import Path

COLUMNS = [
    "t1_nrmse",
    "t1_nrmse_short",
    "t1_median_rel",
    "t1_nrmse_csf",
    "t1_bias_csf",
    "t1_nrmse_gm",
    "t1_bias_gm",
    "t1_nrmse_wm",
    "t1_bias_wm",
]


def curve(run: Path) -> list[tuple[int, float]]:
    """(steps done, validation T1 nRMSE) of a pilot's training log."""
    rows = list(csv.DictReader(open(run / "logs" / "metrics.csv")))
    return [(int(r["step"]) + 1, float(r["val_t1_nrmse"])) for r in rows if r.get("val_t1_nrmse")]


def means(path: Path, method: str) -> dict[str, float]:
    """Mean of every column of COLUMNS over the rows of ``method`` (NaN rows left out)."""
    rows = [r for r in csv.DictReader(open(path)) if r["method"] == method]
    out = {}
    for c in COLUMNS:
        values = [float(r[c]) for r in rows if not math.isnan(float(r[c]))]
        out[c] = sum(values) / len(values)
    return out


def main(root: Path) -> None:
    """Print both tables for the pilots under ``root``."""
    pilots = sorted(p.name for p in root.iterdir() if (p / "logs" / "metrics.csv").is_file())
    print("| pilot | validation T1 nRMSE (16 slices) at steps |")
    print("|---|---|")
    for name in pilots:
        points = ", ".join(f"{v:.3f} ({s})" for s, v in curve(root / name))
        print(f"| {name} | {points} |")
    print()
    print("| model | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for name in ["default", *pilots]:
        path = root / "eval" / name / "metrics.csv"
        if not path.is_file():
            continue
        methods = ["PINQI", "CG-SENSE + fit"] if name == "default" else ["PINQI"]
        for method in methods:
            m = means(path, method)
            label = name if method == "PINQI" else method
            cells = " | ".join(f"{m[c]:+.3f}" if "bias" in c else f"{m[c]:.3f}" for c in COLUMNS)
            print(f"| {label} | {cells} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
