"""The data-residual check's limit, calibrated per model on its validation data."""

import warnings

import pytest
import torch
import yaml

from pinqi.cli import main
from pinqi.config import ExperimentConfig
from pinqi.evaluation.calibration import MARGIN, calibrate_residual_check
from pinqi.evaluation.consistency import (
    RESIDUAL_RATIO_LIMIT,
    OutOfDistributionWarning,
    residual_ratio_limit,
)
from pinqi.training.checkpoints import default_model_path, load_model
from pinqi.training.run import train

TINY = {
    "name": "tiny",
    "data": {"size": 16, "n_coils": 4, "acceleration": 2.0},
    "model": {
        "iterations": 1,
        "image_features": [8, 16],
        "parameter_features": [8, 16],
        "cg_iterations": 3,
        "fit_iterations": 3,
    },
    "optim": {
        "batch_size": 2,
        "max_epochs": 1,
        "samples_per_epoch": 2,
        "val_samples": 2,
        "warmup_steps": 1,
        "num_workers": 0,
        "accelerator": "cpu",
        "devices": 1,
        "pretrain_epochs": 0,
    },
}


def test_export_stores_the_calibrated_limit(tmp_path):
    last = train(ExperimentConfig.from_dict(TINY), tmp_path / "run")
    assert residual_ratio_limit(last) == RESIDUAL_RATIO_LIMIT  # no card: the fixed default
    out = tmp_path / "model.pt"
    main(["export", "--checkpoint", str(last), "--out", str(out), "--calibration-samples", "3"])
    check = torch.load(out, weights_only=False)["card"]["residual_check"]
    assert check["n_samples"] == 3 and check["median"] <= check["max"]
    assert check["limit"] == pytest.approx(max(1.0, MARGIN * check["max"]))
    assert residual_ratio_limit(out) == pytest.approx(check["limit"])
    # the same numbers from Python: the validation slices are fixed by the config's seed
    model, config = load_model(out)
    again = calibrate_residual_check(model, config, 3, progress=False)
    assert again["max"] == pytest.approx(check["max"], rel=1e-5)


@pytest.mark.parametrize("limit, warned", [(1e-3, True), (1e3, False)])
def test_reconstruct_warns_against_the_models_own_limit(tmp_path, limit, warned):
    state = torch.load(default_model_path(), weights_only=False)
    state["card"] = {**state["card"], "residual_check": {"limit": limit}}
    torch.save(state, tmp_path / "model.pt")
    main(["simulate", "--out", str(tmp_path / "d.h5"), "--n-samples", "1", "--size", "96",
          "--seed", "3", "--quiet"])  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main(["reconstruct", "--checkpoint", str(tmp_path / "model.pt"), "--data",
              str(tmp_path / "d.h5"), "--out", str(tmp_path / "r")])  # fmt: skip
    ours = [w for w in caught if issubclass(w.category, OutOfDistributionWarning)]
    assert bool(ours) == warned
    if warned:
        assert f"> {limit:g}" in str(ours[0].message)


def test_the_shipped_model_is_calibrated():
    card = yaml.safe_load(default_model_path().with_suffix(".json").read_text())
    check = card["residual_check"]
    assert check["limit"] == pytest.approx(max(1.0, MARGIN * check["max"]))
    assert residual_ratio_limit("default") == pytest.approx(check["limit"])
