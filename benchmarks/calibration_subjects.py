"""Does the data check's false-alarm rate hold for subjects it was not calibrated on?

The data check's limits (``pinqi.evaluation.calibration``) are conformal quantiles over
calibration slices, which guarantee the false-alarm rate for new slices *of the same
distribution*. Slices of one subject are alike, so a new subject is a different matter. This
script measures it on the calibration data alone (the validation subject and the 14 training
subjects; never the test split): the statistics of a model on the slices that
``calibrate_residual_check`` draws, then, leaving one subject out at a time, the limits
calibrated on the other subjects' slices and the share of the left-out subject's slices they
flag. Pooled over subjects, that share estimates the false-alarm rate on a new subject.

    python benchmarks/calibration_subjects.py default --out docs/results/calibration-subjects
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import replace
from pathlib import Path

import torch

from pinqi.evaluation.calibration import (
    FALSE_ALARM_RATE,
    calibration_slices,
    residual_check_from_ratios,
)
from pinqi.training.checkpoints import load_model

#: The splits of the shipped cards' calibration.
SPLITS = ("val", "train")


def slice_statistics(model, config, n_samples: int) -> list[dict]:
    """Per calibration slice: split, subject, noise level, residual ratio, T1 disagreement.

    The slices of ``calibrate_residual_check(..., splits=("val", "train"))``
    (:func:`~pinqi.evaluation.calibration.calibration_slices`).
    """
    rows = []
    for split, dataset, result in calibration_slices(model, config, n_samples, splits=SPLITS):
        for i in range(len(dataset)):
            rows.append(
                {
                    "split": split,
                    "subject": int(dataset[i]["subject"]),
                    "noise_sigma": float(result.noise_sigma[i]),
                    "ratio": float(result.residual_ratio[i]),
                    "t1_disagreement": float(result.t1_disagreement[i]),
                }
            )
    return rows


def leave_one_subject_out(rows: list[dict], false_alarm: float) -> list[dict]:
    """Per subject: its slices, and how many the other subjects' limits flag."""
    subjects = sorted({r["subject"] for r in rows})
    if len(subjects) < 2 or -1 in subjects:
        raise SystemExit("leaving subjects out needs BrainWeb slices of at least 2 subjects")
    out = []
    for subject in subjects:
        rest = [r for r in rows if r["subject"] != subject]
        held = [r for r in rows if r["subject"] == subject]
        check = residual_check_from_ratios(
            *(torch.tensor([r[k] for r in rest]) for k in ("ratio", "noise_sigma")),
            false_alarm,
            torch.tensor([r["t1_disagreement"] for r in rest]),
        )
        flags = check.flags(
            *(torch.tensor([r[k] for r in held]) for k in ("ratio", "t1_disagreement")),
            torch.tensor([r["noise_sigma"] for r in held]),
        )
        out.append({"subject": subject, "slices": len(held), "flagged": int(flags.sum())})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="shipped model name or exported model file")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--brainweb", help="BrainWeb folder, if not the model's own")
    parser.add_argument("--false-alarm", type=float, default=FALSE_ALARM_RATE)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    model, config = load_model(args.model)
    if args.brainweb:
        config = replace(config, data=replace(config.data, brainweb_dir=args.brainweb))
    args.out.mkdir(parents=True, exist_ok=True)
    name = Path(args.model).stem
    rows = slice_statistics(model, config, args.samples)
    with open(args.out / f"{name}-slices.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    per_subject = leave_one_subject_out(rows, args.false_alarm)
    flagged = sum(s["flagged"] for s in per_subject)
    summary = {
        "model": args.model,
        "slices": len(rows),
        "subjects": len(per_subject),
        "false_alarm": args.false_alarm,
        "left_out_flagged": flagged,
        "left_out_rate": flagged / len(rows),
        "per_subject": per_subject,
    }
    (args.out / f"{name}-summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "per_subject"}, indent=2))
    for s in per_subject:
        print(f"subject {s['subject']:2d}: {s['flagged']:2d} of {s['slices']:3d} flagged")


if __name__ == "__main__":
    main()
