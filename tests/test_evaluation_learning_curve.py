import csv
import math

import pytest

from pinqi.cli import main
from pinqi.config import ExperimentConfig
from pinqi.evaluation.learning_curve import fit_power_law, validation_curve


def test_fit_recovers_a_known_power_law():
    samples = [400, 800, 1600, 3200, 6400]
    errors = [0.5 * s**-0.25 for s in samples]
    trend = fit_power_law(samples, errors)
    assert trend.exponent == pytest.approx(0.25, rel=1e-9)
    assert trend.a == pytest.approx(0.5, rel=1e-9)
    assert trend(12800) == pytest.approx(0.5 * 12800**-0.25, rel=1e-9)


def test_fit_refuses_too_few_or_non_positive_points():
    with pytest.raises(ValueError, match=">= 2"):
        fit_power_law([100], [0.2])
    with pytest.raises(ValueError, match="positive"):
        fit_power_law([100, 200], [0.2, 0.0])


def write_run(folder, steps_and_errors, batch_size=4, pretrain_epochs=1, samples_per_epoch=80):
    folder.mkdir(parents=True)
    config = ExperimentConfig().with_overrides(
        [
            f"optim.batch_size={batch_size}",
            f"optim.pretrain_epochs={pretrain_epochs}",
            f"optim.samples_per_epoch={samples_per_epoch}",
        ]
    )
    config.to_yaml(folder / "config.yaml")
    (folder / "logs").mkdir()
    with open(folder / "logs" / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["step", "train_loss", "val_t1_nrmse"])
        writer.writeheader()
        for step in range(max(s for s, _ in steps_and_errors) + 1):
            writer.writerow({"step": step, "train_loss": 0.1, "val_t1_nrmse": ""})
        for step, error in steps_and_errors:
            writer.writerow({"step": step, "train_loss": "", "val_t1_nrmse": error})


def test_validation_curve_counts_samples_by_batch(tmp_path):
    write_run(tmp_path / "run", [(9, 0.4), (19, 0.3)], batch_size=4)
    samples, errors = validation_curve(tmp_path / "run" / "logs" / "metrics.csv", 4)
    assert samples == [40, 80] and errors == [0.4, 0.3]
    with pytest.raises(ValueError, match="val_t1_nrmse_csf"):
        validation_curve(tmp_path / "run" / "logs" / "metrics.csv", 4, "val_t1_nrmse_csf")


def test_cli_fits_after_the_pretraining_and_predicts(tmp_path, capsys):
    # pretraining: 80 samples (20 steps of 4); its validation (far above the trend) is left out
    law = [(step, 0.8 * ((step + 1) * 4) ** -0.3) for step in (39, 79, 159, 319)]
    write_run(tmp_path / "run", [(19, 0.9), *law])
    out = tmp_path / "curve"
    main(["learning-curve", "--run", f"long={tmp_path / 'run'}", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "trend ~ samples^-0.300" in printed
    expected_2x = 0.8 * (2 * 1280) ** -0.3
    assert f"{expected_2x:.4f} at 2x" in printed
    assert (out / "learning_curve.png").is_file()
    rows = list(csv.DictReader(open(out / "learning_curve.csv")))
    assert [int(r["samples"]) for r in rows] == [80, 160, 320, 640, 1280]
    assert math.isclose(float(rows[0]["value"]), 0.9)


def test_cli_names_a_folder_without_a_log(tmp_path):
    with pytest.raises(SystemExit, match=r"no logs/metrics\.csv"):
        main(["learning-curve", "--run", str(tmp_path), "--out", str(tmp_path / "o")])


def test_a_signed_column_is_listed_without_a_trend(tmp_path, capsys):
    write_run(tmp_path / "run", [(39, -0.5), (79, -0.4), (159, -0.3)])
    out = tmp_path / "curve"
    main(["learning-curve", "--run", str(tmp_path / "run"), "--out", str(out)])
    assert "trend ~ samples^-nan" in capsys.readouterr().out
