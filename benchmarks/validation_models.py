"""Validation T1 nRMSE of models on the brain-only validation slices of a preset.

The 16 validation slices that ``pinqi train`` validates on (``configs/cpu-brainweb.yaml``
by default, without its coverage options, seed of the preset), for each model given
(checkpoint, exported file or shipped name) and for ``baseline`` (CG-SENSE + fit); with
``--lambda-p`` values, each model is also run with its lambda_p replaced by each value (the
sweep that chose the preset's starting lambda_p). Never uses the test split.
Usage: ``python benchmarks/validation_models.py runs/x/checkpoints/last.ckpt default baseline
[--config configs/cpu-brainweb.yaml] [--lambda-p 0.1 0.3 1]``.
"""

from __future__ import annotations

import argparse

import torch

from pinqi.config import ExperimentConfig
from pinqi.evaluation.baseline import cg_sense_fit
from pinqi.metrics import parameter_metrics
from pinqi.nets.pinqi import inverse_softplus
from pinqi.training.checkpoints import load_model
from pinqi.training.module import SimulatedDataModule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--config", default="configs/cpu-brainweb.yaml")
    parser.add_argument("--lambda-p", type=float, nargs="*", default=[])
    args = parser.parse_args()
    data = SimulatedDataModule(ExperimentConfig.from_yaml(args.config))
    data.setup("fit")
    names = ("kspace", "coil_maps", "mask", "params", "brain_mask")
    batch = {k: torch.stack([data.val_set[i][k] for i in range(len(data.val_set))]) for k in names}
    inputs = (batch["kspace"], batch["coil_maps"], batch["mask"])

    def report(label: str, params: torch.Tensor) -> None:
        metrics = parameter_metrics(params, batch["params"], batch["brain_mask"])
        print(f"{label}: validation T1 nRMSE {float(metrics['t1_nrmse'].mean()):.4f}")

    for name in args.models:
        with torch.no_grad():
            if name == "baseline":
                model, _ = load_model("default")
                report(name, cg_sense_fit(model.signal_model, *inputs))
                continue
            model, _ = load_model(name)
            report(name, model(*inputs).parameters[-1])
            for value in args.lambda_p:
                model.raw_lambda_p.fill_(inverse_softplus(value))
                report(f"{name} at lambda_p = {value:g}", model(*inputs).parameters[-1])


if __name__ == "__main__":
    main()
