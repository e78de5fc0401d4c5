"""The data-residual check's limit, calibrated per model on its validation data."""

import warnings

import h5py
import pytest
import torch
import yaml

from pinqi.cli import main
from pinqi.config import ExperimentConfig
from pinqi.evaluation.calibration import (
    calibrate_residual_check,
    conformal_limit,
    residual_check_from_ratios,
)
from pinqi.evaluation.consistency import (
    RESIDUAL_RATIO_LIMIT,
    OutOfDistributionWarning,
    ResidualCheck,
    load_residual_check,
    residual_ratio_limit,
)
from pinqi.training.checkpoints import default_model_path, load_model, shipped_model_path
from pinqi.training.clock import training_clock
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
    main(
        [
            *["export", "--checkpoint", str(last), "--out", str(out), "--calibration-samples", "3"],
        ]
    )
    card = torch.load(out, weights_only=False)["card"]
    # the budget on the card: steps x batch size, and the training clock of the checkpoint
    state = torch.load(last, weights_only=False)
    assert card["training_samples"] == state["global_step"] * TINY["optim"]["batch_size"] > 0
    clock = training_clock(last)
    assert card["training_minutes"] == round(clock["seconds"] / 60, 1)
    assert card["devices"] == clock["devices"] == [f"CPU ({torch.get_num_threads()} threads)"]
    check = card["residual_check"]
    assert check["n_samples"] == 3 and check["median"] <= check["max"]
    # 3 slices: one noise band, and too few for the rank, so the largest combined score:
    # neither limit below its largest statistic
    assert len(check["limits"]) == len(check["t1_disagreement_limits"]) == 1
    assert check["limits"][0] >= max(1.0, check["max"]) * (1 - 1e-9)
    assert check["t1_disagreement_limits"][0] >= check["t1_disagreement_median"] * (1 - 1e-9)
    assert check["noise_edges"] == [] and check["false_alarm"] == 0.05
    assert residual_ratio_limit(out) == pytest.approx(check["limit"])
    stored = load_residual_check(out)
    assert stored.limits == pytest.approx(tuple(check["limits"]))
    assert stored.disagreement_limits == pytest.approx(tuple(check["t1_disagreement_limits"]))
    # the same numbers from Python: the validation slices are fixed by the config's seed
    model, config = load_model(out)
    again = calibrate_residual_check(model, config, 3, progress=False)
    assert again["max"] == pytest.approx(check["max"], rel=1e-5)


def test_calibration_draws_from_the_chosen_splits(tmp_path):
    last = train(ExperimentConfig.from_dict(TINY), tmp_path / "run")
    out = tmp_path / "model.pt"
    main(["export", "--checkpoint", str(last), "--out", str(out), "--calibration-samples", "4",
          "--calibration-splits", "val,train"])  # fmt: skip
    check = torch.load(out, weights_only=False)["card"]["residual_check"]
    assert check["n_samples"] == 4 and check["data"].startswith("2 val + 2 train slices")
    # the pooled statistics are those of each split's own draws
    model, config = load_model(out)
    alone = [
        calibrate_residual_check(model, config, 2, progress=False, splits=(split,))
        for split in ("val", "train")
    ]
    assert check["max"] == pytest.approx(max(a["max"] for a in alone), rel=1e-5)
    assert alone[0]["max"] != pytest.approx(alone[1]["max"], rel=1e-5)  # other slices
    for splits in ((), ("test",), ("val", "val")):
        with pytest.raises(ValueError, match="splits must be distinct names"):
            calibrate_residual_check(model, config, 2, progress=False, splits=splits)
    with pytest.raises(ValueError, match="at least one per split"):
        calibrate_residual_check(model, config, 1, progress=False, splits=("val", "train"))


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
        assert f"limit is {limit:.2f}" in str(ours[0].message)
        assert "\n" not in str(ours[0].message)
    with h5py.File(tmp_path / "r" / "params.h5") as f:
        assert bool(f["out_of_distribution"][0]) == warned
        assert f["residual_limit"][0] == pytest.approx(limit)
        assert f["residual_excess"].shape == (1, 96, 96)
        assert 0 < f["noise_sigma_estimate"][0] < 0.1
    summary = (tmp_path / "r" / "summary.md").read_text()
    assert ("**yes**" in summary) == warned


@pytest.mark.parametrize("name", ["default", "gpu-brainweb", "cpu-brainweb", "cpu-phantom"])
def test_the_shipped_models_are_calibrated_per_noise_band(name):
    path = shipped_model_path(name)
    check = yaml.safe_load(path.with_suffix(".json").read_text())["residual_check"]
    assert check["false_alarm"] == 0.05 and check["n_samples"] >= 64
    assert len(check["limits"]) == len(check["noise_edges"]) + 1 >= 2
    assert check["limit"] == pytest.approx(max(check["limits"]))
    assert load_residual_check(name).limits == pytest.approx(tuple(check["limits"]))


