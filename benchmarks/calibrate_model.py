"""Add the calibrated data-residual limit to an exported model file's card (and its JSON).

``pinqi export`` calibrates new exports; this brings a model exported before that (such as
the shipped ``pinqi-cpu.pt``) up to date without retraining:

    python benchmarks/calibrate_model.py src/pinqi/weights/pinqi-cpu.pt
    python benchmarks/calibrate_model.py src/pinqi/weights/pinqi-gpu-brainweb.pt \
        --brainweb ../shared/data/brainweb   # where this machine keeps BrainWeb
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

from pinqi.evaluation.calibration import calibrate_residual_check
from pinqi.training.checkpoints import load_model, package_commit, read_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="exported model file (.pt)")
    parser.add_argument("--samples", type=int, default=64, help="calibration slices")
    parser.add_argument("--brainweb", help="BrainWeb folder, if not the model's own")
    parser.add_argument(
        "--splits", default="val", help="splits the slices are drawn from: val or val,train"
    )
    args = parser.parse_args()
    state = read_checkpoint(args.model)
    if "card" not in state:
        raise SystemExit(f"{args.model} is not an exported model (no card)")
    model, config = load_model(args.model)
    if args.brainweb:
        config = replace(config, data=replace(config.data, brainweb_dir=args.brainweb))
    splits = tuple(args.splits.split(","))
    check = calibrate_residual_check(model, config, args.samples, splits=splits)
    check["commit"] = package_commit() or "unknown"
    state["card"]["residual_check"] = check
    torch.save(state, args.model)
    args.model.with_suffix(".json").write_text(json.dumps(state["card"], indent=2) + "\n")
    print(json.dumps(check, indent=2))


if __name__ == "__main__":
    main()