def test_conformal_limit_is_the_rank_for_the_false_alarm_rate():
    values = torch.arange(1.0, 100.0).flip(0)  # 99 values, order does not matter
    assert conformal_limit(values, 0.05) == 95.0  # ceil(100 * 0.95) = 95th smallest
    assert conformal_limit(values[:10], 0.05) == 99.0  # too few: the largest
    with pytest.raises(ValueError, match="false_alarm"):
        conformal_limit(values, 1.5)


def test_calibrated_limits_keep_the_false_alarm_rate():
    """Calibrated on 64 draws, fresh draws of the same distribution exceed it <= 5 %."""
    g = torch.Generator().manual_seed(0)
    exceed = []
    for _ in range(400):
        noise = torch.rand(64, generator=g) * 0.04
        ratio = 1 + torch.rand(64, generator=g) * (0.5 - 10 * noise)  # spreads at low noise
        check = residual_check_from_ratios(ratio, noise)
        fresh_noise = torch.rand(64, generator=g) * 0.04
        fresh = 1 + torch.rand(64, generator=g) * (0.5 - 10 * fresh_noise)
        exceed.append(float((fresh.double() > check.limit(fresh_noise)).double().mean()))
    assert len(check.limits) == 2 and check.limits[0] > check.limits[1]
    assert sum(exceed) / len(exceed) <= 0.05 + 0.01


def test_residual_check_bands_and_older_cards():
    check = ResidualCheck((1.4, 1.1), (0.02,), 0.05)
    limit = check.limit(torch.tensor([0.001, 0.0199, 0.03]))
    assert limit.tolist() == [1.4, 1.4, 1.1]
    assert ResidualCheck.from_card({"limit": 1.28}).limits == (1.28,)
    assert ResidualCheck.from_card({}).limits == (RESIDUAL_RATIO_LIMIT,)
    with pytest.raises(ValueError, match="one limit more"):
        ResidualCheck((1.0,), (0.1,))


def test_two_statistics_calibrated_together_keep_the_false_alarm_rate():
    """Limits of the ratio and of the T1 disagreement from one score: <= 5 % for the pair."""
    g = torch.Generator().manual_seed(1)
    exceed, exceed_ratio_alone = [], []

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        noise = torch.rand(n, generator=g) * 0.04
        ratio = 1 + torch.rand(n, generator=g) * (0.5 - 10 * noise)
        disagreement = 0.15 + 0.05 * torch.randn(n, generator=g).abs()
        return ratio, disagreement, noise

    for _ in range(400):
        ratio, disagreement, noise = draw(64)
        check = residual_check_from_ratios(ratio, noise, disagreement=disagreement)
        fresh_ratio, fresh_disagreement, fresh_noise = draw(64)
        flags = check.flags(fresh_ratio, fresh_disagreement, fresh_noise)
        exceed.append(float(flags.double().mean()))
        alone = fresh_ratio.double() > check.limit(fresh_noise)
        exceed_ratio_alone.append(float(alone.double().mean()))
    assert len(check.disagreement_limits) == len(check.limits) == 2
    assert sum(exceed) / len(exceed) <= 0.05 + 0.01
    # the pair shares the rate: each statistic alone flags fewer
    assert sum(exceed_ratio_alone) < sum(exceed)


def test_flags_use_either_statistic_and_nan_counts_as_above():
    check = ResidualCheck((1.4, 1.1), (0.02,), 0.05, (0.3, 0.25))
    noise = torch.tensor([0.01, 0.03, 0.03, 0.03, 0.01])
    ratio = torch.tensor([1.3, 1.2, 1.0, float("nan"), 1.0])
    disagreement = torch.tensor([0.1, 0.1, 0.26, 0.1, 0.26])
    assert check.flags(ratio, disagreement, noise).tolist() == [False, True, True, True, False]
    # the warning names the same slices, and points at the caller
    with pytest.warns(OutOfDistributionWarning, match="at 3 of 5 slices") as caught:
        assert check.warn(ratio, disagreement, noise) == [1, 2, 3]
    assert caught[0].filename == __file__
    assert check.disagreement_limit(noise).tolist() == [0.3, 0.25, 0.25, 0.25, 0.3]
    ratio_only = ResidualCheck((1.4, 1.1), (0.02,))
    assert torch.isinf(ratio_only.disagreement_limit(noise)).all()
    assert ResidualCheck.from_card(
        {"limits": [1.4, 1.1], "noise_edges": [0.02], "t1_disagreement_limits": [0.3, 0.25]}
    ) == ResidualCheck((1.4, 1.1), (0.02,), None, (0.3, 0.25))
    with pytest.raises(ValueError, match="one T1 disagreement limit per noise band"):
        ResidualCheck((1.4, 1.1), (0.02,), 0.05, (0.3,))
